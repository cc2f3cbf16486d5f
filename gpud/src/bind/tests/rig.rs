//! Test rig: a device on simgpu in thread mode with a fake clock, helpers to create VMs and
//! BOs, bind, run STORE_QWORD / COPY commands through an exec queue, read BOs back with the
//! CPU, and translate VAs with simgpu's own walker.

use crate::bind::{BindError, BindOp, BindSync, Vm, VmFlags};
use crate::device::{Device, DeviceConfig, MemStats};
use crate::exec::{ExecQueue, Job};
use crate::hw::cmd::CommandStream;
use crate::hw::{Engine, FakeClock};
use crate::mem::bo::{Bo, Placement};
use crate::sync::{Fence, FenceFault};
use crate::types::{GpuVa, PhysAddr};
use simgpu::mmu::{Access, Memories, Mmu as Walker, PtRoot as DevRoot, Translation};
use simgpu::Location;
use std::sync::Arc;
use std::time::Duration;

/// A bound that only matters if the code under test is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);
pub const MIB: u64 = 1 << 20;
pub const K4: u64 = 4096;

pub struct Rig {
    pub dev: Device,
    pub clock: Arc<FakeClock>,
}

pub fn rig() -> Rig {
    rig_with(16 * MIB, 48 * MIB)
}

pub fn rig_with(vram: u64, sys: u64) -> Rig {
    let clock = Arc::new(FakeClock::new());
    let dev = Device::new(DeviceConfig {
        vram_size: vram,
        sys_size: sys,
        clock: clock.clone(),
        job_timeout: Duration::from_secs(3600),
        ..DeviceConfig::default()
    })
    .unwrap();
    Rig { dev, clock }
}

/// A VM with an exec queue.
pub struct TestVm {
    pub vm: Arc<Vm>,
    pub q: ExecQueue,
}

impl Rig {
    pub fn vm(&self, flags: VmFlags) -> TestVm {
        let vm = self.dev.vm_create(flags).unwrap();
        let q = self.dev.exec_queue_create(&vm, Engine::Compute).unwrap();
        TestVm { vm, q }
    }

    pub fn bo(&self, size: u64) -> Arc<Bo> {
        self.dev.bo_create(size, Placement::Vram, None).unwrap()
    }

    pub fn sys_bo(&self, size: u64) -> Arc<Bo> {
        self.dev.bo_create(size, Placement::System, None).unwrap()
    }

    pub fn stats(&self) -> MemStats {
        self.dev.mem_stats()
    }

    /// Translates `va` of `vm` with simgpu's walker: the physical address, or `None`.
    pub fn translate(&self, vm: &Vm, va: u64, access: Access) -> Option<Translation> {
        let root = vm.with_pt(|pt| pt.root());
        let root = DevRoot {
            addr: root.addr.get(),
            location: match root.location {
                crate::hw::MemLocation::System => Location::System,
                crate::hw::MemLocation::Vram => Location::Vram,
            },
        };
        let gpu = self.dev.gpu()?;
        let (sys, vram) = (gpu.sysmem(), gpu.vram());
        let mems = Memories {
            sys: &*sys,
            vram: &*vram,
        };
        Walker::new(16).translate(mems, 0, root, va, access).ok()
    }
}

impl TestVm {
    pub fn bind(&self, ops: &[BindOp]) -> Result<Arc<Fence>, BindError> {
        self.vm.bind(None, ops, &[])
    }

    pub fn bind_async(&self, ops: &[BindOp], syncs: &[BindSync]) -> Result<Arc<Fence>, BindError> {
        self.vm.bind(None, ops, syncs)
    }

    /// Runs `cmds` on the exec queue and waits for the outcome.
    pub fn run(&self, cmds: &CommandStream) -> Result<(), FenceFault> {
        let fence = self
            .q
            .submit(Job::commands(cmds.dwords().to_vec()))
            .expect("submit");
        self.wait_dump(&fence)
    }

    /// Waits for `fence` (bounded), printing the scheduler and VM state if it never signals.
    pub fn wait_dump(&self, fence: &Fence) -> Result<(), FenceFault> {
        match fence.wait(Some(PATIENCE)) {
            Ok(r) => r,
            Err(_) => {
                eprintln!(
                    "HANG: fence {:?}/{} of queue {:?}",
                    fence.context(),
                    fence.seqno(),
                    self.q.id()
                );
                eprintln!("{}", self.q.debug_dump());
                eprintln!(
                    "vm: banned {} invalid userptrs {} resv kernel {:?}",
                    self.vm.is_banned(),
                    self.vm.has_invalid_userptrs(),
                    self.vm
                        .resv
                        .fences(crate::sync::Usage::Kernel)
                        .iter()
                        .map(|f| (f.context(), f.seqno(), f.status()))
                        .collect::<Vec<_>>()
                );
                eprintln!("ctx_flushed {:?}", self.vm.ctx_flushed.status());
                panic!("fence did not signal within the test's patience");
            }
        }
    }

    /// GPU store of `v` at `va`.
    pub fn store(&self, va: u64, v: u64) -> Result<(), FenceFault> {
        self.run(CommandStream::new().store_qword(GpuVa(va), v))
    }

    /// GPU copy of 8 bytes from `src` to `dst`.
    pub fn copy8(&self, src: u64, dst: u64) -> Result<(), FenceFault> {
        self.run(CommandStream::new().copy(GpuVa(src), GpuVa(dst), 8))
    }

    /// [`TestVm::copy8`] where the submission itself may be refused (an EXEC whose userptr
    /// revalidation meets a CPU range unmapped at that moment fails with EFAULT): whether the
    /// copy was submitted and completed.
    pub fn try_copy8(&self, src: u64, dst: u64) -> bool {
        let cmds = CommandStream::new()
            .copy(GpuVa(src), GpuVa(dst), 8)
            .dwords()
            .to_vec();
        match self.q.submit(Job::commands(cmds)) {
            Ok(fence) => self.wait_dump(&fence).is_ok(),
            Err(_) => false,
        }
    }
}

pub fn wait(fence: &Fence) -> Result<(), FenceFault> {
    fence
        .wait(Some(PATIENCE))
        .expect("fence did not signal within the test's patience")
}

/// CPU read of a u64 of `bo`.
pub fn read(bo: &Bo, off: u64) -> u64 {
    let mut b = [0u8; 8];
    bo.read(off, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// CPU write of a u64 of `bo`.
pub fn write(bo: &Bo, off: u64, v: u64) {
    bo.write(off, &v.to_le_bytes()).unwrap();
}

/// The physical address of byte `off` of `bo` (its first segment run).
pub fn bo_pa(bo: &Bo, off: u64) -> u64 {
    let mut pos = 0;
    for s in bo.segments() {
        if off < pos + s.len {
            return s.addr.get() + (off - pos);
        }
        pos += s.len;
    }
    panic!("offset {off:#x} outside BO")
}

#[allow(dead_code)]
pub fn pa(x: u64) -> PhysAddr {
    PhysAddr(x)
}
