//! Benchmarks of the gpu scheme: decoding, a call through the server, the Redox decode path,
//! and a round trip over the host transport. All against the scheme's fake driver, so the
//! numbers are the scheme's own overhead, not the driver's.

use std::time::Duration;

use gpu_scheme::dispatch::{dispatch, Peer, TransportOp};
use gpu_scheme::testing::{caller, FakeDriver};
use gpu_scheme::uapi::flags::BindFlags;
use gpu_scheme::uapi::*;
use gpu_scheme::{GpuScheme, Limits};
use redox_scheme::scheme::{SchemeState, SchemeSync};
use redox_scheme::OpenResult;

use crate::report::{mean_ns, Report};

fn bind_request(ops: usize) -> Request {
    let op = |i: u64| BindOp {
        kind: BindOpKind::Unmap,
        addr: 0x10_0000 + i * 0x1000,
        range: 0x1000,
        flags: BindFlags::empty(),
        pat_index: 0,
    };
    let sync = SyncSpec {
        kind: SyncKind::Syncobj(SyncobjId(1)),
        signal: false,
    };
    Request::VmBind(VmBindRequest {
        vm: VmId(1),
        queue: None,
        ops: (0..ops as u64).map(op).collect(),
        syncs: vec![sync; 4],
    })
}

fn device(s: &mut GpuScheme<FakeDriver>) -> usize {
    let root = s.scheme_root().unwrap_or(0);
    match s.openat(root, "card0", 0, 0, &caller()) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        _ => 0,
    }
}

/// The `scheme` group.
pub fn scheme() -> Report {
    let mut r = Report::new("scheme");
    for ops in [1usize, 64, 1024] {
        let (op, bytes) = encode(&bind_request(ops));
        let ns = mean_ns(20_000 / ops as u64 + 100, || {
            std::hint::black_box(decode(op, std::hint::black_box(&bytes)).is_ok());
        });
        r.push(&format!("decode_vm_bind_{ops}_ops_ns"), ns);
    }
    let mut s = GpuScheme::new(FakeDriver::new(), Limits::default());
    let dev = device(&mut s);
    let (op, query) = encode(&Request::DeviceQuery);
    let mut p = query.clone();
    r.push(
        "call_device_query_ns",
        mean_ns(100_000, || {
            p.copy_from_slice(&query);
            std::hint::black_box(s.call(dev, &mut p, &[op, 0, 0], &caller()).is_ok());
        }),
    );
    let mut state = SchemeState::new();
    r.push(
        "dispatch_device_query_ns",
        mean_ns(100_000, || {
            p.copy_from_slice(&query);
            let call = TransportOp::Call {
                fd: dev,
                second: None,
                payload: &mut p,
                metadata: [op, 0, 0],
            };
            std::hint::black_box(dispatch(&mut s, &mut state, call, 1, Peer::default()));
        }),
    );
    #[cfg(target_os = "linux")]
    host_round_trip(&mut r);
    #[cfg(target_os = "linux")]
    crate::serve::end_to_end(&mut r);
    r
}

#[cfg(target_os = "linux")]
fn host_round_trip(r: &mut Report) {
    use gpu_scheme::host::{HostHandle, HostServer};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let path = std::env::temp_dir().join(format!("gpu-bench-{}.sock", std::process::id()));
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
    if let Ok(dev) = HostHandle::connect(&path).and_then(|root| root.open("card0")) {
        let (op, query) = encode(&Request::DeviceQuery);
        let mut p = query.clone();
        r.push(
            "host_device_query_round_trip_ns",
            mean_ns(20_000, || {
                p.copy_from_slice(&query);
                std::hint::black_box(dev.call(&mut p, [op, 0, 0]).is_ok());
            }),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    let _ = std::fs::remove_file(&path);
}
