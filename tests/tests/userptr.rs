//! userptr end to end on the host: clients make their own memory GPU-visible (libgpu moves it
//! onto a memfd and hands gpud the memfd and a userfaultfd, MM_FD), bind it with MAP_USERPTR,
//! and change their CPU mappings under the GPU's feet.
//!
//! The client side needs `unsafe` for what the scenarios are about: mapping, remapping and
//! unmapping its own memory, and `Device::userptr_adopt`'s contract.

#![allow(unsafe_code)]

use gpu_tests::cpu_mem::{anon, unmap};
use gpu_tests::{spawn_client, stat, Daemon, CHILD_ENV};
use libgpu::Device;
use rustix::fd::{AsFd, OwnedFd};
use rustix::mm::{MapFlags, ProtFlags};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const P: u64 = 4096;

/// A memfd of `len` bytes, sealed against shrinking when `sealed`, mapped shared; its address.
fn memfd_mapping(len: u64, sealed: bool) -> (OwnedFd, u64) {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).expect("memfd");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    if sealed {
        fcntl_add_seals(&fd, SealFlags::SHRINK).expect("seal");
    }
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a fresh shared mapping at an address the kernel picks.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot,
            MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .expect("mmap");
    (fd, p as u64)
}

fn write_u32(addr: u64, value: u32) {
    // SAFETY: test memory, mapped and writable; only this thread accesses it.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: test memory, mapped; the GPU may write it, hence the volatile read.
    unsafe { (addr as *const u32).read_volatile() }
}

fn device_stat(dev: &Device, key: &str) -> Option<u64> {
    stat(&dev.stats().expect("stats"), key)
}

/// Waits (bounded) until gpud has delivered an address-space event after the first `seen`
/// (`userptr_events` moves once the GPU mapping is zapped).
fn zapped_after(dev: &Device, seen: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while device_stat(dev, "userptr_events").unwrap_or(0) <= seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn adopt_keeps_the_contents_and_bad_registrations_get_an_errno() {
    let d = Daemon::start();
    let dev = d.device();
    let buf = anon(4 * P);
    for i in 0..4 {
        write_u32(buf + i * P, 0x1000 + i as u32);
    }
    // SAFETY: this thread's own fresh memory, nobody else touches it.
    unsafe { dev.userptr_adopt(buf, 4 * P) }.expect("adopt");
    for i in 0..4 {
        assert_eq!(
            read_u32(buf + i * P),
            0x1000 + i as u32,
            "contents preserved"
        );
    }
    assert_eq!(device_stat(&dev, "userptr_regions"), Some(1));
    assert_eq!(device_stat(&dev, "userptr_clients"), Some(1));
    assert!(dev.userptr_mode().is_some());
    // Unaligned or empty: refused locally, nothing moved.
    // SAFETY: refused before anything is touched.
    let e = unsafe { dev.userptr_adopt(buf + 8, P) }.unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EINVAL);
    // SAFETY: as above.
    let e = unsafe { dev.userptr_adopt(buf, 0) }.unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EINVAL);
    // The same range again: it overlaps what is registered.
    let (fd, va) = memfd_mapping(2 * P, true);
    let e = dev
        .userptr_register_memfd(fd.as_fd(), buf, P, 0)
        .unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EBUSY);
    // A memfd not sealed against shrinking could be cut under gpud's window: refused.
    let (loose, loose_va) = memfd_mapping(P, false);
    let e = dev
        .userptr_register_memfd(loose.as_fd(), loose_va, P, 0)
        .unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EINVAL);
    // Longer than the memfd: refused.
    let e = dev
        .userptr_register_memfd(fd.as_fd(), va, 2 * P, P)
        .unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EINVAL);
    // A range this process does not map cannot be registered: EFAULT.
    unmap(va, 2 * P);
    let e = dev
        .userptr_register_memfd(fd.as_fd(), va, P, 0)
        .unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::EFAULT);
    assert_eq!(device_stat(&dev, "userptr_regions"), Some(1));
    // Unmapping the adopted range is an event gpud reads: the region is forgotten.
    unmap(buf, 4 * P);
    let deadline = Instant::now() + Duration::from_secs(10);
    while device_stat(&dev, "userptr_regions") != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(device_stat(&dev, "userptr_regions"), Some(0));
    assert!(device_stat(&dev, "userptr_events").is_some_and(|n| n >= 1));
    unmap(loose_va, P);
}

