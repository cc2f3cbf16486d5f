//! `gpud pcid` on the host: the real startup sequence and [`build`] against a platform whose
//! BAR0 is an in-process simgpu's register file, whose BAR2 is its VRAM, whose DMA memory
//! sits at a high physical address, and whose IRQ handle becomes readable when the device
//! sends the MSI-X message the platform allocated. The event loop is then driven with real
//! scheme requests until a GPU store, waited for through a syncobj, is visible in a BO.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use gpu_scheme::uapi::flags::{
    EngineClass, Placement, QueuePriority, SyncobjWaitFlags, VmCreateFlags,
};
use gpu_scheme::uapi::request::{
    BindOp, BindOpKind, BoCreateRequest, BoId, ExecRequest, QueueId, Request, SyncKind, SyncSpec,
    SyncobjId, SyncobjPoint, SyncobjWaitRequest, Timeout, VmBindRequest, VmId,
};
use gpu_scheme::uapi::wire::{BoCreateArgs, ExecQueueCreateArgs, SyncobjCreateArgs, VmCreateArgs};
use gpu_scheme::uapi::{encode, read_args};
use pcid_config::protocol::{
    LegacyInterruptLine, MsixInfo, PciAddress, PciBar, PciFeature, PciFunction, SubdriverArguments,
};
use redox_scheme::scheme::SchemeSync;
use simgpu::{HeapMemory, InterruptSink, MemError, PhysMemory, SimGpu};
use syscall::schemev2::CqeOpcode;

use super::*;
use crate::hw::cmd::CommandStream;
use crate::hw::regs::IrqCauses;
use crate::platform::startup::{self, Service};
use crate::platform::sys::{
    BarMapping, DmaBuffer, DmaMemory, IrqHandle, MemoryType, MsiMessage, SysError, WakeSource,
};
use crate::platform::testing::{self as t, FakeChannel, FakePcid, FakeQueue, FakeSocket, Log};
use crate::types::{CpuVa, GpuVa, PhysAddr};

const VRAM: u64 = 8 << 20;
/// Bytes per DMA chunk the fake memory scheme hands out.
const CHUNK: u64 = 4 << 20;
/// Physical bases of the chunks (above 4 GiB; the first two adjacent, then a gap).
const CHUNK_BASES: [u64; 3] = [0x1_4000_0000, 0x1_4040_0000, 0x1_5000_0000];

const MESSAGE: MsiMessage = MsiMessage {
    addr: 0xfee0_3000,
    data: 0x45,
};
/// Loop iterations before a test gives up (each idle one sleeps a millisecond).
const MAX_WAKES: u32 = 20_000;

/// System memory as the device sees it: the chunks at their physical bases, nothing else.
struct OffsetMemory {
    chunks: Vec<(u64, Arc<HeapMemory>)>,
}

impl OffsetMemory {
    /// Runs `f` on the chunk holding `addr`, with the offset into it.
    fn on<T>(
        &self,
        addr: u64,
        f: impl FnOnce(&HeapMemory, u64) -> Result<T, MemError>,
    ) -> Result<T, MemError> {
        let hit = self
            .chunks
            .iter()
            .find(|(base, m)| (*base..base + m.size()).contains(&addr));
        match hit {
            Some((base, m)) => f(m, addr - base),
            None => Err(MemError::OutOfRange {
                addr,
                len: 1,
                size: self.size(),
            }),
        }
    }
}

impl PhysMemory for OffsetMemory {
    fn size(&self) -> u64 {
        let ends = self.chunks.iter().map(|(b, m)| b + m.size());
        ends.max().unwrap_or(0)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.on(addr, |m, o| m.read(o, buf))
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.on(addr, |m, o| m.write(o, data))
    }
    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        self.on(addr, |m, o| m.load_u32(o))
    }
    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        self.on(addr, |m, o| m.store_u32(o, value))
    }
    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        self.on(addr, |m, o| m.load_u64(o))
    }
    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        self.on(addr, |m, o| m.store_u64(o, value))
    }
    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        self.on(addr, |m, o| m.fetch_add_u32(o, value))
    }
    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        self.on(addr, |m, o| m.fetch_add_u64(o, value))
    }
    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        self.on(addr, |m, o| m.compare_exchange_u32(o, current, new))
    }
    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        self.on(addr, |m, o| m.compare_exchange_u64(o, current, new))
    }
}

