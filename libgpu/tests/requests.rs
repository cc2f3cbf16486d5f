//! The builders produce exactly the request the scheme's decoder reads from the bytes sent: a
//! recording transport decodes every call with `gpu_scheme::uapi::decode` and a property test
//! compares it with an oracle built directly from the generated operations.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use gpu_scheme::uapi::flags::{
    BindFlags, BoCreateFlags, EngineClass, Placement, Region, VmCreateFlags,
};
use gpu_scheme::uapi::{
    decode, write_reply, BindOp, BindOpKind, BoId, ExecRequest, Reply, Request, SyncKind, SyncSpec,
    SyncobjId, VmBindRequest,
};
use libgpu::transport::{Handle, Mapping};
use libgpu::{Bo, Device, ExecQueue, Syncobj, TransportError, Vm};
use proptest::prelude::*;

/// A transport that decodes and records every call, answering creates with ids 1, 2, 3…
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<Request>>>,
    next: Arc<Mutex<u32>>,
    /// Any fd, to answer `as_fd`.
    fd: Arc<std::fs::File>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            log: Arc::default(),
            next: Arc::default(),
            fd: Arc::new(std::fs::File::open("/dev/null").unwrap()),
        }
    }

    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Handle for Recorder {
    fn dup(&self, _path: &str) -> Result<Box<dyn Handle>, TransportError> {
        Ok(Box::new(self.clone()))
    }

    fn call(&self, payload: &mut [u8], metadata: [u64; 3]) -> Result<usize, TransportError> {
        let req = decode(metadata[0], payload).map_err(|_| TransportError::Scheme(22))?;
        let creates = matches!(
            req,
            Request::VmCreate(_)
                | Request::BoCreate(_)
                | Request::SyncobjCreate { .. }
                | Request::ExecQueueCreate { .. }
        );
        let reply = if creates {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            Reply::NewId(*n)
        } else {
            Reply::None
        };
        self.log.lock().unwrap().push(req);
        write_reply(metadata[0], payload, &reply).map_err(|_| TransportError::BadReply)
    }

    fn read(&self, _buf: &mut [u8], _offset: u64) -> Result<usize, TransportError> {
        Ok(0)
    }

    fn mmap(&self, _offset: u64, _len: usize) -> Result<Box<dyn Mapping>, TransportError> {
        Err(TransportError::Unsupported)
    }

    fn subscribe(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn take_events(&self) -> Result<u32, TransportError> {
        Ok(0)
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn clone_fd(&self) -> Result<std::os::fd::OwnedFd, TransportError> {
        Err(TransportError::Unsupported)
    }
}

/// One generated bind operation (all values valid for the decoder).
#[derive(Debug, Clone)]
enum OpSpec {
    Map {
        offset: u64,
        va: u64,
        range: u64,
        readonly: bool,
        immediate: bool,
        pat: u16,
    },
    Unmap(u64, u64),
    UnmapAll,
    Null(u64, u64),
    Userptr(u64, u64, u64),
    Prefetch(u64, u64, u32),
}

fn page() -> impl Strategy<Value = u64> {
    (0u64..1 << 20).prop_map(|p| p << 12)
}

fn pages() -> impl Strategy<Value = u64> {
    (1u64..64).prop_map(|p| p << 12)
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        (
            page(),
            page(),
            pages(),
            any::<bool>(),
            any::<bool>(),
            0u16..4
        )
            .prop_map(
                |(offset, va, range, readonly, immediate, pat)| OpSpec::Map {
                    offset,
                    va,
                    range,
                    readonly,
                    immediate,
                    pat
                }
            ),
        (page(), pages()).prop_map(|(a, r)| OpSpec::Unmap(a, r)),
        Just(OpSpec::UnmapAll),
        (page(), pages()).prop_map(|(a, r)| OpSpec::Null(a, r)),
        (page(), page(), pages()).prop_map(|(p, a, r)| OpSpec::Userptr(p, a, r)),
        (page(), pages(), 0u32..3).prop_map(|(a, r, g)| OpSpec::Prefetch(a, r, g)),
    ]
}

/// One generated sync: (which syncobj, point, signal?) or a user fence.
#[derive(Debug, Clone)]
enum SyncGen {
    Obj(usize, u64, bool),
    Fence(u64, u64),
}

fn sync_gen() -> impl Strategy<Value = SyncGen> {
    prop_oneof![
        4 => (0usize..3, prop_oneof![Just(0u64), 1u64..100], any::<bool>())
            .prop_map(|(i, p, s)| SyncGen::Obj(i, p, s)),
        1 => ((0u64..1 << 30).prop_map(|a| a << 3), any::<u64>())
            .prop_map(|(a, v)| SyncGen::Fence(a, v)),
    ]
}

fn region(g: u32) -> Region {
    match g {
        0 => Region::System,
        1 => Region::Vram,
        _ => Region::Preferred,
    }
}

/// The oracle: the op as the decoder must yield it.
fn expected_op(spec: &OpSpec, bo: BoId) -> BindOp {
    let plain = |kind, addr, range| BindOp {
        kind,
        addr,
        range,
        flags: BindFlags::empty(),
        pat_index: 0,
    };
    match *spec {
        OpSpec::Map {
            offset,
            va,
            range,
            readonly,
            immediate,
            pat,
        } => {
            let mut flags = BindFlags::empty();
            flags.set(BindFlags::READONLY, readonly);
            flags.set(BindFlags::IMMEDIATE, immediate);
            BindOp {
                kind: BindOpKind::Map {
                    bo,
                    bo_offset: offset,
                },
                addr: va,
                range,
                flags,
                pat_index: pat,
            }
        }
        OpSpec::Unmap(a, r) => plain(BindOpKind::Unmap, a, r),
        OpSpec::UnmapAll => plain(BindOpKind::UnmapAll { bo }, 0, 0),
        OpSpec::Null(a, r) => plain(BindOpKind::MapNull, a, r),
        OpSpec::Userptr(p, a, r) => plain(BindOpKind::MapUserptr { userptr: p }, a, r),
        OpSpec::Prefetch(a, r, g) => plain(BindOpKind::Prefetch { region: region(g) }, a, r),
    }
}

fn expected_sync(g: &SyncGen, objs: &[Syncobj]) -> SyncSpec {
    match *g {
        SyncGen::Obj(i, 0, signal) => SyncSpec {
            kind: SyncKind::Syncobj(objs[i].id()),
            signal,
        },
        SyncGen::Obj(i, p, signal) => SyncSpec {
            kind: SyncKind::Timeline(objs[i].id(), p),
            signal,
        },
        SyncGen::Fence(addr, value) => SyncSpec {
            kind: SyncKind::UserFence { addr, value },
            signal: true,
        },
    }
}

struct World {
    rec: Recorder,
    vm: Vm,
    bo: Bo,
    objs: Vec<Syncobj>,
}

fn world() -> World {
    let rec = Recorder::new();
    let dev = Device::from_handle(Box::new(rec.clone()));
    let vm = Vm::create(&dev, VmCreateFlags::empty()).unwrap();
    let bo = Bo::create(&dev, 1 << 32, Placement::SYSTEM, BoCreateFlags::empty()).unwrap();
    let objs = (0..3)
        .map(|_| Syncobj::create(&dev, false).unwrap())
        .collect();
    rec.take();
    World { rec, vm, bo, objs }
}

fn add_sync<'a>(
    b: libgpu::BindBuilder<'a>,
    g: &SyncGen,
    objs: &[Syncobj],
) -> libgpu::BindBuilder<'a> {
    match *g {
        SyncGen::Obj(i, 0, false) => b.wait(&objs[i]),
        SyncGen::Obj(i, 0, true) => b.signal(&objs[i]),
        SyncGen::Obj(i, p, false) => b.wait_point(&objs[i], p),
        SyncGen::Obj(i, p, true) => b.signal_point(&objs[i], p),
        SyncGen::Fence(a, v) => b.user_fence(a, v),
    }
}