/// A client killed while gpud holds its userfaultfd and memfds: everything it handed over is
/// released with its connection, and the daemon goes on serving others.
#[test]
fn a_client_killed_with_its_userfaultfd_outstanding_leaves_nothing_behind() {
    const TEST: &str = "a_client_killed_with_its_userfaultfd_outstanding_leaves_nothing_behind";
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let dev = Device::open_at(std::path::Path::new(&sock)).expect("open");
        let buf = anon(16 * P);
        write_u32(buf, 7);
        // SAFETY: this process's own fresh memory, one thread.
        unsafe { dev.userptr_adopt(buf, 16 * P) }.expect("adopt");
        let (fd, va) = memfd_mapping(4 * P, true);
        dev.userptr_register_memfd(fd.as_fd(), va, 4 * P, 0)
            .expect("register");
        println!("registered");
        // Killed by the parent; the bound only keeps an orphan from living forever.
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let d = Daemon::start();
    let other = d.device();
    let (g, mine) = gpu_tests::bystander(&other);
    let mut child = spawn_client(TEST, d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let ready = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("registered")));
    assert!(ready.is_some(), "child registered its memory");
    assert_eq!(device_stat(&other, "userptr_clients"), Some(1));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while device_stat(&other, "userptr_clients") != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = other.stats().expect("stats");
    assert_eq!(stat(&stats, "userptr_clients"), Some(0), "{stats}");
    assert_eq!(stat(&stats, "clients"), Some(1), "{stats}");
    g.store(&[(0x10_0000, 0x5AFE)]);
    assert_eq!(
        gpu_tests::read_u32(&mine, 0),
        0x5AFE,
        "the other client is unaffected"
    );
}

/// A fresh memfd, sealed against shrinking, mapped shared at exactly `addr` (over whatever was
/// there).
fn memfd_at(addr: u64, len: u64) -> OwnedFd {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("t2", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).expect("memfd");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    fcntl_add_seals(&fd, SealFlags::SHRINK).expect("seal");
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: `addr` is test memory this process just unmapped; nothing refers to it.
    unsafe {
        rustix::mm::mmap(
            addr as *mut _,
            len as usize,
            prot,
            MapFlags::SHARED | MapFlags::FIXED,
            &fd,
            0,
        )
    }
    .expect("mmap fixed");
    fd
}

/// The GPU reads and writes the client's own memory through MAP_USERPTR, and follows a CPU-side
/// change: after the range is unmapped and a different memfd is mapped (and registered) at the
/// same address, the GPU reads the new page, not the old one.
#[test]
fn the_gpu_uses_the_clients_own_pages_and_follows_a_remap() {
    use libgpu::cmd::Batch;
    use libgpu::flags::VmCreateFlags;
    const UVA: u64 = 0x40_0000;
    const OUT: u64 = 0x80_0000;
    let d = Daemon::start();
    let dev = d.device();
    let g = gpu_tests::Gpu::new(&dev, VmCreateFlags::empty());
    let out = gpu_tests::sys_bo(&dev, P);
    g.vm.bind().map(&out, 0, OUT, P).submit().expect("bind out");
    let buf = anon(4 * P);
    write_u32(buf, 0x1111);
    // SAFETY: this thread's own fresh memory.
    unsafe { dev.userptr_adopt(buf, 4 * P) }.expect("adopt");
    g.vm.bind()
        .map_userptr(buf, UVA, 4 * P)
        .submit()
        .expect("bind userptr");
    let mut b = Batch::new();
    b.copy(UVA, OUT, 4).store_dword(UVA + P, 0x2222).batch_end();
    assert!(g.run_dwords(b.dwords()).expect("exec"), "the batch ran");
    assert_eq!(
        gpu_tests::read_u32(&out, 0),
        0x1111,
        "the GPU read the CPU's data"
    );
    assert_eq!(read_u32(buf + P), 0x2222, "the CPU sees the GPU's write");
    // Another page at the same address: the old one must not be what the GPU reads.
    let events = device_stat(&dev, "userptr_events").unwrap_or(0);
    unmap(buf, 4 * P);
    let fd = memfd_at(buf, 4 * P);
    write_u32(buf, 0x3333);
    // Registered at once: gpud takes the pending unmap in first.
    dev.userptr_register_memfd(fd.as_fd(), buf, 4 * P, 0)
        .expect("register the new memory");
    zapped_after(&dev, events);
    let mut b = Batch::new();
    b.copy(UVA, OUT, 4).batch_end();
    let ran = g.run_dwords(b.dwords());
    assert_eq!(
        gpu_tests::read_u32(&out, 0),
        0x3333,
        "the GPU read the old page after a remap (exec: {ran:?})"
    );
}
