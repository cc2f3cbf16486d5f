use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::platform::interrupts::IrqModeError;
use crate::platform::sys::{BarMapping, MsiMessage};
use crate::platform::testing::{FakePcid, FakePlatform, TestEvents, TestScheme};
use pcid_config::caps::msix_entry;
use pcid_config::protocol::{
    LegacyInterruptLine, MsixInfo, PciAddress, PciFeature, PciFunction, PcidServerResponseError,
};

const BAR0_SIZE: u64 = 0x4000;

fn simgpu_pcid() -> FakePcid {
    let mut bars = [PciBar::None; 6];
    bars[0] = PciBar::Memory64 {
        addr: 0xfe00_0000,
        size: BAR0_SIZE,
    };
    bars[2] = PciBar::Memory64 {
        addr: 0x8_0000_0000,
        size: 0x1_0000,
    };
    FakePcid {
        args: SubdriverArguments {
            func: PciFunction {
                addr: PciAddress {
                    segment: 0,
                    bus: 0,
                    device: 4,
                    function: 0,
                },
                bars,
                rom: None,
                legacy_interrupt_line: Some(LegacyInterruptLine {
                    irq: 11,
                    phandled: None,
                }),
                full_device_id: pcid_config::SIMGPU_ID,
            },
        },
        features: vec![PciFeature::Msi, PciFeature::MsiX],
        msix: MsixInfo {
            table_bar: 0,
            table_offset: 0x2000,
            table_size: 4,
            pba_bar: 0,
            pba_offset: 0x3000,
        },
        refuse_all: false,
        read_chunk: 1,
    }
}

fn platform(pcid: FakePcid, env: &[(&'static str, &str)]) -> FakePlatform {
    FakePlatform {
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        pcid: Rc::new(pcid),
        log: Rc::new(RefCell::new(Vec::new())),
        fail: None,
    }
}

const SPAWNED: &[(&str, &str)] = &[("PCID_CLIENT_CHANNEL", "5"), ("INIT_NOTIFY", "7")];

type Captured = Rc<RefCell<Option<(Vec<u32>, InterruptMode, u64)>>>;

/// Starts with a factory that records what it was given (BAR0 contents, irq mode, DMA phys).
fn start_recording(p: &mut FakePlatform) -> (Result<(), StartupError>, Captured) {
    let seen: Captured = Rc::new(RefCell::new(None));
    let sink = seen.clone();
    let log = p.log.clone();
    let result = start(p, move |mut res: DeviceResources<FakePlatform>| {
        log.borrow_mut().push("build".into());
        let dma = crate::platform::sys::DmaMemory::alloc_zeroed(&mut res.dma, 100)
            .map_err(|e| e.to_string())?;
        *sink.borrow_mut() = Some((res.registers.dwords.clone(), res.interrupt, dma.phys.0));
        assert!(res.vram.as_ref().is_some_and(|v| v.len() == 0x1_0000));
        Ok((TestScheme::default(), TestEvents::default()))
    });
    (result.map(drop), seen)
}

#[test]
fn startup_runs_every_step_in_platform_order() {
    let mut p = platform(simgpu_pcid(), SPAWNED);
    let (result, seen) = start_recording(&mut p);
    result.expect("startup");
    assert_eq!(
        p.calls(),
        [
            "open_channel 5",
            "pcid RequestConfig",
            "map_bar 0 0x4000 Uncacheable",
            "map_bar 2 0x10000 WriteCombining",
            "pcid RequestFeatures",
            "pcid FeatureInfo(MsiX)",
            "pcid EnableFeature(MsiX)",
            "alloc_msi_vector",
            "pcid SetFeatureInfo(MsiX { function_mask: Some(false) })",
            "open_dma",
            "create_socket",
            "create_event_queue socket=3 irq=10",
            "build",
            "register gpu root=0",
            "setrens",
            "notify_ready 7",
        ]
    );
    let (bar0, mode, phys) = seen.borrow().clone().expect("factory ran");
    let message = MsiMessage {
        addr: 0xfee0_0000,
        data: 0x30,
    };
    assert_eq!(mode, InterruptMode::MsiX { message });
    assert_eq!(phys, 0x10_0000);
    // Entry 0 programmed and unmasked; entries 1..4 masked; nothing else touched.
    let dw = |off: usize| bar0[off / 4];
    let e0 = 0x2000;
    assert_eq!(dw(e0 + msix_entry::ADDR_LO), 0xfee0_0000);
    assert_eq!(dw(e0 + msix_entry::ADDR_HI), 0);
    assert_eq!(dw(e0 + msix_entry::DATA), 0x30);
    assert_eq!(dw(e0 + msix_entry::VECTOR_CONTROL), 0);
    for e in 1..4 {
        assert_eq!(
            dw(e0 + e * msix_entry::SIZE + msix_entry::VECTOR_CONTROL),
            msix_entry::MASKED
        );
        assert_eq!(
            dw(e0 + e * msix_entry::SIZE + msix_entry::DATA),
            0xdead_beef
        );
    }
    assert_eq!(dw(0x1ffc), 0xdead_beef);
    assert_eq!(dw(0x2040), 0xdead_beef);
}

#[test]
fn started_by_hand_without_init_notify_still_serves() {
    let mut p = platform(simgpu_pcid(), &[("PCID_CLIENT_CHANNEL", "5")]);
    let (result, _) = start_recording(&mut p);
    result.expect("startup");
    let calls = p.calls();
    assert_eq!(calls.last().map(String::as_str), Some("setrens"));
}

#[test]
fn without_pcid_channel_nothing_is_touched() {
    let mut p = platform(simgpu_pcid(), &[]);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(result, Err(StartupError::NoChannel)));
    assert!(p.calls().is_empty());
    let mut p = platform(simgpu_pcid(), &[("PCID_CLIENT_CHANNEL", "five")]);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(
        result,
        Err(StartupError::BadFdVar {
            var: "PCID_CLIENT_CHANNEL",
            ..
        })
    ));
}

