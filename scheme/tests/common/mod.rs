//! Shared helpers for the server tests: a scheme over the fake driver and typed calls.

#![allow(dead_code)]

use gpu_scheme::testing::{caller, FakeDriver};
use gpu_scheme::uapi::wire::*;
use gpu_scheme::uapi::*;
use gpu_scheme::{GpuScheme, Limits};
use redox_scheme::scheme::SchemeSync;
use redox_scheme::OpenResult;

pub struct Harness {
    pub s: GpuScheme<FakeDriver>,
    pub root: usize,
}

pub fn opened(r: syscall::Result<OpenResult>) -> Result<usize, i32> {
    match r {
        Ok(OpenResult::ThisScheme { number, .. }) => Ok(number),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.errno),
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        let mut s = GpuScheme::new(FakeDriver::new(), limits);
        let root = s.scheme_root().expect("root");
        Harness { s, root }
    }

    pub fn driver(&self) -> &FakeDriver {
        self.s.driver()
    }

    pub fn open(&mut self) -> usize {
        opened(self.s.openat(self.root, DEVICE, 0, 0, &caller())).expect("open card0")
    }

    pub fn dup(&mut self, h: usize, path: &str) -> Result<usize, i32> {
        opened(self.s.dup(h, path.as_bytes(), &caller()))
    }

    /// A call; returns the payload with the server's out fields.
    pub fn call(&mut self, h: usize, req: &Request) -> Result<Vec<u8>, i32> {
        let (op, mut bytes) = encode(req);
        self.s
            .call(h, &mut bytes, &[op, 0, 0], &caller())
            .map_err(|e| e.errno)?;
        Ok(bytes)
    }

    pub fn call2(&mut self, h: usize, other: usize, req: &Request) -> Result<Vec<u8>, i32> {
        let (op, mut bytes) = encode(req);
        self.s
            .call_multiple_ids(&[h, other], &mut bytes, &[op, 0, 0], &caller())
            .map_err(|e| e.errno)?;
        Ok(bytes)
    }

    pub fn err(&mut self, h: usize, req: &Request) -> i32 {
        match self.call(h, req) {
            Ok(_) => panic!("{req:?} succeeded"),
            Err(e) => e,
        }
    }

    pub fn vm(&mut self, h: usize, flags: flags::VmCreateFlags) -> VmId {
        let p = self.call(h, &Request::VmCreate(flags)).expect("vm");
        VmId(read_args::<VmCreateArgs>(&p).expect("args").vm_id)
    }

    pub fn bo(&mut self, h: usize, size: u64, vm: Option<VmId>) -> BoId {
        let req = Request::BoCreate(BoCreateRequest {
            size,
            placement: flags::Placement::SYSTEM | flags::Placement::VRAM,
            flags: flags::BoCreateFlags::empty(),
            vm,
        });
        let p = self.call(h, &req).expect("bo");
        BoId(read_args::<BoCreateArgs>(&p).expect("args").bo_id)
    }

    pub fn try_bo(
        &mut self,
        h: usize,
        size: u64,
        placement: flags::Placement,
    ) -> Result<BoId, i32> {
        let req = Request::BoCreate(BoCreateRequest {
            size,
            placement,
            flags: flags::BoCreateFlags::empty(),
            vm: None,
        });
        let p = self.call(h, &req)?;
        Ok(BoId(read_args::<BoCreateArgs>(&p).expect("args").bo_id))
    }

    pub fn queue(&mut self, h: usize, vm: VmId, class: flags::EngineClass) -> QueueId {
        let p = self
            .call(
                h,
                &Request::ExecQueueCreate {
                    vm,
                    class,
                    priority: flags::QueuePriority::Normal,
                    batches: flags::BatchFormat::Native,
                },
            )
            .expect("queue");
        QueueId(read_args::<ExecQueueCreateArgs>(&p).expect("args").queue_id)
    }

    pub fn syncobj(&mut self, h: usize, signaled: bool) -> SyncobjId {
        let p = self
            .call(h, &Request::SyncobjCreate { signaled })
            .expect("syncobj");
        SyncobjId(read_args::<SyncobjCreateArgs>(&p).expect("args").syncobj_id)
    }

    pub fn token(&mut self, h: usize) -> Token {
        let p = self.call(h, &Request::ExportToken).expect("export");
        Token(read_args::<ExportTokenArgs>(&p).expect("args").token)
    }

    pub fn read(&mut self, h: usize) -> String {
        let mut buf = vec![0u8; 8192];
        let n = self.s.read(h, &mut buf, 0, 0, &caller()).expect("read");
        String::from_utf8(buf[..n].to_vec()).expect("utf8")
    }
}

pub const DEVICE: &str = "card0";

pub fn map(bo: BoId, addr: u64, range: u64) -> BindOp {
    BindOp {
        kind: BindOpKind::Map { bo, bo_offset: 0 },
        addr,
        range,
        flags: flags::BindFlags::empty(),
        pat_index: 0,
    }
}

pub fn bind(vm: VmId, ops: Vec<BindOp>, syncs: Vec<SyncSpec>) -> Request {
    Request::VmBind(VmBindRequest {
        vm,
        queue: None,
        ops,
        syncs,
    })
}

pub fn signal(id: SyncobjId) -> SyncSpec {
    SyncSpec {
        kind: SyncKind::Syncobj(id),
        signal: true,
    }
}

pub fn wait_on(id: SyncobjId) -> SyncSpec {
    SyncSpec {
        kind: SyncKind::Syncobj(id),
        signal: false,
    }
}

pub fn syncobj_wait(
    ids: &[SyncobjId],
    flags: flags::SyncobjWaitFlags,
    timeout: Timeout,
) -> Request {
    Request::SyncobjWait(SyncobjWaitRequest {
        points: ids
            .iter()
            .map(|s| SyncobjPoint {
                syncobj: *s,
                point: 0,
            })
            .collect(),
        flags,
        timeout,
    })
}
