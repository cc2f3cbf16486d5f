//! Hang recovery at VM level: a hung job on one exec queue of a VM is timed out and its
//! queue banned; the VM, its binds and its other exec queue keep working. LR VMs refuse
//! dma-fence out-syncs on exec.

use super::rig::*;
use crate::bind::{BindOp, VmFlags};
use crate::exec::{Job, OutSync};
use crate::hw::Engine;
use crate::sync::{FenceFault, Syncobj};
use std::time::Duration;

const VA: u64 = 0x8_0000_0000;
/// The device's test-only HANG command (opcode 0xFE, length 1).
const HANG: u32 = 0x0001_00FE;

#[test]
fn hung_exec_job_bans_its_queue_not_the_vm() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let other = r.dev.exec_queue_create(&t.vm, Engine::Compute).unwrap();
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let hung = t.q.submit(Job::commands(vec![HANG])).unwrap();
    for _ in 0..20_000 {
        if hung.is_signalled() {
            break;
        }
        r.clock.advance(Duration::from_secs(600));
        let _ = hung.wait(Some(Duration::from_millis(2)));
    }
    assert_eq!(wait(&hung), Err(FenceFault::JobTimeout));
    assert!(
        t.q.submit(Job::sync_only()).is_err(),
        "the guilty queue is banned"
    );
    assert!(!t.vm.is_banned());
    t.bind(&[BindOp::unmap(VA, K4), BindOp::map(&bo, 0, VA + K4, K4)])
        .unwrap();
    let cmds = crate::hw::cmd::CommandStream::new()
        .store_qword(crate::types::GpuVa(VA + K4 + 8), 4)
        .dwords()
        .to_vec();
    wait(&other.submit(Job::commands(cmds)).unwrap()).unwrap();
    assert_eq!(read(&bo, 8), 4);
}

#[test]
fn lr_vm_exec_refuses_dma_fence_out_syncs() {
    let r = rig();
    let t = r.vm(VmFlags::LR_MODE);
    let e =
        t.q.submit(Job::sync_only().with_out_sync(OutSync::Binary(Syncobj::new())))
            .unwrap_err();
    assert_eq!(e.kind(), crate::exec::ErrorKind::NotSupported);
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let f =
        t.q.submit(Job::sync_only().with_user_fence(crate::types::GpuVa(VA), 9))
            .unwrap();
    wait(&f).unwrap();
    assert_eq!(read(&bo, 0), 9, "user fence written by the GPU");
}