/// BAR0: the device's register file.
struct SimBar0 {
    gpu: Arc<SimGpu>,
    /// Mapped length (normally the whole register file).
    len: u64,
    /// Accesses refused because they fell outside the mapping.
    refused: Arc<AtomicU64>,
}

impl SimBar0 {
    fn reg(&self, offset: u64) -> Option<u32> {
        let fits = offset % 4 == 0 && offset.checked_add(4).is_some_and(|e| e <= self.len);
        let reg = fits.then(|| u32::try_from(offset).ok()).flatten();
        if reg.is_none() {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        reg
    }
}

impl BarMapping for SimBar0 {
    fn base(&self) -> CpuVa {
        CpuVa(0x1000_0000)
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        Some(self.gpu.mmio_read32(self.reg(offset)?))
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        match self.reg(offset) {
            Some(o) => {
                self.gpu.mmio_write32(o, value);
                true
            }
            None => false,
        }
    }
}

/// BAR2: the device's VRAM, with single 64-bit accesses.
struct SimBar2(Arc<dyn PhysMemory>);

impl BarMapping for SimBar2 {
    fn base(&self) -> CpuVa {
        CpuVa(0x2000_0000)
    }
    fn len(&self) -> u64 {
        self.0.size()
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        self.0.load_u32(offset).ok()
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        self.0.store_u32(offset, value).is_ok()
    }
    fn read64(&self, offset: u64) -> Option<u64> {
        self.0.load_u64(offset).ok()
    }
    fn write64(&mut self, offset: u64, value: u64) -> bool {
        self.0.store_u64(offset, value).is_ok()
    }
}

/// What the CPU's interrupt controller saw: messages that matched the allocated vector
/// (data and the table entry's address), and ones that did not.
#[derive(Default)]
struct Apic {
    gpu: std::sync::OnceLock<Weak<SimGpu>>,
    delivered: AtomicU64,
    stray: AtomicU64,
}

impl InterruptSink for Apic {
    fn interrupt(&self, vector: u16, data: u32) {
        let entry = crate::hw::regs::MSIX_TABLE + u32::from(vector) * 16;
        let addr =
            self.gpu.get().and_then(Weak::upgrade).map(|g| {
                u64::from(g.mmio_read32(entry)) | (u64::from(g.mmio_read32(entry + 4)) << 32)
            });
        if data == MESSAGE.data && addr == Some(MESSAGE.addr) {
            self.delivered.fetch_add(1, Ordering::SeqCst);
        } else {
            self.stray.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The irq-scheme handle of the allocated vector: readable when the counter moved.
struct SimIrq {
    apic: Arc<Apic>,
    seen: u64,
}

impl IrqHandle for SimIrq {
    fn raw_fd(&self) -> usize {
        10
    }
    fn read_count(&mut self) -> Result<Option<u64>, SysError> {
        let now = self.apic.delivered.load(Ordering::SeqCst);
        Ok((now != self.seen).then(|| {
            self.seen = now;
            now
        }))
    }
    fn ack(&mut self, _count: u64) -> Result<(), SysError> {
        Ok(())
    }
}

/// The memory scheme: hands out the chunks in order, refusing anything but `CHUNK` bytes.
struct SimDma {
    chunks: Vec<(u64, Arc<HeapMemory>)>,
    next: usize,
}

impl DmaMemory for SimDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        let chunk = self.chunks.get(self.next).filter(|_| len == CHUNK);
        let (base, _) = chunk.ok_or(SysError::new(syscall::ENOMEM))?;
        let buf = DmaBuffer {
            cpu: CpuVa(0x7000_0000 + self.next as u64 * CHUNK),
            phys: PhysAddr(*base),
            len,
        };
        self.next += 1;
        Ok(buf)
    }
    fn free(&mut self, _: DmaBuffer) -> Result<(), SysError> {
        Ok(())
    }
    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError> {
        let hit = self.chunks.iter().find(|(b, _)| *b == buf.phys.get());
        hit.map(|(_, m)| m.clone() as Arc<dyn PhysMemory>)
            .ok_or(SysError::new(syscall::EINVAL))
    }
}

/// A Redox stand-in whose device is an in-process simgpu.
struct SimPlatform {
    pcid: Rc<FakePcid>,
    log: Log,
    gpu: Arc<SimGpu>,
    apic: Arc<Apic>,
    chunks: Vec<(u64, Arc<HeapMemory>)>,
    /// How much of BAR0 `map_bar` maps.
    bar0_len: u64,
    bar0_refused: Arc<AtomicU64>,
}

impl SimPlatform {
    fn new(features: Vec<PciFeature>) -> Self {
        let chunks: Vec<(u64, Arc<HeapMemory>)> = CHUNK_BASES
            .iter()
            .map(|b| (*b, Arc::new(HeapMemory::new(CHUNK))))
            .collect();
        let sys = Arc::new(OffsetMemory {
            chunks: chunks.clone(),
        });
        let cfg = simgpu::Config {
            vram_size: VRAM,
            contexts: 8,
            ..simgpu::Config::default()
        };
        let gpu = Arc::new(SimGpu::new(cfg, sys));
        let apic = Arc::new(Apic::default());
        let _ = apic.gpu.set(Arc::downgrade(&gpu));
        gpu.set_interrupt_sink(apic.clone());
        // The device runs on its own, like silicon; the driver only programs it.
        gpu.start();
        let pcid = Rc::new(simgpu_pcid(features));
        Self {
            pcid,
            log: Rc::new(RefCell::new(Vec::new())),
            gpu,
            apic,
            chunks,
            bar0_len: simgpu::regs::BAR0_SIZE,
            bar0_refused: Arc::default(),
        }
    }
}

fn simgpu_pcid(features: Vec<PciFeature>) -> FakePcid {
    let mut bars = [PciBar::None; 6];
    bars[0] = PciBar::Memory64 {
        addr: simgpu::pci::BAR0_DEFAULT,
        size: simgpu::regs::BAR0_SIZE,
    };
    bars[2] = PciBar::Memory64 {
        addr: simgpu::pci::BAR2_DEFAULT,
        size: VRAM,
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
        features,
        msix: MsixInfo {
            table_bar: 0,
            table_offset: crate::hw::regs::MSIX_TABLE,
            table_size: simgpu::regs::irq::COUNT as u16,
            pba_bar: 0,
            pba_offset: simgpu::regs::MSIX_PBA,
        },
        refuse_all: false,
        read_chunk: 4096,
    }
}

impl Platform for SimPlatform {
    type Channel = FakeChannel;
    type Bar = Box<dyn BarMapping>;
    type Irq = SimIrq;
    type Dma = SimDma;
    type Socket = FakeSocket;
    type Events = FakeQueue;