fn add_op<'a>(b: libgpu::BindBuilder<'a>, spec: &OpSpec, bo: &Bo) -> libgpu::BindBuilder<'a> {
    match *spec {
        OpSpec::Map {
            offset,
            va,
            range,
            readonly,
            immediate,
            pat,
        } => {
            let mut b = b.map(bo, offset, va, range);
            if readonly {
                b = b.readonly();
            }
            if immediate {
                b = b.immediate();
            }
            if pat != 0 {
                b = b.pat_index(pat);
            }
            b
        }
        OpSpec::Unmap(a, r) => b.unmap(a, r),
        OpSpec::UnmapAll => b.unmap_all(bo),
        OpSpec::Null(a, r) => b.map_null(a, r),
        OpSpec::Userptr(p, a, r) => b.map_userptr(p, a, r),
        OpSpec::Prefetch(a, r, g) => b.prefetch(a, r, region(g)),
    }
}

proptest! {
    #[test]
    fn bind_builder_sends_exactly_the_built_request(
        ops in proptest::collection::vec(op_spec(), 1..12),
        syncs in proptest::collection::vec(sync_gen(), 0..6),
    ) {
        let w = world();
        // The decoder allows one user fence: keep the first.
        let first_fence = syncs.iter().position(|s| matches!(s, SyncGen::Fence(..)));
        let syncs: Vec<SyncGen> = syncs
            .into_iter()
            .enumerate()
            .filter(|(i, s)| !matches!(s, SyncGen::Fence(..)) || Some(*i) == first_fence)
            .map(|(_, s)| s)
            .collect();
        let mut b = w.vm.bind();
        for op in &ops {
            b = add_op(b, op, &w.bo);
        }
        for s in &syncs {
            b = add_sync(b, s, &w.objs);
        }
        let expected = VmBindRequest {
            vm: w.vm.id(),
            queue: None,
            ops: ops.iter().map(|o| expected_op(o, w.bo.id())).collect(),
            syncs: syncs.iter().map(|s| expected_sync(s, &w.objs)).collect(),
        };
        prop_assert_eq!(&b.request().unwrap(), &expected);
        b.submit().unwrap();
        prop_assert_eq!(w.rec.take(), vec![Request::VmBind(expected)]);
    }
}