#[test]
fn a_device_gpud_does_not_drive_is_refused_before_mapping() {
    let mut pcid = simgpu_pcid();
    pcid.args.func.full_device_id = pcid_config::FullDeviceId {
        vendor_id: 0x1234,
        device_id: 0x1111,
        class: 3,
        subclass: 0,
        interface: 0,
        revision: 2,
    };
    let mut p = platform(pcid, SPAWNED);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(
        result,
        Err(StartupError::Unsupported {
            vendor: 0x1234,
            device: 0x1111,
            ..
        })
    ));
    assert_eq!(p.calls(), ["open_channel 5", "pcid RequestConfig"]);
}

#[test]
fn msix_table_outside_bar0_falls_back_to_msi() {
    let mut pcid = simgpu_pcid();
    pcid.msix.table_offset = 0x3ff0; // 4 entries do not fit in 0x4000 bytes
    let mut p = platform(pcid, SPAWNED);
    let (result, seen) = start_recording(&mut p);
    result.expect("startup");
    let (bar0, mode, _) = seen.borrow().clone().expect("factory ran");
    assert!(matches!(mode, InterruptMode::Msi { .. }));
    assert!(
        bar0.iter().all(|&d| d == 0xdead_beef),
        "no MMIO write outside the table"
    );
    let calls = p.calls();
    let msi: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.contains("Msi("))
        .collect();
    assert_eq!(msi.len(), 1, "{calls:?}");
    assert!(calls.iter().any(|c| c == "pcid EnableFeature(Msi)"));
    assert!(!calls.iter().any(|c| c == "pcid EnableFeature(MsiX)"));
}