    fn env_var(&self, name: &str) -> Option<String> {
        (name == startup::PCID_CLIENT_CHANNEL).then(|| "5".to_owned())
    }
    fn open_channel(&mut self, _fd: usize) -> Result<FakeChannel, SysError> {
        Ok(FakeChannel::new(self.pcid.clone(), self.log.clone()))
    }
    fn map_bar(
        &mut self,
        _: &FakeChannel,
        bir: u8,
        _size: u64,
        _: MemoryType,
    ) -> Result<Box<dyn BarMapping>, SysError> {
        match bir {
            0 => Ok(Box::new(SimBar0 {
                gpu: self.gpu.clone(),
                len: self.bar0_len,
                refused: self.bar0_refused.clone(),
            })),
            2 => Ok(Box::new(SimBar2(self.gpu.vram()))),
            _ => Err(SysError::new(syscall::EINVAL)),
        }
    }
    fn alloc_msi_vector(&mut self) -> Result<(SimIrq, MsiMessage), SysError> {
        let irq = SimIrq {
            apic: self.apic.clone(),
            seen: 0,
        };
        Ok((irq, MESSAGE))
    }
    fn open_legacy_irq(&mut self, _line: u8) -> Result<SimIrq, SysError> {
        // The line "rings" when the device sends its message (see `emulate_single_vector`).
        Ok(SimIrq {
            apic: self.apic.clone(),
            seen: 0,
        })
    }
    fn open_dma(&mut self) -> Result<SimDma, SysError> {
        Ok(SimDma {
            chunks: self.chunks.clone(),
            next: 0,
        })
    }
    fn create_socket(&mut self) -> Result<FakeSocket, SysError> {
        Ok(FakeSocket::default())
    }
    fn create_event_queue(&mut self, _: &FakeSocket, _: &SimIrq) -> Result<FakeQueue, SysError> {
        Ok(FakeQueue::default())
    }
    fn register_scheme<S: SchemeSync>(
        &mut self,
        _: &FakeSocket,
        _name: &str,
        scheme: &mut S,
    ) -> Result<(), SysError> {
        scheme.scheme_root().map(drop).map_err(SysError::from)
    }
    fn enter_null_namespace(&mut self) -> Result<(), SysError> {
        Ok(())
    }
    fn notify_ready(&mut self, _fd: usize) -> Result<(), SysError> {
        Ok(())
    }
}

impl BarMapping for Box<dyn BarMapping> {
    fn base(&self) -> CpuVa {
        (**self).base()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        (**self).read32(offset)
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: u64) -> Option<u64> {
        (**self).read64(offset)
    }
    fn write64(&mut self, offset: u64, value: u64) -> bool {
        (**self).write64(offset, value)
    }
}

/// BO `mmap_prep` / `munmap` through the loop (the CPU window).
#[path = "pcid_mmap_tests.rs"]
mod mmap;

type Svc = Service<SimPlatform, GpuScheme<Driver>, PcidEvents>;
/// What the factory reports besides the server: the IRQ hook and the DMA pool's chunks.
type Made = (Arc<StatusIrq>, Vec<(u64, u64)>);

/// A started `gpud pcid` over the simulated platform, and a client on it.
struct Rig {
    platform: SimPlatform,
    svc: Option<Svc>,
    irq: Arc<StatusIrq>,
    pool: Vec<(u64, u64)>,
    dev: usize,
    tag: u32,
}

impl Rig {
    fn start(features: Vec<PciFeature>) -> Self {
        let mut platform = SimPlatform::new(features);
        let made: Rc<RefCell<Option<Made>>> = Rc::default();
        let out = made.clone();
        let cfg = PcidConfig {
            // 8 MiB chunks are refused, so the pool is built from halved ones.
            dma_pool: 3 * CHUNK,
            dma_pool_min: CHUNK,
            dma_chunk: 2 * CHUNK,
            ..PcidConfig::default()
        };
        let svc = startup::start(&mut platform, move |res: DeviceResources<SimPlatform>| {
            let built = build_with(res, cfg)?;
            *out.borrow_mut() = Some((built.irq.clone(), built.dma_pool.clone()));
            Ok((built.scheme, built.events))
        })
        .expect("gpud pcid starts on the simulated platform");
        let (irq, pool) = made.borrow_mut().take().expect("build ran");
        let mut rig = Self {
            platform,
            svc: Some(svc),
            irq,
            pool,
            dev: 0,
            tag: 100,
        };
        let root = rig.scheme().scheme_root().expect("root");
        rig.push(t::openat(1, root, "card0", 0));
        rig.dev = rig.pump_until(1).expect("card0 opens");
        rig
    }

