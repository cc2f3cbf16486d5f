//! The `userptr` group: userptr end to end on the Linux host — gpud's host platform on a
//! thread, libgpu as the client making its own memory GPU-visible and binding it with
//! MAP_USERPTR.
//!
//! Keys (medians; see `docs/svm.md`, "Benchmarks"):
//! - `bind_{4k,64k,2m,64m}_us` and `bind_{…}_pages_per_s`: a synchronous MAP_USERPTR of memory
//!   the client registered (resolving the pages through its memfd, writing the PTEs), the
//!   unmap not counted.
//! - `invalidate_remap_call_us`: the client's `mmap(MAP_FIXED)` of new memory over a bound
//!   userptr (the kernel returns once gpud has *read* the unmap event);
//!   `invalidate_handled_us`: from that call until gpud handled the event (the GPU mapping
//!   zapped, the TLB invalidated: the notifier's part, seen by polling a counter, so it
//!   includes a stats round trip); `invalidate_to_gpu_new_page_us`: from the remap until a
//!   job has read the new page (handled, new memory registered, EXEC revalidation, the job).
//! - `exec_valid_us` / `exec_revalidate_us`: EXEC + wait of a job reading one dword of the
//!   userptr, with the userptr valid, and with it invalidated before (the new memory already
//!   registered: the EXEC resolves and rebinds it).
//! - `gpu_read_userptr_mib_per_s` / `gpu_read_bo_mib_per_s`: a job copying 8 MiB from a
//!   userptr, and from a system BO, into a BO.

use crate::report::{median_ns, Report};
use gpud::platform::host::{HostConfig, HostDaemon};
use libgpu::cmd::Batch;
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj, Timeout, Vm};
use rustix::fd::{AsFd, OwnedFd};
use rustix::mm::{MapFlags, ProtFlags};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PAGE: u64 = 0x1000;
const BATCH_VA: u64 = 0x7f_0000_0000;
const UVA: u64 = 0x1_0000_0000;
const OUT_VA: u64 = 0x2_0000_0000;
const SRC_VA: u64 = 0x3_0000_0000;
const MIB: u64 = 1 << 20;
const COPY_BYTES: u64 = 8 * MIB;
const WAIT: Timeout = Timeout::Relative(10_000_000_000);

/// Runs the group (nothing but the name where the daemon or userfaultfd is unavailable).
pub fn userptr() -> Report {
    let mut r = Report::new("userptr");
    let path = std::env::temp_dir().join(format!("gpu-bench-userptr-{}.sock", std::process::id()));
    let mut cfg = HostConfig::new(Some(path.clone()));
    cfg.device.sys_size = 256 * MIB;
    let Ok(mut daemon) = HostDaemon::start(cfg) else {
        return r;
    };
    let stop = daemon.stopper();
    let thread = std::thread::spawn(move || daemon.serve());
    if let Ok(dev) = Device::open_at(&path) {
        if measure(&dev, &mut r).is_none() {
            r.push("error", "a userptr step failed");
        }
    }
    stop.store(true, Ordering::Release);
    let _ = thread.join();
    r
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A memfd of `len` bytes sealed against shrinking, mapped shared (at `at`, or anywhere).
fn memfd_mapping(len: u64, at: Option<u64>) -> Option<(OwnedFd, u64)> {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("bench", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ok()?;
    rustix::fs::ftruncate(&fd, len).ok()?;
    fcntl_add_seals(&fd, SealFlags::SHRINK).ok()?;
    let (addr, flags) = match at {
        Some(a) => (a as *mut _, MapFlags::SHARED | MapFlags::FIXED),
        None => (std::ptr::null_mut(), MapFlags::SHARED),
    };
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: either a fresh mapping where the kernel chooses, or (`at`) over memory this
    // benchmark mapped itself and nothing else refers to.
    let p = unsafe { rustix::mm::mmap(addr, len as usize, prot, flags, &fd, 0) }.ok()?;
    Some((fd, p as u64))
}

fn unmap(addr: u64, len: u64) {
    // SAFETY: memory this benchmark mapped; nothing refers to it any more.
    let _ = unsafe { rustix::mm::munmap(addr as *mut _, len as usize) };
}

fn write_u32(addr: u64, v: u32) {
    // SAFETY: a mapped, writable page of this benchmark's memory.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

fn events(dev: &Device) -> Option<u64> {
    let text = dev.stats().ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "userptr_events").then(|| v.trim().parse().ok())?
    })
}

