//! The revalidation hook: a fake VM holding a few resvs records what the exec layer does.

use super::harness::*;
use crate::exec::{publish_job_fence, ErrorKind, ExecError, Job, JobVm, JobVmError};
use crate::hw::Engine;
use crate::sync::{Exec, ExecFlags, Fence, FenceContext, Resv, Usage};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Lock {
        objects: usize,
    },
    Validate {
        bos: Vec<u32>,
    },
    Publish {
        seqno: u64,
        locked: usize,
        signalled: bool,
    },
}

struct FakeVm {
    resv: Arc<Resv>,
    extobjs: Vec<Arc<Resv>>,
    evicted: Mutex<Vec<u32>>,
    log: Mutex<Vec<Event>>,
    banned: AtomicBool,
}

impl FakeVm {
    fn new(extobjs: usize) -> Arc<Self> {
        Arc::new(Self {
            resv: Resv::new(),
            extobjs: (0..extobjs).map(|_| Resv::new()).collect(),
            evicted: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            banned: AtomicBool::new(false),
        })
    }

    /// Adds a KERNEL fence (a move) to the VM resv, as the memory manager would.
    fn add_kernel_fence(&self, fence: Arc<Fence>) {
        let mut exec = Exec::new(ExecFlags::empty());
        exec.run(|e| e.prepare_obj(&self.resv, 1)).unwrap();
        exec.add_fence(&self.resv, fence, Usage::Kernel).unwrap();
    }
}

impl JobVm for FakeVm {
    fn lock_and_validate(&self, exec: &mut Exec) -> Result<Vec<Arc<Fence>>, JobVmError> {
        exec.run(|e| {
            e.prepare_obj(&self.resv, 1)?;
            self.extobjs.iter().try_for_each(|r| e.prepare_obj(r, 1))
        })?;
        let objects = exec.locked().len();
        self.log.lock().push(Event::Lock { objects });
        let bos = std::mem::take(&mut *self.evicted.lock());
        self.log.lock().push(Event::Validate { bos });
        Ok(self.resv.fences(Usage::Kernel))
    }

    fn publish(&self, exec: &Exec, fence: &Arc<Fence>) -> Result<(), JobVmError> {
        self.log.lock().push(Event::Publish {
            seqno: fence.seqno(),
            locked: exec.locked().len(),
            signalled: fence.is_signalled(),
        });
        Ok(publish_job_fence(exec, &self.resv, fence)?)
    }

    fn is_banned(&self) -> bool {
        self.banned.load(Ordering::SeqCst)
    }
}

fn vm_queue(rig: &Rig, vm: &Arc<FakeVm>) -> crate::exec::ExecQueue {
    let mut cfg = rig.config(
        0,
        Engine::Copy,
        crate::exec::QueueMode::Dma { timeout: NEVER },
    );
    cfg.vm = Some(vm.clone());
    rig.sched.create_queue(cfg).unwrap()
}

#[test]
fn each_job_locks_validates_publishes_then_unlocks_with_the_right_usages() {
    let rig = Rig::new(1);
    let vm = FakeVm::new(2);
    vm.evicted.lock().extend([3, 5]);
    let q = vm_queue(&rig, &vm);
    let f = q.submit(Job::commands(store(0, 1))).unwrap();
    let log = vm.log.lock().clone();
    assert_eq!(
        log,
        vec![
            Event::Lock { objects: 3 },
            Event::Validate { bos: vec![3, 5] },
            Event::Publish {
                seqno: f.seqno(),
                locked: 3,
                signalled: false
            },
        ]
    );
    let usage_of = |r: &Resv| {
        r.entries()
            .into_iter()
            .find(|(x, _)| Arc::ptr_eq(x, &f))
            .map(|(_, u)| u)
    };
    assert_eq!(usage_of(&vm.resv), Some(Usage::Bookkeep));
    for ext in &vm.extobjs {
        assert_eq!(usage_of(ext), Some(Usage::Write));
    }
    // Unlocked on return: another exec takes every object at once.
    let mut exec = Exec::new(ExecFlags::empty());
    exec.run(|e| {
        e.lock_obj(&vm.resv)?;
        vm.extobjs.iter().try_for_each(|r| e.lock_obj(r))
    })
    .unwrap();
    drop(exec);
    assert_eq!(wait(&f), Ok(()));
    // A second job validates nothing new.
    let f2 = q.submit(Job::commands(store(8, 2))).unwrap();
    assert_eq!(wait(&f2), Ok(()));
    assert_eq!(vm.log.lock()[4], Event::Validate { bos: vec![] });
}

#[test]
fn a_job_waits_for_the_vm_resv_kernel_fences() {
    let rig = Rig::new(1);
    let vm = FakeVm::new(1);
    let moving = Fence::new(FenceContext::alloc(), 1);
    vm.add_kernel_fence(moving.clone());
    let q = vm_queue(&rig, &vm);
    let f = q.submit(Job::commands(store(0, 1))).unwrap();
    // Not a timing assertion: a correct scheduler can never have run it yet.
    assert!(f.wait(Some(Duration::from_millis(20))).is_err());
    assert_eq!(rig.read(0, 0), 0);
    moving.signal().unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 0), 1);
}

#[test]
fn a_banned_vm_refuses_jobs_as_cancelled() {
    let rig = Rig::new(1);
    let vm = FakeVm::new(0);
    let q = vm_queue(&rig, &vm);
    vm.banned.store(true, Ordering::SeqCst);
    let err = q.submit(Job::commands(store(0, 1))).unwrap_err();
    assert!(matches!(err, ExecError::Vm(JobVmError::Banned)));
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(vm.log.lock().is_empty(), "a banned VM must not be locked");
}
