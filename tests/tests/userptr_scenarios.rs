//! The shared userptr scenarios (`../shared/reference/conformance-scenarios.md`: VM-userptr-invalid,
//! FM-{once,twice,many}-userptr and -userptr-invalidate, and the userptr forms of
//! munmap-style-unbind, mmap-style-bind and large-binds), a userptr bound in two VMs of one
//! client, and a thread changing the CPU mapping while GPU jobs use it. Each runs in a separate
//! client process against a fresh daemon; the client makes its memory GPU-visible through
//! libgpu (`Device::userptr_adopt`, `userptr_register_memfd`), binds it with MAP_USERPTR and
//! checks the GPU's work with its own CPU reads.
//!
//! On the host gpud reaches only memfd-backed client memory: where a scenario maps "a fresh
//! anonymous page" over a userptr, the client maps it and adopts it again, once gpud has handled
//! the unmap event (`userptr_events` moved). No explicit rebind: the GPU must see the new pages.
//!
//! The client side needs `unsafe` for what the scenarios are about: mapping, remapping and
//! unmapping its own memory, and `Device::userptr_adopt`'s contract.

#![allow(unsafe_code)]

use gpu_tests::cpu_mem::{anon, anon_aligned, unmap};
use gpu_tests::{client_process, read_u32 as bo_u32, stat, sys_bo, BATCH_VA};
use libgpu::cmd::Batch;
use libgpu::errno::*;
use libgpu::flags::{EngineClass, VmCreateFlags, WaitOp};
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj, Timeout, Vm};
use rustix::fd::{AsFd, OwnedFd};
use rustix::mm::{MapFlags, ProtFlags};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

const P: u64 = 0x1000;
const BASE: u64 = 0x10_0000;
/// Every GPU wait of these tests: generous under CI load, finite so a hang fails the test.
const BOUND: Timeout = Timeout::Relative(20_000_000_000);
const BOUND_DUR: Duration = Duration::from_secs(20);

macro_rules! scenario {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            client_process(stringify!($name), $body);
        }
    };
}

// ---- the client's own memory ----

fn rw() -> ProtFlags {
    ProtFlags::READ | ProtFlags::WRITE
}

/// Fresh private anonymous memory mapped over `[addr, addr + len)` (MAP_FIXED), as IGT's
/// userptr-invalidate does.
fn fresh_anon_at(addr: u64, len: u64) {
    // SAFETY: `addr` is this test's own memory; nothing refers to its old pages.
    unsafe {
        rustix::mm::mmap_anonymous(
            addr as *mut _,
            len as usize,
            rw(),
            MapFlags::PRIVATE | MapFlags::FIXED,
        )
    }
    .expect("mmap fixed");
}

/// A memfd of `len` bytes sealed against shrinking.
fn sealed_memfd(len: u64) -> OwnedFd {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("u", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).expect("memfd");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    fcntl_add_seals(&fd, SealFlags::SHRINK).expect("seal");
    fd
}

/// `fd` mapped shared at exactly `addr` (MAP_FIXED, over whatever was there).
fn map_memfd_at(fd: &OwnedFd, addr: u64, len: u64) {
    // SAFETY: `addr` is this test's own memory; nothing refers to its old pages.
    unsafe {
        rustix::mm::mmap(
            addr as *mut _,
            len as usize,
            rw(),
            MapFlags::SHARED | MapFlags::FIXED,
            fd,
            0,
        )
    }
    .expect("mmap memfd fixed");
}