/// Polls until gpud handled more than `before` events (bounded).
fn await_events(dev: &Device, before: u64) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while events(dev)? <= before {
        if Instant::now() > deadline {
            return None;
        }
        std::hint::spin_loop();
    }
    Some(())
}

/// A VM with a copy queue, a batch buffer and an output BO.
struct Rig {
    vm: Vm,
    queue: ExecQueue,
    map: BoMap,
    done: Syncobj,
    out: Bo,
    _batch: Bo,
}

impl Rig {
    fn new(dev: &Device) -> Option<Self> {
        let vm = Vm::create(dev, VmCreateFlags::empty()).ok()?;
        let batch = Bo::create(dev, PAGE, Placement::SYSTEM, BoCreateFlags::empty()).ok()?;
        let out = Bo::create(dev, COPY_BYTES, Placement::SYSTEM, BoCreateFlags::empty()).ok()?;
        vm.bind()
            .map(&batch, 0, BATCH_VA, PAGE)
            .map(&out, 0, OUT_VA, COPY_BYTES)
            .submit()
            .ok()?;
        Some(Self {
            queue: ExecQueue::create(&vm, EngineClass::Copy).ok()?,
            map: batch.mmap().ok()?,
            done: Syncobj::create(dev, false).ok()?,
            vm,
            out,
            _batch: batch,
        })
    }

    fn set_batch(&self, b: &Batch) -> Option<()> {
        self.map.write_dwords(0, b.dwords()).ok()
    }

    /// EXEC of the batch set, waited for.
    fn run(&self) -> Option<()> {
        self.queue.exec(BATCH_VA).signal(&self.done).submit().ok()?;
        self.done.wait(WAIT).ok()?.then_some(())
    }

    fn out_u32(&self, offset: usize) -> Option<u32> {
        self.out.mmap().ok()?.read_u32(offset).ok()
    }
}

fn measure(dev: &Device, r: &mut Report) -> Option<()> {
    let rig = Rig::new(dev)?;
    bind_sizes(dev, &rig, r)?;
    invalidation(dev, &rig, r)?;
    bandwidth(dev, &rig, r)
}

fn bind_sizes(dev: &Device, rig: &Rig, r: &mut Report) -> Option<()> {
    for (name, size, n) in [
        ("4k", 4 * 1024, 500),
        ("64k", 64 * 1024, 300),
        ("2m", 2 * MIB, 50),
        ("64m", 64 * MIB, 5),
    ] {
        let (fd, addr) = memfd_mapping(size, None)?;
        dev.userptr_register_memfd(fd.as_fd(), addr, size, 0).ok()?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            rig.vm.bind().map_userptr(addr, UVA, size).submit().ok()?;
            samples.push(t.elapsed().as_nanos() as u64);
            rig.vm.bind().unmap(UVA, size).submit().ok()?;
        }
        let ns = median_ns(&mut samples).max(1);
        r.push(&format!("bind_{name}_us"), us(ns));
        r.push(
            &format!("bind_{name}_pages_per_s"),
            (size / PAGE) as f64 * 1e9 / ns as f64,
        );
        let before = events(dev)?;
        unmap(addr, size);
        await_events(dev, before)?;
    }
    Some(())
}

