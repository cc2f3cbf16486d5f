//! SVM end to end on the host: a client makes its own memory GPU-visible (libgpu adopts it
//! onto a memfd and hands gpud the memfd and a userfaultfd, as for userptr), binds one
//! `CPU_ADDR_MIRROR` over its whole address space on a fault-mode VM, and runs batches that
//! live in that memory and read and write it by CPU address. Results are checked by CPU
//! reads (bounded polls: the batches end with a store the CPU waits for).
//!
//! The client side needs `unsafe` for what the scenarios are about: mapping, remapping and
//! unmapping its own memory, and `Device::userptr_adopt`'s contract.

#![allow(unsafe_code)]

use gpu_tests::cpu_mem::{anon, anon_aligned, unmap};
use gpu_tests::Daemon;
use libgpu::cmd::Batch;
use libgpu::flags::{EngineClass, VmCreateFlags};
use libgpu::{Device, ExecQueue, Vm};
use rustix::mm::MremapFlags;
use std::time::{Duration, Instant};

const P: u64 = 4096;
const M2: u64 = 2 << 20;
/// The mirror's end: far above any CPU address of a user process (below 2^47).
const MIRROR_END: u64 = (1 << 48) - (1 << 32);

fn write_dwords(addr: u64, dwords: &[u32]) {
    for (i, d) in dwords.iter().enumerate() {
        // SAFETY: test memory, mapped and writable; the GPU reads it only after the exec.
        unsafe { (addr as *mut u32).add(i).write_volatile(*d) }
    }
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: test memory, mapped; the GPU may write it, hence the volatile read.
    unsafe { (addr as *const u32).read_volatile() }
}

/// A fault-mode VM with one mirror over the whole address space and a copy queue.
struct Svm {
    vm: Vm,
    queue: ExecQueue,
}

impl Svm {
    fn new(dev: &Device) -> Self {
        let vm = Vm::create(dev, VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE).expect("vm");
        vm.bind()
            .map_cpu_mirror(0, MIRROR_END)
            .submit()
            .expect("mirror bind");
        let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
        Self { vm, queue }
    }