#[test]
fn exec_builder_sends_batches_and_syncs_in_order() {
    let w = world();
    let q = ExecQueue::create(&w.vm, EngineClass::Compute).unwrap();
    let bind_q = ExecQueue::create(&w.vm, EngineClass::VmBind).unwrap();
    w.rec.take();
    q.exec(0x1000)
        .batch(0x2000)
        .wait_point(&w.objs[0], 4)
        .signal(&w.objs[1])
        .user_fence(0x3000, 9)
        .submit()
        .unwrap();
    q.sync_only().wait(&w.objs[2]).submit().unwrap();
    w.vm.bind()
        .unmap(0x1000, 0x1000)
        .queue(&bind_q)
        .submit()
        .unwrap();
    let sync = |kind, signal| SyncSpec { kind, signal };
    assert_eq!(
        w.rec.take(),
        vec![
            Request::Exec(ExecRequest {
                queue: q.id(),
                batches: vec![0x1000, 0x2000],
                syncs: vec![
                    sync(SyncKind::Timeline(w.objs[0].id(), 4), false),
                    sync(SyncKind::Syncobj(w.objs[1].id()), true),
                    sync(
                        SyncKind::UserFence {
                            addr: 0x3000,
                            value: 9
                        },
                        true
                    ),
                ],
            }),
            Request::Exec(ExecRequest {
                queue: q.id(),
                batches: vec![],
                syncs: vec![sync(SyncKind::Syncobj(w.objs[2].id()), false)],
            }),
            Request::VmBind(VmBindRequest {
                vm: w.vm.id(),
                queue: Some(bind_q.id()),
                ops: vec![BindOp {
                    kind: BindOpKind::Unmap,
                    addr: 0x1000,
                    range: 0x1000,
                    flags: BindFlags::empty(),
                    pat_index: 0,
                }],
                syncs: vec![],
            }),
        ]
    );
}

#[test]
fn dropping_objects_destroys_them_in_dependency_order() {
    let w = world();
    let q = ExecQueue::create(&w.vm, EngineClass::Copy).unwrap();
    let (vm_id, q_id, bo_id) = (w.vm.id(), q.id(), w.bo.id());
    let ids: Vec<SyncobjId> = w.objs.iter().map(|o| o.id()).collect();
    let rec = w.rec.clone();
    rec.take();
    drop(w.vm);
    assert!(rec.take().is_empty(), "the queue keeps the VM");
    drop(q);
    assert_eq!(
        rec.take(),
        vec![Request::ExecQueueDestroy(q_id), Request::VmDestroy(vm_id)]
    );
    drop(w.bo);
    drop(w.objs);
    let mut expected = vec![Request::BoDestroy(bo_id)];
    expected.extend(ids.into_iter().map(Request::SyncobjDestroy));
    assert_eq!(rec.take(), expected);
}