#[test]
fn without_msi_the_legacy_line_is_used_and_fallbacks_are_reported() {
    let mut pcid = simgpu_pcid();
    pcid.features.clear();
    let mut p = platform(pcid, SPAWNED);
    let service = start(&mut p, |_| {
        Ok((TestScheme::default(), TestEvents::default()))
    })
    .expect("startup");
    assert_eq!(
        service.irq_fallbacks,
        vec![
            ("MSI-X", IrqModeError::Unsupported),
            ("MSI", IrqModeError::Unsupported)
        ]
    );
    assert!(p.calls().iter().any(|c| c == "open_legacy_irq 11"));
    assert!(p
        .calls()
        .iter()
        .any(|c| c == "create_event_queue socket=3 irq=11"));
}

#[test]
fn no_interrupt_at_all_stops_before_the_socket_exists() {
    let mut pcid = simgpu_pcid();
    pcid.features.clear();
    pcid.args.func.legacy_interrupt_line = None;
    let mut p = platform(pcid, SPAWNED);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(result, Err(StartupError::Interrupt(_))));
    assert!(!p.calls().iter().any(|c| c == "create_socket"));
}

#[test]
fn a_failed_step_stops_everything_after_it() {
    for (fail, last) in [
        ("map_bar 2", "map_bar 2 0x10000 WriteCombining"),
        ("open_dma", "open_dma"),
        ("create_event_queue", "create_event_queue socket=3 irq=10"),
        ("register", "register gpu root=0"),
        ("setrens", "setrens"),
        ("notify_ready", "notify_ready 7"),
    ] {
        let mut p = platform(simgpu_pcid(), SPAWNED);
        p.fail = Some(fail);
        let (result, _) = start_recording(&mut p);
        assert!(result.is_err(), "{fail} must fail startup");
        assert_eq!(p.calls().last().map(String::as_str), Some(last), "{fail}");
    }
}

#[test]
fn pcid_errors_and_missing_bar0_are_typed() {
    let mut pcid = simgpu_pcid();
    pcid.refuse_all = true;
    let mut p = platform(pcid, SPAWNED);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(
        result,
        Err(StartupError::Pcid(PcidError::Refused {
            error: PcidServerResponseError::InvalidBitPattern,
            ..
        }))
    ));

    let mut pcid = simgpu_pcid();
    pcid.args.func.bars[0] = PciBar::Port(0xc000);
    let mut p = platform(pcid, SPAWNED);
    let (result, _) = start_recording(&mut p);
    assert!(matches!(
        result,
        Err(StartupError::BadBar {
            bir: 0,
            bar: PciBar::Port(0xc000)
        })
    ));
}

#[test]
fn started_service_serves_requests_and_interrupts() {
    use crate::platform::sys::WakeSource;
    use crate::platform::testing as t;
    let mut p = platform(simgpu_pcid(), SPAWNED);
    let mut service = start(&mut p, |_| {
        Ok((TestScheme::default(), TestEvents::default()))
    })
    .expect("startup");
    let l = &mut service.event_loop;
    l.socket_mut()
        .incoming
        .extend([t::openat(1, 0, "card0", 0), t::read(2, 1, 8, 0)]);
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(l.parked_len(), 1);
    // The interrupt arrives on the vector startup allocated; then the queue runs dry.
    service.queue.wakes.push_back(WakeSource::Irq);
    service.event_loop.irq_mut_for_tests().pending = Some(1);
    let end = service.event_loop.run(&mut service.queue);
    assert_eq!(
        end,
        Err(crate::platform::event_loop::LoopError::Wait(SysError::new(
            syscall::EPIPE
        )))
    );
    let l = &mut service.event_loop;
    let results: Vec<_> = l
        .socket_mut()
        .written
        .iter()
        .map(|c| (c.tag, t::result(c)))
        .collect();
    assert_eq!(results[..2], [(1, Ok(1)), (2, Ok(8))]);
    assert_eq!(l.parked_len(), 0);
    assert_eq!(l.stats().irqs_acked, 1);
}