    fn svc(&mut self) -> &mut Svc {
        // PANIC: `svc` is only taken in `Drop`.
        self.svc.as_mut().expect("service")
    }

    fn scheme(&mut self) -> &mut GpuScheme<Driver> {
        self.svc().event_loop.scheme_mut()
    }

    fn push(&mut self, request: redox_scheme::Request) {
        self.svc()
            .event_loop
            .socket_mut()
            .incoming
            .push_back(request);
    }

    fn answer(&mut self, tag: u32) -> Option<Result<usize, i32>> {
        let regular = CqeOpcode::RespondRegular as u8;
        let written = &self.svc().event_loop.socket_mut().written;
        written
            .iter()
            .find(|c| c.flags == regular && c.tag == tag)
            .map(t::result)
    }

    /// Runs the loop as Redox would wake it (IRQ when the vector fired, the socket when a
    /// request is queued, else the timer after a short sleep) until `tag` is answered.
    fn pump_until(&mut self, tag: u32) -> Result<usize, i32> {
        for _ in 0..MAX_WAKES {
            if let Some(result) = self.answer(tag) {
                return result;
            }
            self.pump_once();
        }
        panic!("request {tag} not answered after {MAX_WAKES} wake-ups");
    }

    /// One wake-up of the loop.
    fn pump_once(&mut self) {
        let irq = self.platform.apic.delivered.load(Ordering::SeqCst);
        let svc = self.svc();
        let source = if irq != svc.event_loop.irq_mut_for_tests().seen {
            WakeSource::Irq
        } else if !svc.event_loop.socket_mut().incoming.is_empty() {
            WakeSource::Scheme
        } else {
            std::thread::sleep(std::time::Duration::from_millis(1));
            WakeSource::Timer
        };
        svc.event_loop.on_wake(source).expect("loop wake");
    }

