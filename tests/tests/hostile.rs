//! Hostile clients, end to end: a client that misbehaves hurts only itself. Each test pins
//! one attack a client could mount against `gpud serve` (several clients on one daemon).

use gpu_scheme::uapi::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use gpu_tests::{bystander, read_u32, sys_bo, Daemon, BATCH_VA};
use libgpu::cmd::{Batch, SemOp};
use libgpu::{Bo, ExecQueue, Syncobj, Timeout, Vm};

/// Where a VM's first exec queue had its fence page when fence pages were mapped (writable)
/// in client VMs: the top 4 GiB of the 48-bit VA space, reserved then, the client's now.
const OLD_FENCE_VA: u64 = (1 << 48) - (1 << 32);
/// The attacker's VRAM BO, the memory the eviction frees.
const TARGET_VA: u64 = 0x10_0000_0000;
/// The attacker's system BO: gate at +0, what the spinner read at +4 KiB.
const OUT_VA: u64 = 0x20_0000_0000;
const MIB: u64 = 1 << 20;

/// The breach of the issue starts with a batch that forges its completion by writing its
/// fence page and then spins (the daemon, thinking its BOs idle, would evict them for another
/// client and the spinner would reach the freed VRAM): here the forged write must stop the
/// batch, never let it run on past a completion the daemon believed.
#[test]
fn a_forged_completion_never_leaks_another_clients_memory() {
    let daemon = Daemon::start();
    let attacker = daemon.device();

    let vm = Vm::create(&attacker, VmCreateFlags::empty()).expect("vm");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let batch = sys_bo(&attacker, 0x1000);
    let out = sys_bo(&attacker, 0x2000);
    let target = Bo::create(
        &attacker,
        8 * MIB,
        Placement::VRAM | Placement::SYSTEM,
        BoCreateFlags::empty(),
    )
    .expect("target BO");
    vm.bind()
        .map(&batch, 0, BATCH_VA, 0x1000)
        .map(&out, 0, OUT_VA, 0x2000)
        .map(&target, 0, TARGET_VA, 8 * MIB)
        .submit()
        .expect("bind");
    let mut b = Batch::new();
    b.store_qword(OLD_FENCE_VA, u64::MAX / 2)
        .store_dword(OUT_VA + 0x1000 - 8, 1)
        .semaphore_wait(OUT_VA, SemOp::Eq, 1, true)
        .copy(TARGET_VA, OUT_VA + 0x1000, 0x1000)
        .fill(TARGET_VA, 0x1000, 0)
        .batch_end();
    batch.mmap().unwrap().write_dwords(0, b.dwords()).unwrap();
    let done = Syncobj::create(&attacker, false).expect("syncobj");
    queue.exec(BATCH_VA).signal(&done).submit().expect("exec");
    // Whether the job failed (its forged write faulted) or was "retired" by the forgery,
    // its syncobj is signalled soon; a job still honestly blocked leaves it unsignalled.
    let _ = done.wait(Timeout::Relative(2_000_000_000));
    let view = out.mmap().unwrap();
    assert_eq!(
        view.read_u32(0x1000 - 8).unwrap(),
        0,
        "the batch ran on past its forged completion"
    );
}

/// SYNCOBJ_SIGNAL of timeline points used to grow the daemon without bound (2 M points added
/// 843 MB). Points that signalled cost nothing once a later one exists; points held behind an
/// unsignalled one are charged to the client, which gets ENOSPC past its limit and can go on
/// once the gate signals. Another client is not affected.
#[test]
fn timeline_points_are_charged_and_bounded() {
    const LIMIT: u64 = 256;
    let daemon = Daemon::start_with(|cfg| cfg.limits.timeline_points = LIMIT);
    let dev = daemon.device();
    let s = Syncobj::create(&dev, false).expect("syncobj");
    // Signalled points: far more than the limit, all collected.
    for point in 1..=4 * LIMIT {
        s.signal_point(point)
            .expect("a signalled point costs nothing");
    }
    // A pending point (transferred from an unsignalled syncobj's binary fence) holds every
    // later point linked.
    let gate = Syncobj::create(&dev, false).expect("gate");
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let (batch, flag) = (sys_bo(&dev, 0x1000), sys_bo(&dev, 0x1000));
    vm.bind()
        .map(&batch, 0, BATCH_VA, 0x1000)
        .map(&flag, 0, OUT_VA, 0x1000)
        .submit()
        .expect("bind");
    let mut b = Batch::new();
    b.semaphore_wait(OUT_VA, SemOp::Eq, 1, true).batch_end();
    batch.mmap().unwrap().write_dwords(0, b.dwords()).unwrap();
    queue
        .exec(BATCH_VA)
        .signal(&gate)
        .submit()
        .expect("spinner");
    let mut next = 4 * LIMIT + 1;
    gate.transfer(0, &s, next, false).expect("pending point");
    let mut refused = None;
    for _ in 0..2 * LIMIT {
        next += 1;
        if let Err(e) = s.signal_point(next) {
            refused = Some(e.errno());
            break;
        }
    }
    assert_eq!(
        refused,
        Some(libgpu::errno::ENOSPC),
        "points behind a pending one must be charged"
    );
    assert!(
        next - 4 * LIMIT <= LIMIT + 1,
        "refused only after {next} points"
    );
    // Another client is not charged for them.
    let other = daemon.device();
    let t = Syncobj::create(&other, false).expect("other syncobj");
    t.signal_point(1).expect("another client's point");
    // The gate signals: the points are collected and the client may go on.
    flag.mmap().unwrap().write_dwords(0, &[1]).unwrap();
    assert!(gate.wait(Timeout::Relative(5_000_000_000)).expect("wait"));
    s.signal_point(next)
        .expect("room again once the points signalled");
}

