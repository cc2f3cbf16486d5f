//! One `Device` shared by many threads: calls on one handle are serialised by the transport,
//! replies never cross between threads, and every object created is destroyed.

#![cfg(target_os = "linux")]

mod common;

use common::{stat, Server};
use libgpu::flags::*;
use libgpu::{Bo, Syncobj, Timeout, Vm};

#[test]
fn threads_sharing_a_device_get_their_own_answers() {
    let server = Server::start();
    let dev = server.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (dev, vm) = (&dev, &vm);
            s.spawn(move || {
                for i in 0..40u64 {
                    let bo = Bo::create(dev, 0x1000, Placement::SYSTEM, BoCreateFlags::empty());
                    let bo = bo.unwrap();
                    let map = bo.mmap().unwrap();
                    let tag = (t << 32) | i;
                    map.write_u64(8 * t as usize, tag).unwrap();
                    assert_eq!(map.read_u64(8 * t as usize).unwrap(), tag);
                    let va = 0x100_0000 + (t << 24) + (i << 12);
                    vm.bind().map(&bo, 0, va, 0x1000).submit().unwrap();
                    vm.bind().unmap(va, 0x1000).submit().unwrap();
                    let so = Syncobj::create(dev, false).unwrap();
                    so.signal_point(i + 1).unwrap();
                    assert_eq!(
                        so.query().unwrap(),
                        i + 1,
                        "an answer for this thread's call"
                    );
                    assert!(so.wait_point(i + 1, Timeout::Poll).unwrap());
                }
            });
        }
    });
    let stats = dev.stats().unwrap();
    assert_eq!(stat(&stats, "client-bos").unwrap(), "0");
    assert_eq!(stat(&stats, "client-syncobjs").unwrap(), "0");
    assert_eq!(stat(&stats, "client-cpu-mappings").unwrap(), "0");
    assert_eq!(stat(&stats, "client-binds").unwrap(), "640");
}