    fn call(&mut self, req: &Request) -> (u32, t::Payload) {
        self.tag += 1;
        let (opcode, bytes) = encode(req);
        let (request, payload) = t::call(self.tag, self.dev, bytes, [opcode, 0, 0]);
        self.push(request);
        (self.tag, payload)
    }

    fn run(&mut self, req: &Request) -> Vec<u8> {
        let (tag, payload) = self.call(req);
        assert_eq!(self.pump_until(tag), Ok(0), "{req:?}");
        payload.bytes()
    }

    fn bo(&mut self, size: u64, placement: Placement) -> (BoId, usize) {
        let reply = self.run(&Request::BoCreate(BoCreateRequest {
            size,
            placement,
            flags: Default::default(),
            vm: None,
        }));
        let id = read_args::<BoCreateArgs>(&reply).expect("args").bo_id;
        self.tag += 1;
        let tag = self.tag;
        let path: &'static str = Box::leak(format!("bo/{id}").into_boxed_str());
        self.push(t::dup(tag, self.dev, path));
        let handle = self.pump_until(tag).expect("bo handle");
        (BoId(id), handle)
    }

    fn bo_object(&mut self, handle: usize) -> Arc<crate::mem::bo::Bo> {
        self.scheme()
            .bo_of_handle(handle)
            .cloned()
            .expect("a BO handle")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The driver first (its threads stop), then the device's own thread.
        drop(self.svc.take());
        self.platform.gpu.stop();
    }
}

fn map(bo: BoId, addr: u64, range: u64) -> BindOp {
    BindOp {
        kind: BindOpKind::Map { bo, bo_offset: 0 },
        addr,
        range,
        flags: Default::default(),
        pat_index: 0,
    }
}

/// Creates a VM, a batch BO (system) and a target BO (VRAM), binds both, executes a
/// STORE_DWORD batch on the copy engine, waits for it through a syncobj in the loop, and
/// returns the dword the GPU stored, read back through BAR2.
fn store_through_the_loop(rig: &mut Rig) -> u32 {
    let vm = read_args::<VmCreateArgs>(&rig.run(&Request::VmCreate(VmCreateFlags::empty())))
        .expect("args")
        .vm_id;
    let (batch, batch_h) = rig.bo(0x1000, Placement::SYSTEM);
    let (target, target_h) = rig.bo(0x1000, Placement::VRAM);
    let (batch_bo, target_bo) = (rig.bo_object(batch_h), rig.bo_object(target_h));
    let sys = batch_bo.system_region().expect("batch in system memory");
    assert!(
        rig.pool
            .iter()
            .any(|(b, l)| (*b..b + l).contains(&sys.addr.get())),
        "system BOs carry the pool's physical addresses"
    );
    assert!(target_bo.system_region().is_none(), "target in VRAM");
    let mut cs = CommandStream::new();
    cs.store_dword(GpuVa(0x20_0010), 0xC0FFEE).batch_end();
    batch_bo.write(0, &cs.to_bytes()).expect("batch written");
    rig.run(&Request::VmBind(VmBindRequest {
        vm: VmId(vm),
        queue: None,
        ops: vec![
            map(batch, 0x10_0000, 0x1000),
            map(target, 0x20_0000, 0x1000),
        ],
        syncs: vec![],
    }));
    let queue = read_args::<ExecQueueCreateArgs>(&rig.run(&Request::ExecQueueCreate {
        vm: VmId(vm),
        class: EngineClass::Copy,
        priority: QueuePriority::Normal,
        batches: Default::default(),
    }))
    .expect("args")
    .queue_id;
    let done =
        read_args::<SyncobjCreateArgs>(&rig.run(&Request::SyncobjCreate { signaled: false }))
            .expect("args")
            .syncobj_id;
    rig.run(&Request::Exec(ExecRequest {
        queue: QueueId(queue),
        batches: vec![0x10_0000],
        syncs: vec![SyncSpec {
            kind: SyncKind::Syncobj(SyncobjId(done)),
            signal: true,
        }],
    }));
    let (wait, _) = rig.call(&Request::SyncobjWait(SyncobjWaitRequest {
        points: vec![SyncobjPoint {
            syncobj: SyncobjId(done),
            point: 0,
        }],
        flags: SyncobjWaitFlags::empty(),
        timeout: Timeout::Forever,
    }));
    assert_eq!(rig.pump_until(wait), Ok(0), "the wait completed");
    let mut word = [0u8; 4];
    target_bo
        .read(0x10, &mut word)
        .expect("VRAM read through BAR2");
    u32::from_le_bytes(word)
}

/// The completion came through the platform's vector and the status-driven hook.
fn assert_irq_path_used(rig: &mut Rig) {
    let stats = rig.svc().event_loop.stats();
    assert!(stats.irqs_acked >= 1, "{stats:?}");
    assert!(rig.irq.calls() >= 1);
    assert!(rig.irq.marked().contains(IrqCauses::COPY_USER));
    assert!(rig.platform.apic.delivered.load(Ordering::SeqCst) >= 1);
    // Only the scheduler's completion watcher acknowledges COPY_USER, and only for causes
    // the latch reports: the bit clears iff the hook's mark reached it. (The fence alone
    // would not prove it: the scheduler also polls fence pages while a job can time out.)
    let copy_user = IrqCauses::COPY_USER.bits();
    let gpu = rig.platform.gpu.clone();
    let acked = (0..MAX_WAKES).any(|_| {
        let pending = gpu.mmio_read32(crate::hw::regs::INT_STATUS) & copy_user != 0;
        if pending {
            // A later completion (the kernel copy queue clearing a BO, say) may still be
            // on its way through the vector: keep the loop running.
            rig.pump_once();
        }
        !pending
    });
    assert!(acked, "the completion watcher never acknowledged COPY_USER");
}

/// Stands in for the device's MSI engine or INTx pin, which simgpu does not model: its
/// per-cause MSI-X messages are pointed at the platform's one vector, as MSI would raise it.
fn emulate_single_vector(gpu: &SimGpu) {
    for v in 0..crate::hw::sim::irq::VECTORS_USED {
        let e = crate::hw::regs::MSIX_TABLE + v * crate::hw::regs::MSIX_ENTRY_SIZE;
        gpu.mmio_write32(e, MESSAGE.addr as u32);
        gpu.mmio_write32(e + 4, (MESSAGE.addr >> 32) as u32);
        gpu.mmio_write32(e + crate::hw::regs::MSIX_DATA, MESSAGE.data);
    }
}

fn msix_data(gpu: &SimGpu, v: u32) -> u32 {
    gpu.mmio_read32(
        crate::hw::regs::MSIX_TABLE
            + v * crate::hw::regs::MSIX_ENTRY_SIZE
            + crate::hw::regs::MSIX_DATA,
    )
}

#[test]
fn gpud_pcid_runs_a_batch_on_the_device_pcid_handed_over_and_irqs_complete_the_wait() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    assert_eq!(store_through_the_loop(&mut rig), 0xC0FFEE);
    assert_irq_path_used(&mut rig);
    assert_eq!(
        rig.platform.apic.stray.load(Ordering::SeqCst),
        0,
        "every message used the allocated vector"
    );
}

#[test]
fn the_clients_fdinfo_names_the_pci_function_pcid_handed_over() {
    use gpu_scheme::driver::{ClientId, GpuDriver};
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let lines = rig.scheme().driver().stats(Some(ClientId(1)));
    // simgpu_pcid puts the function at 0000:00:04.0.
    assert!(
        lines
            .iter()
            .any(|(k, v)| k == "drm-pdev" && v == "0000:00:04.0"),
        "{lines:?}"
    );
}

#[test]
fn after_bring_up_every_used_msix_entry_carries_the_platform_message() {
    let rig = Rig::start(vec![PciFeature::MsiX]);
    let gpu = &rig.platform.gpu;
    for v in 0..crate::hw::sim::irq::VECTORS_USED {
        let e = crate::hw::regs::MSIX_TABLE + v * crate::hw::regs::MSIX_ENTRY_SIZE;
        let addr = u64::from(gpu.mmio_read32(e)) | (u64::from(gpu.mmio_read32(e + 4)) << 32);
        assert_eq!(addr, MESSAGE.addr, "entry {v}");
        assert_eq!(msix_data(gpu, v), MESSAGE.data, "entry {v}");
        assert_eq!(
            gpu.mmio_read32(e + crate::hw::regs::MSIX_CTRL),
            0,
            "unmasked"
        );
    }
    assert_ne!(
        gpu.mmio_read32(crate::hw::regs::INT_MASK),
        0,
        "causes enabled by the hardware layer"
    );
}

#[test]
fn msi_and_legacy_modes_leave_the_msix_table_alone_and_work_from_int_status() {
    for features in [vec![PciFeature::Msi], vec![]] {
        let mut rig = Rig::start(features.clone());
        let gpu = rig.platform.gpu.clone();
        for v in 0..crate::hw::sim::irq::VECTORS_USED {
            assert_eq!(msix_data(&gpu, v), 0, "{features:?}: entry {v} untouched");
        }
        emulate_single_vector(&gpu);
        assert_eq!(store_through_the_loop(&mut rig), 0xC0FFEE, "{features:?}");
        assert_irq_path_used(&mut rig);
    }
}

#[test]
fn a_truncated_register_bar_is_survived_without_a_panic() {
    // BAR0 mapped only up to the queue registers: the MSI-X table is outside (MSI-X falls
    // back to INTx), and every queue register access is refused by the mapping.
    let mut platform = SimPlatform::new(vec![PciFeature::MsiX]);
    platform.bar0_len = u64::from(crate::hw::regs::QUEUE_BASE);
    let refused = platform.bar0_refused.clone();
    let result = startup::start(&mut platform, |res: DeviceResources<SimPlatform>| {
        let built = build_with(res, PcidConfig::default())?;
        Ok((built.scheme, built.events))
    });
    let started = result.is_ok();
    drop(result);
    platform.gpu.stop();
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the refused accesses reached the mapping (started: {started})"
    );
}
