//! The `libgpu` group: the client library's own costs — encoding command batches, building
//! VM_BIND requests, and calls through libgpu over the host transport (against the fake
//! driver, so the numbers are library + transport, not driver work).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gpu_scheme::testing::FakeDriver;
use gpu_scheme::{GpuScheme, Limits};
use libgpu::cmd::Batch;
use libgpu::flags::{BoCreateFlags, Placement, VmCreateFlags};
use libgpu::{Bo, Device, Syncobj, Vm};

use crate::report::{mean_ns, Report};

/// Runs the group.
pub fn libgpu() -> Report {
    let mut r = Report::new("libgpu");
    r.push(
        "encode_batch_1000_store_qword_ns",
        mean_ns(2_000, || {
            let mut b = Batch::new();
            for i in 0..1000u64 {
                b.store_qword(0x10_0000 + 8 * i, i);
            }
            std::hint::black_box(b.len());
        }),
    );
    #[cfg(target_os = "linux")]
    over_host(&mut r);
    r
}

#[cfg(target_os = "linux")]
fn over_host(r: &mut Report) {
    use gpu_scheme::host::HostServer;

    let path = std::env::temp_dir().join(format!("gpu-bench-libgpu-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let scheme = GpuScheme::new(FakeDriver::new(), Limits::default());
    let Ok(mut server) = HostServer::bind(&path, scheme) else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let _ = server.serve(Duration::from_millis(5), |_| flag.load(Ordering::Relaxed));
    });
    if let Ok(dev) = Device::open_at(&path) {
        measure_calls(r, &dev);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    let _ = std::fs::remove_file(&path);
}

#[cfg(target_os = "linux")]
fn measure_calls(r: &mut Report, dev: &Device) {
    let (Ok(vm), Ok(bo), Ok(so)) = (
        Vm::create(dev, VmCreateFlags::empty()),
        Bo::create(dev, 1 << 20, Placement::SYSTEM, BoCreateFlags::empty()),
        Syncobj::create(dev, true),
    ) else {
        return;
    };
    r.push(
        "bind_builder_64_maps_request_ns",
        mean_ns(20_000, || {
            let mut b = vm.bind();
            for i in 0..64u64 {
                b = b.map(&bo, 0, 0x100_0000 + (i << 20), 0x1000);
            }
            std::hint::black_box(b.request().is_ok());
        }),
    );
    r.push(
        "syncobj_query_round_trip_ns",
        mean_ns(20_000, || {
            std::hint::black_box(so.query().is_ok());
        }),
    );
    r.push(
        "vm_bind_unmap_round_trip_ns",
        mean_ns(10_000, || {
            std::hint::black_box(vm.bind().unmap(0x100_0000, 0x1000).submit().is_ok());
        }),
    );
    r.push(
        "bo_mmap_and_unmap_1mib_ns",
        mean_ns(2_000, || {
            std::hint::black_box(bo.mmap().is_ok());
        }),
    );
    if let Ok(map) = bo.mmap() {
        let page = vec![0xa5u8; 4096];
        r.push(
            "bo_map_write_4kib_ns",
            mean_ns(20_000, || {
                std::hint::black_box(map.write(0, &page).is_ok());
            }),
        );
    }
}