    /// Writes a batch at `batch` (CPU = GPU address) storing each `(va, value)` and then
    /// `done` at `flag`, runs it, and waits (bounded) until the CPU sees `done` at `flag`.
    fn run(&self, batch: u64, writes: &[(u64, u32)], flag: u64, done: u32) {
        let mut b = Batch::new();
        for &(va, v) in writes {
            b.store_dword(va, v);
        }
        b.store_dword(flag, done).batch_end();
        write_dwords(batch, b.dwords());
        self.queue.exec(batch).submit().expect("exec");
        let deadline = Instant::now() + Duration::from_secs(20);
        while read_u32(flag) != done {
            assert!(
                Instant::now() < deadline,
                "the batch at {batch:#x} never stored {done:#x} at {flag:#x}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// SA-once-mmap: the batch and its data live in the client's mmap'ed memory; the GPU faults
/// both in through the mirror.
#[test]
fn sa_once_mmap() {
    let d = Daemon::start();
    let dev = d.device();
    let g = Svm::new(&dev);
    let buf = anon(16 * P);
    // SAFETY: this thread's own fresh memory.
    unsafe { dev.userptr_adopt(buf, 16 * P) }.expect("adopt");
    let data = buf + 8 * P;
    g.run(
        buf,
        &[(data, 0xC0FFEE), (data + 5 * P, 0xBEEF)],
        data + 64,
        1,
    );
    assert_eq!(read_u32(data), 0xC0FFEE, "the CPU sees the GPU's write");
    assert_eq!(read_u32(data + 5 * P), 0xBEEF);
    let _ = &g.vm;
}

/// SA-{twice,many}-mmap: `n` execs of batches in the client's memory, each storing its own
/// values into pages across the buffer (the later ones find the ranges mapped already).
fn sa_mmap(n: u32) {
    let d = Daemon::start();
    let dev = d.device();
    let g = Svm::new(&dev);
    let buf = anon(32 * P);
    // SAFETY: this thread's own fresh memory.
    unsafe { dev.userptr_adopt(buf, 32 * P) }.expect("adopt");
    let data = buf + 16 * P;
    for i in 0..n {
        let at = data + u64::from(i % 16) * P + u64::from(i / 16) * 16;
        g.run(buf, &[(at, 0x5000 + i)], data + 15 * P + 2048, i + 1);
    }
    for i in 0..n {
        let at = data + u64::from(i % 16) * P + u64::from(i / 16) * 16;
        assert_eq!(read_u32(at), 0x5000 + i, "exec {i}'s value");
    }
}

#[test]
fn sa_twice_mmap() {
    sa_mmap(2);
}

#[test]
fn sa_many_mmap() {
    sa_mmap(64);
}

/// SA-once-mmap-remap: between execs the buffer moves (mremap); the GPU follows it and sees
/// the moved data at the new address (the old GPU mappings were invalidated).
#[test]
fn sa_once_mmap_remap() {
    let d = Daemon::start();
    let dev = d.device();
    let g = Svm::new(&dev);
    let buf = anon(8 * P);
    // SAFETY: this thread's own fresh memory.
    unsafe { dev.userptr_adopt(buf, 8 * P) }.expect("adopt");
    g.run(buf, &[(buf + 4 * P, 0x1111)], buf + 4 * P + 64, 1);
    // Move it where nothing is mapped (a fresh reservation, given back first).
    let to = anon(8 * P);
    // SAFETY: `buf` is this test's own memory; `to` a range it reserved for the move.
    let moved = unsafe {
        rustix::mm::mremap_fixed(
            buf as *mut _,
            8 * P as usize,
            8 * P as usize,
            MremapFlags::MAYMOVE,
            to as *mut _,
        )
    }
    .expect("mremap") as u64;
    assert_eq!(moved, to);
    assert_eq!(read_u32(to + 4 * P), 0x1111, "the data moved");
    // The batch copies the moved data by its new address and stores next to it.
    let mut b = Batch::new();
    b.copy(to + 4 * P, to + 6 * P, 4)
        .store_dword(to + 6 * P + 8, 0x2222)
        .store_dword(to + 6 * P + 64, 2)
        .batch_end();
    write_dwords(to, b.dwords());
    g.queue.exec(to).submit().expect("exec at the new address");
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_u32(to + 6 * P + 64) != 2 {
        assert!(
            Instant::now() < deadline,
            "the batch at the new address never ran"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_u32(to + 6 * P), 0x1111, "the GPU read the moved data");
    assert_eq!(read_u32(to + 6 * P + 8), 0x2222);
    // The old address maps nothing now: a GPU store there faults and the job is aborted. A
    // stale GPU mapping would land it in the moved page (and the batch would go on to set
    // its flag).
    let mut b = Batch::new();
    b.store_dword(buf + 4 * P + 16, 0xDEAD)
        .store_dword(to + 6 * P + 128, 3)
        .batch_end();
    write_dwords(to + P, b.dwords());
    g.queue.exec(to + P).submit().expect("exec");
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        assert_ne!(
            read_u32(to + 4 * P + 16),
            0xDEAD,
            "the GPU wrote through a stale mapping"
        );
        assert_ne!(
            read_u32(to + 6 * P + 128),
            3,
            "a store to unmapped memory succeeded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SA-partial-munmap-cpu-fault: a 2 MiB-aligned region; exec 1 writes at offset 0; the CPU
/// reads it; one 1 MiB half is unmapped; exec 2 (its batch in the surviving half) writes
/// into the surviving half.
#[test]
fn sa_partial_munmap_cpu_fault() {
    let d = Daemon::start();
    let dev = d.device();
    let g = Svm::new(&dev);
    let buf = anon_aligned(M2, M2);
    // SAFETY: this thread's own fresh memory.
    unsafe { dev.userptr_adopt(buf, M2) }.expect("adopt");
    let half = M2 / 2;
    g.run(buf + half - P, &[(buf, 0xAAAA)], buf + 64, 1);
    assert_eq!(read_u32(buf), 0xAAAA, "CPU read of exec 1's data");
    unmap(buf + half, half);
    g.run(
        buf + 2 * P,
        &[(buf + 8, 0xBBBB), (buf + half - 2 * P, 0xCCCC)],
        buf + 128,
        2,
    );
    assert_eq!(read_u32(buf), 0xAAAA);
    assert_eq!(read_u32(buf + 8), 0xBBBB);
    assert_eq!(read_u32(buf + half - 2 * P), 0xCCCC);
}
