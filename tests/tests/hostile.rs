//! Hostile clients, end to end: a client that misbehaves hurts only itself. Each test pins
//! one attack a client could mount against `gpud serve` (several clients on one daemon).

use gpu_scheme::uapi::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use gpu_tests::{sys_bo, Daemon, BATCH_VA};
use libgpu::cmd::{Batch, SemOp};
use libgpu::{Bo, ExecQueue, Syncobj, Timeout, Vm};

/// Where a VM's first exec queue had its fence page when fence pages were mapped (writable)
/// in client VMs: the start of the reserved region at the top of the 48-bit VA space.
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
