//! Concurrency: the device thread and CPU threads update the same memory words atomically,
//! and register writes from several threads race with the device thread.

use simgpu::testkit::{enc, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VA: u64 = 0x100_0000;

#[test]
fn stress_gpu_atomics_and_cpu_atomics_on_the_same_words() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    let pa = rig.map_new_sys(0, VA, PAGE);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    rig.gpu.start();
    let sys = rig.sys.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = {
        let (sys, stop) = (sys.clone(), stop.clone());
        std::thread::spawn(move || {
            // At least one round even if the device finishes before this thread is scheduled.
            let mut n = 0u64;
            loop {
                sys.fetch_add_u32(pa, 1).unwrap(); // same word as the 32-bit GPU adds
                sys.write(pa + 6, &[0xEE]).unwrap(); // a neighbouring byte in the same u64
                n += 1;
                if stop.load(Ordering::Acquire) {
                    break n;
                }
            }
        })
    };
    let rounds = 50u32;
    for _ in 0..rounds {
        let mut cmds = Vec::new();
        for _ in 0..20 {
            cmds.extend(enc::atomic_add(VA, 1, false));
        }
        rig.submit(ENGINE_COPY, 0, &cmds);
        rig.submit(ENGINE_COMPUTE, 0, &cmds);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.gpu.counters().commands < u64::from(rounds) * 40 {
        assert!(Instant::now() < deadline, "device stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Release);
    let cpu_adds = cpu.join().unwrap();
    rig.gpu.stop();
    let total = u64::from(sys.load_u32(pa).unwrap());
    assert_eq!(total, cpu_adds + u64::from(rounds) * 40, "no update lost");
    assert_eq!(sys.load_u32(pa + 4).unwrap() >> 16 & 0xFF, 0xEE);
}