fn invalidation(dev: &Device, rig: &Rig, r: &mut Report) -> Option<()> {
    const ROUNDS: usize = 100;
    let len = 4 * PAGE;
    let (fd, addr) = memfd_mapping(len, None)?;
    dev.userptr_register_memfd(fd.as_fd(), addr, len, 0).ok()?;
    rig.vm.bind().map_userptr(addr, UVA, len).submit().ok()?;
    let mut read = Batch::new();
    read.copy(UVA, OUT_VA, 4).batch_end();
    rig.set_batch(&read)?;
    rig.run()?;
    let mut valid = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        rig.run()?;
        valid.push(t.elapsed().as_nanos() as u64);
    }
    let (mut call, mut handled, mut to_gpu, mut reval) = (vec![], vec![], vec![], vec![]);
    // gpud holds its own descriptor of every registered memfd; the mappings keep the rest.
    drop(fd);
    for round in 0..ROUNDS as u32 {
        // Timed from the remap to the job that read the new page.
        let before = events(dev)?;
        let t = Instant::now();
        let (fd, _) = memfd_mapping(len, Some(addr))?;
        call.push(t.elapsed().as_nanos() as u64);
        await_events(dev, before)?;
        handled.push(t.elapsed().as_nanos() as u64);
        write_u32(addr, 0x1000 + round);
        dev.userptr_register_memfd(fd.as_fd(), addr, len, 0).ok()?;
        rig.run()?;
        to_gpu.push(t.elapsed().as_nanos() as u64);
        if rig.out_u32(0)? != 0x1000 + round {
            return None;
        }
        drop(fd);
        // Invalidated again, the new memory registered: the EXEC alone revalidates.
        let before = events(dev)?;
        let (fd, _) = memfd_mapping(len, Some(addr))?;
        await_events(dev, before)?;
        dev.userptr_register_memfd(fd.as_fd(), addr, len, 0).ok()?;
        let t = Instant::now();
        rig.run()?;
        reval.push(t.elapsed().as_nanos() as u64);
    }
    r.push("invalidate_remap_call_us", us(median_ns(&mut call)));
    r.push("invalidate_handled_us", us(median_ns(&mut handled)));
    r.push("invalidate_to_gpu_new_page_us", us(median_ns(&mut to_gpu)));
    r.push("exec_valid_us", us(median_ns(&mut valid)));
    r.push("exec_revalidate_us", us(median_ns(&mut reval)));
    rig.vm.bind().unmap(UVA, len).submit().ok()?;
    let before = events(dev)?;
    unmap(addr, len);
    await_events(dev, before)
}

fn bandwidth(dev: &Device, rig: &Rig, r: &mut Report) -> Option<()> {
    const ROUNDS: usize = 10;
    let (fd, addr) = memfd_mapping(COPY_BYTES, None)?;
    dev.userptr_register_memfd(fd.as_fd(), addr, COPY_BYTES, 0)
        .ok()?;
    rig.vm
        .bind()
        .map_userptr(addr, UVA, COPY_BYTES)
        .submit()
        .ok()?;
    let src = Bo::create(dev, COPY_BYTES, Placement::SYSTEM, BoCreateFlags::empty()).ok()?;
    rig.vm
        .bind()
        .map(&src, 0, SRC_VA, COPY_BYTES)
        .submit()
        .ok()?;
    for (key, from) in [
        ("gpu_read_userptr_mib_per_s", UVA),
        ("gpu_read_bo_mib_per_s", SRC_VA),
    ] {
        let mut b = Batch::new();
        b.copy(from, OUT_VA, COPY_BYTES).batch_end();
        rig.set_batch(&b)?;
        rig.run()?;
        let mut samples = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            rig.run()?;
            samples.push(t.elapsed().as_nanos() as u64);
        }
        let ns = median_ns(&mut samples).max(1);
        r.push(key, (COPY_BYTES / MIB) as f64 * 1e9 / ns as f64);
    }
    rig.vm.bind().unmap(UVA, COPY_BYTES).submit().ok()?;
    let before = events(dev)?;
    unmap(addr, COPY_BYTES);
    await_events(dev, before)
}