/// Threads of this process (the test's daemon runs in it).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Creating and destroying a bind queue used to leave a daemon thread behind per cycle (500
/// cycles → 507 threads): bind queues now cost no thread, and the VM forgets destroyed ones.
#[test]
fn bind_queue_churn_leaves_no_thread_behind() {
    let daemon = Daemon::start();
    let dev = daemon.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(&dev, 0x1000);
    let cycle = |i: u64| {
        let q = ExecQueue::create(&vm, EngineClass::VmBind).expect("bind queue");
        let done = Syncobj::create(&dev, false).expect("syncobj");
        let va = 0x1_0000_0000 + (i % 16) * 0x1000;
        vm.bind()
            .queue(&q)
            .map(&bo, 0, va, 0x1000)
            .signal(&done)
            .submit()
            .expect("bind on the queue");
        assert!(done.wait(Timeout::Relative(5_000_000_000)).expect("wait"));
        vm.bind().unmap(va, 0x1000).submit().expect("unmap");
        q.destroy().expect("destroy");
    };
    cycle(0);
    let before = threads();
    for i in 1..500 {
        cycle(i);
    }
    let after = threads();
    assert!(
        after <= before + 2,
        "bind queue churn grew the daemon from {before} to {after} threads"
    );
}

/// Page tables a client's binds create are charged to its system memory: a client mapping a
/// page in a new 1 GiB region per bind (two new table pages each) is refused with ENOSPC once
/// its BOs and tables reach its limit, unmapping gives the room back, and another client binds
/// on.
#[test]
fn page_tables_are_charged_to_the_client_that_causes_them() {
    const LIMIT: u64 = 512 << 10;
    let daemon = Daemon::start_with(|cfg| cfg.limits.system_bytes = LIMIT);
    let dev = daemon.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(&dev, 0x1000);
    let region = |i: u64| 0x40_0000_0000 + i * (1 << 30);
    let mut refused = None;
    let mut mapped = 0;
    for i in 0..1024 {
        match vm.bind().map(&bo, 0, region(i), 0x1000).submit() {
            Ok(()) => mapped += 1,
            Err(e) => {
                refused = Some(e.errno());
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(libgpu::errno::ENOSPC),
        "tables are never charged"
    );
    // Two table pages per bind: refused near LIMIT / 8 KiB, not after 1024 binds.
    assert!(
        mapped <= LIMIT / 0x2000 + 1,
        "refused only after {mapped} binds"
    );
    let other = daemon.device();
    let ovm = Vm::create(&other, VmCreateFlags::empty()).expect("other vm");
    let obo = sys_bo(&other, 0x1000);
    ovm.bind()
        .map(&obo, 0, region(0), 0x1000)
        .submit()
        .expect("another client binds on");
    for i in 0..mapped {
        vm.bind().unmap(region(i), 0x1000).submit().expect("unmap");
    }
    vm.bind()
        .map(&bo, 0, region(0), 0x1000)
        .submit()
        .expect("room again once the tables went");
}

/// One client creating 63 VMs used to take every hardware context: every other client's
/// VM_CREATE failed with EBUSY until gpud restarted. Contexts are now assigned when a VM's
/// work runs and taken back from idle VMs: the attacker holds more VMs than the device has
/// contexts and runs work on each, another client still creates a VM and runs its job, and
/// every VM (the attacker's included, after their contexts were taken and given back) sees
/// only its own memory.
#[test]
fn more_vms_than_hardware_contexts_leave_others_working() {
    const VMS: u32 = 70;
    let daemon = Daemon::start();
    let attacker = daemon.device();
    let held: Vec<_> = (0..VMS).map(|_| bystander(&attacker)).collect();
    for (i, (g, _)) in held.iter().enumerate() {
        g.store(&[(0x10_0000, 0x1000 + i as u32)]);
    }
    let other = daemon.device();
    let (g, mine) = bystander(&other);
    g.store(&[(0x10_0000, 0xabcd)]);
    assert_eq!(read_u32(&mine, 0), 0xabcd, "the other client's job ran");
    // Every attacker VM runs again (most on a context another VM used in between) and reads
    // and writes its own memory only.
    for (i, (g, bo)) in held.iter().enumerate() {
        assert_eq!(read_u32(bo, 0), 0x1000 + i as u32, "VM {i} wrote elsewhere");
        g.store(&[(0x10_0004, 0x2000 + i as u32)]);
    }
    for (i, (_, bo)) in held.iter().enumerate() {
        assert_eq!(read_u32(bo, 4), 0x2000 + i as u32, "VM {i} ran again");
    }
    assert_eq!(
        read_u32(&mine, 0),
        0xabcd,
        "no attacker VM wrote the other's memory"
    );
}