fn wr(addr: u64, value: u32) {
    // SAFETY: test memory, mapped and writable; the GPU may access it, hence volatile.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

fn rd(addr: u64) -> u32 {
    // SAFETY: test memory, mapped; the GPU may write it, hence volatile.
    unsafe { (addr as *const u32).read_volatile() }
}

fn adopt(dev: &Device, addr: u64, len: u64) {
    // SAFETY: this client's own private memory; no other thread touches it during the call.
    unsafe { dev.userptr_adopt(addr, len) }.expect("adopt");
}

/// Events gpud has read and handled for this client (their GPU mappings are zapped).
fn events(dev: &Device) -> u64 {
    stat(&dev.stats().expect("stats"), "userptr_events").unwrap_or(0)
}

/// Waits (bounded) until gpud handled more than `before` events of this client.
fn await_events(dev: &Device, before: u64) {
    let deadline = Instant::now() + BOUND_DUR;
    while events(dev) <= before {
        assert!(Instant::now() < deadline, "gpud never handled the unmap");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// IGT's invalidation: fresh anonymous memory over the range. Then the client makes the new
/// memory GPU-visible (adopts it) once gpud handled the unmap; it binds nothing.
fn replace_with_fresh(dev: &Device, addr: u64, len: u64) {
    let before = events(dev);
    fresh_anon_at(addr, len);
    await_events(dev, before);
    adopt(dev, addr, len);
}

/// Unmaps registered memory and waits until gpud forgot it (the kernel may hand the same
/// addresses out again at once).
fn release(dev: &Device, addr: u64, len: u64) {
    let before = events(dev);
    unmap(addr, len);
    await_events(dev, before);
}

fn gpu_mappings(dev: &Device) -> u64 {
    stat(&dev.stats().expect("stats"), "client-gpu-mappings").unwrap_or(u64::MAX)
}

// ---- GPU side ----

/// A VM with a copy queue and a batch buffer; every wait bounded. Jobs signal a syncobj, or
/// on a long-running VM (which takes only user fences) write a user fence into a BO.
struct Rig {
    vm: Vm,
    queue: ExecQueue,
    map: BoMap,
    done: Syncobj,
    /// Long-running VM: the last user-fence value used.
    fence_seq: Option<std::cell::Cell<u64>>,
    _bos: [Bo; 2],
}

/// Where [`Rig`] puts its user fence (IGT's fault-mode address).
const FENCE_VA: u64 = 0x101a_0000;

impl Rig {
    fn new(dev: &Device, flags: VmCreateFlags) -> Self {
        let vm = Vm::create(dev, flags).expect("vm");
        let batch = sys_bo(dev, P);
        let fences = sys_bo(dev, P);
        vm.bind()
            .map(&batch, 0, BATCH_VA, P)
            .map(&fences, 0, FENCE_VA, P)
            .submit()
            .expect("batch bind");
        let map = batch.mmap().expect("batch mmap");
        let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
        let done = Syncobj::create(dev, false).expect("syncobj");
        let lr = flags.contains(VmCreateFlags::LR_MODE);
        Self {
            vm,
            queue,
            map,
            done,
            fence_seq: lr.then(|| std::cell::Cell::new(0)),
            _bos: [batch, fences],
        }
    }

    /// Runs `b` and waits (bounded): `Ok(false)` when it did not signal in time, an error
    /// when the EXEC was refused or (long-running VM) the queue was reset. A syncobj does not
    /// carry a job's failure: callers that need to know end the batch with a marker store.
    fn run(&self, b: &Batch) -> libgpu::Result<bool> {
        self.map.write_dwords(0, b.dwords()).expect("batch fits");
        let Some(seq) = &self.fence_seq else {
            self.queue.exec(BATCH_VA).signal(&self.done).submit()?;
            return self.done.wait(BOUND);
        };
        let value = seq.get() + 1;
        seq.set(value);
        self.queue
            .exec(BATCH_VA)
            .user_fence(FENCE_VA, value)
            .submit()?;
        self.queue
            .wait_user_fence(FENCE_VA, WaitOp::Eq, value, u64::MAX, BOUND)
    }

    fn must_run(&self, b: &mut Batch) {
        b.batch_end();
        assert!(
            self.run(b).expect("exec"),
            "the batch did not finish in time"
        );
    }

    fn store(&self, writes: &[(u64, u32)]) {
        let mut b = Batch::new();
        for &(va, v) in writes {
            b.store_dword(va, v);
        }
        self.must_run(&mut b);
    }
}

// ---- VM-userptr-invalid ----

// Xe: a MAP_USERPTR of CPU memory that cannot be resolved fails with EFAULT and changes
// nothing. On the host "cannot be resolved" covers: not mapped, mapped but never made
// GPU-visible, and partly outside what the client registered; a client that registered no
// memory at all gets the same.
scenario!(vm_userptr_invalid, |dev| {
    let g = Rig::new(dev, VmCreateFlags::SCRATCH_PAGE);
    let bo = sys_bo(dev, P);
    let bind_err = |cpu: u64, len: u64| {
        // With a valid BO map in the same call: all or nothing.
        let e =
            g.vm.bind()
                .map(&bo, 0, BASE + 0x10_0000, P)
                .map_userptr(cpu, BASE, len)
                .submit()
                .expect_err("userptr bind of unusable memory");
        e.errno()
    };
    let before = gpu_mappings(dev);
    // No memory registered by this client yet.
    let plain = anon(4 * P);
    assert_eq!(bind_err(plain, 4 * P), EFAULT, "nothing registered");
    // IGT: mmap, munmap, MAP_USERPTR of the hole; here after registering other memory.
    let used = anon(2 * P);
    adopt(dev, used, 2 * P);
    let gone = anon(4 * P);
    adopt(dev, gone, 4 * P);
    let ev = events(dev);
    unmap(gone, 4 * P);
    await_events(dev, ev);
    assert_eq!(bind_err(gone, 4 * P), EFAULT, "unmapped");
    assert_eq!(bind_err(gone + P, P), EFAULT, "unmapped, one page");
    // Mapped but never made GPU-visible.
    assert_eq!(bind_err(plain, 4 * P), EFAULT, "not registered");
    // Partly registered: the tail runs past the adopted range.
    assert_eq!(bind_err(used + P, 2 * P), EFAULT, "straddles the end");
    // A misaligned CPU address is invalid, not a fault.
    assert_eq!(bind_err(used + 8, P), EINVAL, "misaligned");
    // The VM is unchanged: no mapping was added, stores there hit the scratch page.
    assert_eq!(gpu_mappings(dev), before, "a failed bind left mappings");
    g.store(&[(BASE, 0xBAD), (BASE + 0x10_0000, 0xBAD)]);
    assert_eq!(
        bo_u32(&bo, 0),
        0,
        "the BO half of the failed call was applied"
    );
    // And the registered memory binds.
    wr(used, 5);
    g.vm.bind()
        .map_userptr(used, BASE, 2 * P)
        .submit()
        .expect("valid userptr bind");
    g.store(&[(BASE + P, 6)]);
    assert_eq!((rd(used), rd(used + P)), (5, 6));
});

// ---- FM-{once,twice,many}-userptr[-invalidate] ----

const FM_DATA_VA: u64 = 0x1a_0000;
const FM_FENCE_VA: u64 = 0x101a_0000;
const FM_FENCE: u64 = 0xdead_beef_dead_beef;
const FM_VALUE: u32 = 0xc0ffee;
/// Bytes per data slot (IGT's per-exec struct).
const FM_SLOT: u64 = 64;

/// The fault-mode scenarios: a LR|FAULT VM, the data buffer a userptr at 0x1a0000 (bound
/// without IMMEDIATE: the GPU faults it in), exec `i` stores 0xc0ffee in slot `i` and writes
/// its user fence. With `invalidate`, after each exec the client checks the slot, maps fresh
/// memory over the buffer and adopts it (no rebind): the next exec must write into the new
/// pages; one exec more follows the last invalidation.
fn fault_mode(dev: &Device, n: u64, invalidate: bool) {
    let vm = Vm::create(dev, VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE).expect("vm");
    let batch = sys_bo(dev, P);
    let fences = sys_bo(dev, P);
    vm.bind()
        .map(&batch, 0, BATCH_VA, P)
        .map(&fences, 0, FM_FENCE_VA, P)
        .submit()
        .expect("bind batch and fences");
    let len = ((n + 1) * FM_SLOT).next_multiple_of(P);
    let data = anon(len);
    adopt(dev, data, len);
    vm.bind()
        .map_userptr(data, FM_DATA_VA, len)
        .submit()
        .expect("bind userptr");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let map = batch.mmap().expect("batch mmap");
    // Exec `i`: store into slot `i`, wait for its user fence, check with the CPU.
    let exec = |i: u64| {
        let mut b = Batch::new();
        b.store_dword(FM_DATA_VA + i * FM_SLOT, FM_VALUE)
            .batch_end();
        map.write_dwords(0, b.dwords()).expect("batch fits");
        let fence = FM_FENCE_VA + 8 * i;
        queue
            .exec(BATCH_VA)
            .user_fence(fence, FM_FENCE)
            .submit()
            .expect("exec");
        let done = queue
            .wait_user_fence(fence, WaitOp::Eq, FM_FENCE, u64::MAX, BOUND)
            .expect("user fence wait");
        assert!(done, "exec {i}: user fence not written in time");
        assert_eq!(
            rd(data + i * FM_SLOT),
            FM_VALUE,
            "exec {i}: the CPU does not see the GPU's write"
        );
    };
    for i in 0..n {
        exec(i);
        if invalidate {
            replace_with_fresh(dev, data, len);
            assert_eq!(rd(data + i * FM_SLOT), 0, "fresh memory");
        }
    }
    if invalidate {
        // One more exec after the last invalidation, so that `once` checks one too.
        exec(n);
    } else {
        for i in 0..n {
            assert_eq!(rd(data + i * FM_SLOT), FM_VALUE, "slot {i}");
        }
    }
}

scenario!(fm_once_userptr, |dev| fault_mode(dev, 1, false));
scenario!(fm_twice_userptr, |dev| fault_mode(dev, 2, false));
scenario!(fm_many_userptr, |dev| fault_mode(dev, 128, false));
scenario!(fm_once_userptr_invalidate, |dev| fault_mode(dev, 1, true));
scenario!(fm_twice_userptr_invalidate, |dev| fault_mode(dev, 2, true));
scenario!(fm_many_userptr_invalidate, |dev| fault_mode(dev, 64, true));

// The non-fault form of userptr-invalidate: every exec revalidates the userptr the previous
// invalidation took away (no rebind), and reads (copies) as well as writes the new pages.
scenario!(exec_userptr_invalidate_revalidates, |dev| {
    const OUT: u64 = 0x80_0000;
    let g = Rig::new(dev, VmCreateFlags::empty());
    let out = sys_bo(dev, P);
    g.vm.bind().map(&out, 0, OUT, P).submit().expect("bind out");
    let data = anon(2 * P);
    adopt(dev, data, 2 * P);
    g.vm.bind()
        .map_userptr(data, BASE, 2 * P)
        .submit()
        .expect("bind userptr");
    for i in 0..8u32 {
        wr(data, 0x100 + i);
        let mut b = Batch::new();
        b.copy(BASE, OUT + 4 * u64::from(i), 4)
            .store_dword(BASE + P, 0x200 + i);
        g.must_run(&mut b);
        assert_eq!(
            bo_u32(&out, 4 * i as usize),
            0x100 + i,
            "round {i}: GPU read"
        );
        assert_eq!(rd(data + P), 0x200 + i, "round {i}: CPU read");
        replace_with_fresh(dev, data, 2 * P);
    }
});

// ---- one userptr in two VMs of one client ----

scenario!(userptr_in_two_vms, |dev| {
    const UA: u64 = 0x40_0000;
    const UB: u64 = 0x90_0000;
    const OUT: u64 = 0x80_0000;
    let a = Rig::new(dev, VmCreateFlags::empty());
    let b = Rig::new(dev, VmCreateFlags::empty());
    let (out_a, out_b) = (sys_bo(dev, P), sys_bo(dev, P));
    a.vm.bind().map(&out_a, 0, OUT, P).submit().expect("bind");
    b.vm.bind().map(&out_b, 0, OUT, P).submit().expect("bind");
    let buf = anon(2 * P);
    adopt(dev, buf, 2 * P);
    a.vm.bind()
        .map_userptr(buf, UA, 2 * P)
        .submit()
        .expect("bind in A");
    b.vm.bind()
        .map_userptr(buf, UB, 2 * P)
        .submit()
        .expect("bind in B");
    // A writes, B reads the same page, the CPU sees both.
    a.store(&[(UA + P, 0xA1)]);
    let mut copy = Batch::new();
    copy.copy(UB + P, OUT, 4).store_dword(UB + P + 4, 0xB1);
    b.must_run(&mut copy);
    assert_eq!(bo_u32(&out_b, 0), 0xA1, "B reads A's write");
    assert_eq!((rd(buf + P), rd(buf + P + 4)), (0xA1, 0xB1));
    // One CPU-side change invalidates the userptr in both VMs.
    for round in 0..2u32 {
        replace_with_fresh(dev, buf, 2 * P);
        wr(buf, 0x2000 + round);
        for (name, g, out) in [("A", &a, &out_a), ("B", &b, &out_b)] {
            let va = if name == "A" { UA } else { UB };
            let mut copy = Batch::new();
            copy.copy(va, OUT + 4, 4);
            g.must_run(&mut copy);
            assert_eq!(
                bo_u32(out, 4),
                0x2000 + round,
                "VM {name} reads the old page after round {round}"
            );
        }
    }
});

// ---- userptr forms of munmap-style-unbind, mmap-style-bind, large-binds ----

/// IGT's shapes: (name, pages, binds, first page, page count).
const SHAPES: [(&str, u64, u64, u64, u64); 6] = [
    ("all", 4, 2, 0, 4),
    ("one-partial", 4, 1, 1, 2),
    ("either-side-partial", 4, 2, 1, 2),
    ("either-side-full", 4, 4, 1, 2),
    ("end", 4, 2, 0, 3),
    ("front", 4, 2, 1, 3),
];

/// Binds `[cpu, cpu + pages)` at `va` as `binds` userptr pieces.
fn bind_pieces(g: &Rig, cpu: u64, va: u64, pages: u64, binds: u64) {
    let per = pages / binds;
    let mut bind = g.vm.bind();
    for j in 0..binds {
        bind = bind.map_userptr(cpu + j * per * P, va + j * per * P, per * P);
    }
    bind.submit().expect("bind pieces");
}

fn store_all(g: &Rig, va: u64, pages: u64, tag: u32) {
    let writes: Vec<(u64, u32)> = (0..pages).map(|p| (va + p * P, tag + p as u32)).collect();
    g.store(&writes);
}

scenario!(munmap_style_unbind_userptr, |dev| {
    for (shape, pages, binds, first, count) in SHAPES {
        let g = Rig::new(dev, VmCreateFlags::SCRATCH_PAGE);
        let buf = anon(pages * P);
        adopt(dev, buf, pages * P);
        bind_pieces(&g, buf, BASE, pages, binds);
        store_all(&g, BASE, pages, 0x100);
        for p in 0..pages {
            assert_eq!(rd(buf + p * P), 0x100 + p as u32, "{shape}: page {p}");
        }
        g.vm.bind()
            .unmap(BASE + first * P, count * P)
            .submit()
            .expect("unbind");
        store_all(&g, BASE, pages, 0x200);
        let hole = first..first + count;
        for p in 0..pages {
            let want = if hole.contains(&p) { 0x100 } else { 0x200 } + p as u32;
            assert_eq!(rd(buf + p * P), want, "{shape}: after the unbind, page {p}");
        }
        g.vm.bind()
            .map_userptr(buf + first * P, BASE + first * P, count * P)
            .submit()
            .expect("rebind the hole");
        store_all(&g, BASE, pages, 0x300);
        for p in 0..pages {
            assert_eq!(
                rd(buf + p * P),
                0x300 + p as u32,
                "{shape}: rebound, page {p}"
            );
        }
        release(dev, buf, pages * P);
    }
});

scenario!(mmap_style_bind_userptr, |dev| {
    for (shape, pages, binds, first, count) in SHAPES {
        if shape == "either-side-full" {
            continue; // not an mmap-style-bind shape
        }
        let g = Rig::new(dev, VmCreateFlags::SCRATCH_PAGE);
        let (a, b) = (anon(pages * P), anon(pages * P));
        adopt(dev, a, pages * P);
        adopt(dev, b, pages * P);
        bind_pieces(&g, a, BASE, pages, binds);
        g.vm.bind()
            .map_userptr(b + first * P, BASE + first * P, count * P)
            .submit()
            .expect("bind b over a");
        store_all(&g, BASE, pages, 0x400);
        let over = first..first + count;
        for p in 0..pages {
            let (hit, miss) = if over.contains(&p) { (b, a) } else { (a, b) };
            assert_eq!(rd(hit + p * P), 0x400 + p as u32, "{shape}: page {p}");
            assert_eq!(rd(miss + p * P), 0, "{shape}: page {p} in the wrong memory");
        }
        release(dev, a, pages * P);
        release(dev, b, pages * P);
    }
});

/// IGT large-userptr-binds / large-userptr-split-binds: a 2 MiB-aligned userptr of `size`
/// bound at 1 GiB, 16 stores at size/16 strides plus the last page, checked by CPU reads.
fn large_userptr(dev: &Device, size: u64, split: bool) {
    const VA: u64 = 0x4000_0000;
    let g = Rig::new(dev, VmCreateFlags::SCRATCH_PAGE);
    let buf = anon_aligned(size, 2 << 20);
    adopt(dev, buf, size);
    let mut bind = g.vm.bind();
    if split {
        bind = bind.map_userptr(buf, VA, size / 2).map_userptr(
            buf + size / 2,
            VA + size / 2,
            size / 2,
        );
    } else {
        bind = bind.map_userptr(buf, VA, size);
    }
    bind.submit().expect("large userptr bind");
    let mut offsets: Vec<u64> = (0..16).map(|i| i * size / 16 + 4 * i).collect();
    offsets.push(size - 4);
    let writes: Vec<(u64, u32)> = offsets
        .iter()
        .map(|&o| (VA + o, 0x5000 + (o >> 12) as u32))
        .collect();
    g.store(&writes);
    for &o in &offsets {
        assert_eq!(rd(buf + o), 0x5000 + (o >> 12) as u32, "offset {o:#x}");
    }
    if split {
        g.vm.bind()
            .unmap(VA, size / 2)
            .submit()
            .expect("unbind one half");
    } else {
        g.vm.bind().unmap(VA, size).submit().expect("unbind");
    }
    g.store(&[(VA + 8, 0xDEAD), (VA + size - 8, 0xBEEF)]);
    assert_eq!(rd(buf + 8), 0, "front unmapped");
    let want_last = if split { 0xBEEF } else { 0 };
    assert_eq!(rd(buf + size - 8), want_last, "last page");
}

scenario!(large_userptr_binds_2m, |dev| large_userptr(
    dev,
    2 << 20,
    false
));
scenario!(large_userptr_binds_8m, |dev| large_userptr(
    dev,
    8 << 20,
    false
));
scenario!(large_userptr_split_binds_4m, |dev| large_userptr(
    dev,
    4 << 20,
    true
));

// ---- the CPU-mapping race ----

/// A thread of the client changes the CPU mapping of a bound userptr in a loop while GPU jobs
/// store into it and copy from it. Page 0 is remapped onto the *same* memfd page (its contents
/// persist, as in IGT's race variant): every job that completed must have its store there (no
/// lost write). Page 1 is replaced by a new memfd carrying a generation number: a job that
/// completed must have read a generation at least as new as the one registered before it was
/// submitted (no stale page). A job ends with a marker store into a BO, so a job that ran to
/// its end is told from one the GPU aborted. Jobs that meet the range between an unmap and
/// the registration may fail (EFAULT at EXEC; a GPU fault, which a fault-mode VM resolves by
/// refaulting if the memory is registered again by then); every wait is bounded and, once
/// the thread stops, a job sees the final pages.
fn mapping_race(dev: &Device, flags: VmCreateFlags) {
    const UVA: u64 = 0x40_0000;
    const OUT: u64 = 0x80_0000;
    const MARK: u64 = OUT + 2 * P;
    const JOBS: u32 = 300;
    let stable = sealed_memfd(P);
    let buf = anon(2 * P);
    map_memfd_at(&stable, buf, P);
    let first = sealed_memfd(P);
    map_memfd_at(&first, buf + P, P);
    wr(buf + P, 1);
    dev.userptr_register_memfd(stable.as_fd(), buf, P, 0)
        .expect("register page 0");
    dev.userptr_register_memfd(first.as_fd(), buf + P, P, 0)
        .expect("register page 1");
    let mut g = Rig::new(dev, flags);
    let out = sys_bo(dev, 4 * P);
    g.vm.bind()
        .map(&out, 0, OUT, 4 * P)
        .submit()
        .expect("bind out");
    g.vm.bind()
        .map_userptr(buf, UVA, 2 * P)
        .submit()
        .expect("bind userptr");
    let generation = AtomicU32::new(1);
    let stop = AtomicBool::new(false);
    let (mut done, mut refused, mut failed) = (0u32, 0u32, 0u32);
    std::thread::scope(|s| {
        // Stops the remapper however the jobs' loop ends (a failed assertion included).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let remapper = s.spawn(|| {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Acquire) {
                let gen = generation.load(Ordering::Acquire) + 1;
                let fresh = sealed_memfd(P);
                let before = events(dev);
                map_memfd_at(&stable, buf, P);
                map_memfd_at(&fresh, buf + P, P);
                wr(buf + P, gen);
                let deadline = Instant::now() + BOUND_DUR;
                while events(dev) < before + 2 {
                    assert!(Instant::now() < deadline, "gpud never handled the unmaps");
                    std::thread::yield_now();
                }
                dev.userptr_register_memfd(stable.as_fd(), buf, P, 0)
                    .expect("re-register page 0");
                dev.userptr_register_memfd(fresh.as_fd(), buf + P, P, 0)
                    .expect("register page 1");
                generation.store(gen, Ordering::Release);
                rounds += 1;
                // Let some jobs meet a stable mapping, others the change.
                std::thread::sleep(Duration::from_micros(500));
            }
            rounds
        });
        let _stop = Stop(&stop);
        let started = Instant::now();
        for i in 0..JOBS {
            let seen = generation.load(Ordering::Acquire);
            let slot = 4 * u64::from(i);
            let mut b = Batch::new();
            b.store_dword(UVA + slot, 0x1_0000 + i)
                .copy(UVA + P, OUT + slot, 4)
                .store_dword(MARK + slot, 1)
                .batch_end();
            match g.run(&b) {
                Ok(true) if bo_u32(&out, (MARK + slot - OUT) as usize) == 1 => {
                    done += 1;
                    assert_eq!(rd(buf + slot), 0x1_0000 + i, "job {i}: its store was lost");
                    let got = bo_u32(&out, slot as usize);
                    assert!(
                        // The remapper writes a generation before registering it and
                        // publishes it after: at most one ahead of the published one.
                        got >= seen && got <= generation.load(Ordering::Acquire) + 1,
                        "job {i}: read generation {got}, {seen} was current at submission"
                    );
                }
                Err(e) if e.errno() == EFAULT => refused += 1,
                Ok(true) | Err(_) => {
                    // The GPU aborted the job (it met a zapped page it could not fault
                    // in): the queue may be banned, take a new one.
                    failed += 1;
                    g.queue = ExecQueue::create(&g.vm, EngineClass::Copy).expect("queue");
                }
                Ok(false) => {
                    // Unwinding would destroy the queue and VM, and those calls wait for the
                    // stuck job: report and end this client process here.
                    let stats = dev.stats().unwrap_or_default();
                    eprintln!("job {i} neither finished nor failed in time\n{stats}");
                    std::process::exit(3);
                }
            }
            assert!(started.elapsed() < 3 * BOUND_DUR, "the race takes too long");
        }
        drop(_stop);
        let rounds = remapper.join().expect("remapper");
        eprintln!("race: {rounds} remaps, {done} jobs done, {refused} refused, {failed} failed");
        assert!(rounds > 0, "the remapper never ran");
    });
    // Quiet now: a job completes and sees the last pages.
    let last = generation.load(Ordering::Acquire);
    let slot = 4 * u64::from(JOBS);
    let mut b = Batch::new();
    b.store_dword(UVA + slot, 0xF1A1)
        .copy(UVA + P, OUT + slot, 4)
        .store_dword(MARK + slot, 1);
    g.must_run(&mut b);
    assert_eq!(
        bo_u32(&out, (MARK + slot - OUT) as usize),
        1,
        "the last job ran"
    );
    assert_eq!(rd(buf + slot), 0xF1A1, "the last job's store");
    assert_eq!(
        bo_u32(&out, slot as usize),
        last,
        "stale page after the race"
    );
    assert!(done > 0, "no job completed during the race");
}

scenario!(userptr_cpu_mapping_race, |dev| mapping_race(
    dev,
    VmCreateFlags::empty()
));
scenario!(userptr_cpu_mapping_race_fault_mode, |dev| mapping_race(
    dev,
    VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE
));
