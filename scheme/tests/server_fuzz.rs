//! A random-request fuzzer for the server: random calls, dups, mmaps and closes from several
//! clients against the fake driver, checked against a small oracle of which ids each client
//! created. Nothing may panic, every error must be a documented errno, a client may only ever
//! succeed on ids it created (or imported), and closing every handle must free everything.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use gpu_scheme::testing::caller;
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::wire::*;
use gpu_scheme::uapi::*;
use gpu_scheme::Limits;
use proptest::prelude::*;
use redox_scheme::scheme::SchemeSync;
use syscall::error::*;
use syscall::flag::{EventFlags, MapFlags, MunmapFlags};

const DOCUMENTED: [i32; 16] = [
    EINVAL,
    ENOENT,
    EBADF,
    EBUSY,
    ENOSPC,
    ENOMEM,
    EOPNOTSUPP,
    ETIME,
    EWOULDBLOCK,
    E2BIG,
    ENOTTY,
    EMFILE,
    EIO,
    ECANCELED,
    EFAULT,
    EINTR,
];

#[derive(Debug, Clone)]
enum Action {
    Open,
    Call {
        client: usize,
        req: Request,
        corrupt: Option<(usize, u8)>,
    },
    Dup {
        client: usize,
        /// 0: `bo/`, 1: `syncobj/`, 2: `vm/`.
        kind: u8,
        id: u32,
    },
    /// `dup` of a random path on a device handle (`client`) or the root (`None`).
    DupPath {
        client: Option<usize>,
        path: String,
    },
    Read {
        handle: usize,
        offset: u64,
    },
    OnDerived {
        handle: usize,
        export: bool,
    },
    Import {
        client: usize,
        handle: usize,
    },
    Mmap {
        handle: usize,
        offset: u64,
        size: usize,
        unmap: bool,
    },
    Poll {
        handle: usize,
    },
    Close {
        handle: usize,
    },
    Complete,
    Advance(u64),
}

fn small_id() -> impl Strategy<Value = u32> {
    0u32..7
}

fn request() -> impl Strategy<Value = Request> {
    let sync =
        (0u32..7, any::<bool>(), 0u8..3).prop_map(|(id, signal, k): (u32, bool, u8)| SyncSpec {
            kind: match k {
                0 => SyncKind::Syncobj(SyncobjId(id)),
                1 => SyncKind::Timeline(SyncobjId(id), 1 + id as u64),
                _ => SyncKind::UserFence {
                    addr: 0x10000,
                    value: 1,
                },
            },
            signal: signal || k == 2,
        });
    let op = (small_id(), 0u64..8, 1u64..4, 0u8..4).prop_map(|(bo, page, len, k)| BindOp {
        kind: match k {
            0 => BindOpKind::Map {
                bo: BoId(bo),
                bo_offset: 0,
            },
            1 => BindOpKind::Unmap,
            2 => BindOpKind::MapNull,
            _ => BindOpKind::UnmapAll { bo: BoId(bo) },
        },
        addr: if k == 3 { 0 } else { 0x10000 + page * 0x1000 },
        range: if k == 3 { 0 } else { len * 0x1000 },
        flags: BindFlags::empty(),
        pat_index: 0,
    });
    prop_oneof![
        Just(Request::DeviceQuery),
        (0u32..4).prop_map(|f| Request::VmCreate(VmCreateFlags::from_bits_truncate(f & 3))),
        small_id().prop_map(|i| Request::VmDestroy(VmId(i))),
        (1u64..5, 1u32..4, prop::option::of(small_id())).prop_map(|(pages, p, vm)| {
            Request::BoCreate(BoCreateRequest {
                size: pages * 0x1000,
                placement: Placement::from_bits_truncate(p),
                flags: BoCreateFlags::empty(),
                vm: vm.map(VmId),
            })
        }),
        small_id().prop_map(|i| Request::BoDestroy(BoId(i))),
        (
            small_id(),
            prop_oneof![Just(EngineClass::Copy), Just(EngineClass::VmBind)],
            0u32..3
        )
            .prop_map(|(vm, class, p)| Request::ExecQueueCreate {
                vm: VmId(vm),
                class,
                priority: QueuePriority::from_raw(p).unwrap_or_default(),
                batches: BatchFormat::Native,
            }),
        small_id().prop_map(|i| Request::ExecQueueDestroy(QueueId(i))),
        (
            small_id(),
            prop::collection::vec(op, 0..3),
            prop::collection::vec(sync.clone(), 0..2)
        )
            .prop_map(|(vm, ops, syncs)| bind(VmId(vm), ops, syncs)),
        (small_id(), prop::collection::vec(sync, 0..2)).prop_map(|(q, syncs)| {
            Request::Exec(ExecRequest {
                queue: QueueId(q),
                batches: vec![0x1000],
                syncs,
            })
        }),
        (small_id(), 0u8..3).prop_map(|(vm, t)| Request::WaitUserFence(WaitUserFenceRequest {
            vm: VmId(vm),
            queue: None,
            addr: 0x10000,
            op: WaitOp::Eq,
            value: 1,
            mask: !0,
            timeout: [Timeout::Poll, Timeout::Relative(50), Timeout::Forever][t as usize],
        })),
        any::<bool>().prop_map(|signaled| Request::SyncobjCreate { signaled }),
        small_id().prop_map(|i| Request::SyncobjDestroy(SyncobjId(i))),
        (prop::collection::vec(small_id(), 1..3), 0u32..4, 0u8..3).prop_map(|(ids, f, t)| {
            let ids: Vec<SyncobjId> = ids.into_iter().map(SyncobjId).collect();
            syncobj_wait(
                &ids,
                SyncobjWaitFlags::from_bits_truncate(f),
                [Timeout::Poll, Timeout::Relative(50), Timeout::Forever][t as usize],
            )
        }),
        small_id().prop_map(|i| Request::SyncobjSignal(vec![SyncobjPoint {
            syncobj: SyncobjId(i),
            point: 0
        }])),
        small_id().prop_map(|i| Request::SyncobjQuery(SyncobjId(i))),
        prop::collection::vec(small_id(), 1..3)
            .prop_map(|ids| Request::SyncobjReset(ids.into_iter().map(SyncobjId).collect())),
        Just(Request::ExportToken),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => Just(Action::Open),
        12 => (0usize..3, request(), prop::option::weighted(0.2, (0usize..200, any::<u8>())))
            .prop_map(|(client, req, corrupt)| Action::Call { client, req, corrupt }),
        3 => (0usize..3, 0u8..3, small_id()).prop_map(|(client, kind, id)| Action::Dup { client, kind, id }),
        1 => (prop::option::of(0usize..3), "(vm|bo|syncobj|client|card0|)(/[0-9]{0,22}){0,2}(/vm/[0-9]{0,11})?")
            .prop_map(|(client, path)| Action::DupPath { client, path }),
        1 => (0usize..8, prop::sample::select(vec![0u64, 1, 40, 1 << 40]))
            .prop_map(|(handle, offset)| Action::Read { handle, offset }),
        2 => (0usize..8, any::<bool>()).prop_map(|(handle, export)| Action::OnDerived { handle, export }),
        2 => (0usize..3, 0usize..8).prop_map(|(client, handle)| Action::Import { client, handle }),
        2 => (0usize..8, 0u64..4, 1usize..3, any::<bool>()).prop_map(|(handle, o, s, unmap)| {
            Action::Mmap { handle, offset: o * 0x1000, size: s * 0x1000, unmap }
        }),
        1 => (0usize..8).prop_map(|handle| Action::Poll { handle }),
        1 => (0usize..12).prop_map(|handle| Action::Close { handle }),
        2 => Just(Action::Complete),
        1 => (0u64..100).prop_map(Action::Advance),
    ]
}

/// What the oracle knows about one device handle.
#[derive(Default)]
struct Oracle {
    /// Ids this client got back from create / import calls (ids are never reused).
    ids: BTreeSet<u32>,
}

struct World {
    h: Harness,
    devices: Vec<usize>,
    derived: Vec<usize>,
    oracle: BTreeMap<usize, Oracle>,
}

fn documented(errno: i32) -> Result<(), TestCaseError> {
    prop_assert!(DOCUMENTED.contains(&errno), "undocumented errno {}", errno);
    Ok(())
}

/// Ids a request names that must belong to the caller for the call to succeed.
fn named_ids(req: &Request) -> Vec<u32> {
    match req {
        Request::VmDestroy(v) => vec![v.0],
        Request::BoDestroy(b) => vec![b.0],
        Request::ExecQueueDestroy(q) => vec![q.0],
        Request::SyncobjDestroy(s) | Request::SyncobjQuery(s) => vec![s.0],
        Request::ExecQueueCreate { vm, .. } => vec![vm.0],
        Request::VmBind(b) => {
            let mut ids = vec![b.vm.0];
            for op in &b.ops {
                if let BindOpKind::Map { bo, .. } | BindOpKind::UnmapAll { bo } = op.kind {
                    ids.push(bo.0);
                }
            }
            ids
        }
        Request::SyncobjWait(w) => w.points.iter().map(|p| p.syncobj.0).collect(),
        Request::SyncobjSignal(p) => p.iter().map(|p| p.syncobj.0).collect(),
        Request::SyncobjReset(ids) => ids.iter().map(|s| s.0).collect(),
        _ => vec![],
    }
}

fn new_id(op: u64, p: &[u8]) -> Option<u32> {
    match Opcode::from_raw(op)? {
        Opcode::VmCreate => read_args::<VmCreateArgs>(p).map(|a| a.vm_id),
        Opcode::BoCreate => read_args::<BoCreateArgs>(p).map(|a| a.bo_id),
        Opcode::ExecQueueCreate => read_args::<ExecQueueCreateArgs>(p).map(|a| a.queue_id),
        Opcode::SyncobjCreate => read_args::<SyncobjCreateArgs>(p).map(|a| a.syncobj_id),
        Opcode::Import => read_args::<ImportArgs>(p).map(|a| a.id),
        _ => None,
    }
}

impl World {
    fn call(
        &mut self,
        client: usize,
        req: &Request,
        corrupt: Option<(usize, u8)>,
    ) -> Result<(), TestCaseError> {
        let Some(&dev) = self.devices.get(client) else {
            return Ok(());
        };
        let (op, mut bytes) = encode(req);
        if let Some((at, byte)) = corrupt {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        match self.h.s.call(dev, &mut bytes, &[op, 0, 0], &caller()) {
            Ok(_) => {
                let oracle = self.oracle.entry(dev).or_default();
                if corrupt.is_none() {
                    for id in named_ids(req) {
                        prop_assert!(
                            oracle.ids.contains(&id),
                            "{:?} succeeded on foreign id {}",
                            req,
                            id
                        );
                    }
                }
                if let Some(id) = new_id(op, &bytes) {
                    prop_assert!(id != 0 && oracle.ids.insert(id), "id {} reused", id);
                }
            }
            Err(e) => documented(e.errno)?,
        }
        Ok(())
    }

    fn step(&mut self, a: Action) -> Result<(), TestCaseError> {
        let pick = |v: &Vec<usize>, i: usize| v.get(i % v.len().max(1)).copied();
        match a {
            Action::Open => match opened(self.h.s.openat(self.h.root, DEVICE, 0, 0, &caller())) {
                Ok(dev) => self.devices.push(dev),
                Err(e) => prop_assert_eq!(e, EMFILE, "only the per-process device limit"),
            },
            Action::Call {
                client,
                req,
                corrupt,
            } => self.call(client, &req, corrupt)?,
            Action::Dup { client, kind, id } => {
                let Some(&dev) = self.devices.get(client) else {
                    return Ok(());
                };
                let path = format!("{}/{id}", ["bo", "syncobj", "vm"][usize::from(kind % 3)]);
                match self.h.dup(dev, &path) {
                    Ok(d) => {
                        prop_assert!(self.oracle.entry(dev).or_default().ids.contains(&id));
                        self.derived.push(d);
                    }
                    Err(e) => documented(e)?,
                }
            }
            Action::DupPath { client, path } => {
                let on = match client {
                    Some(c) => self.devices.get(c).copied(),
                    None => Some(self.h.root),
                };
                let Some(on) = on else { return Ok(()) };
                match self.h.dup(on, &path) {
                    Ok(d) => {
                        // On a device handle only the client's own ids open anything.
                        if client.is_some() {
                            let id = path.rsplit('/').next().and_then(|i| i.parse::<u32>().ok());
                            let known = self.oracle.entry(on).or_default().ids.clone();
                            prop_assert!(id.is_some_and(|i| known.contains(&i)), "{}", path);
                        }
                        self.derived.push(d);
                    }
                    Err(e) => documented(e)?,
                }
            }
            Action::Read { handle, offset } => {
                if let Some(d) = pick(&self.derived, handle) {
                    let mut buf = [0u8; 64];
                    if let Err(e) = self.h.s.read(d, &mut buf, offset, 0, &caller()) {
                        documented(e.errno)?;
                    }
                }
            }
            Action::OnDerived { handle, export } => {
                let Some(d) = pick(&self.derived, handle) else {
                    return Ok(());
                };
                let req = if export {
                    Request::ExportToken
                } else {
                    Request::DeviceQuery
                };
                if let Err(e) = self.h.call(d, &req) {
                    documented(e)?;
                    prop_assert!(!export || e == EBADF);
                }
            }
            Action::Import { client, handle } => {
                let (Some(&dev), Some(d)) = (self.devices.get(client), pick(&self.derived, handle))
                else {
                    return Ok(());
                };
                for kind in [ObjectKind::Bo, ObjectKind::Syncobj] {
                    match self.h.call2(dev, d, &Request::Import { kind, token: None }) {
                        Ok(p) => {
                            let id = read_args::<ImportArgs>(&p).map(|a| a.id).unwrap_or(0);
                            prop_assert!(
                                id != 0 && self.oracle.entry(dev).or_default().ids.insert(id)
                            );
                        }
                        Err(e) => documented(e)?,
                    }
                }
            }
            Action::Mmap {
                handle,
                offset,
                size,
                unmap,
            } => {
                let Some(d) = pick(&self.derived, handle) else {
                    return Ok(());
                };
                let f = MapFlags::PROT_READ | MapFlags::MAP_SHARED;
                let r = if unmap {
                    self.h
                        .s
                        .munmap(d, offset, size, MunmapFlags::empty(), &caller())
                        .map(|_| 0)
                } else {
                    self.h.s.mmap_prep(d, offset, size, f, &caller())
                };
                if let Err(e) = r {
                    documented(e.errno)?;
                }
            }
            Action::Poll { handle } => {
                if let Some(d) = pick(&self.derived, handle) {
                    let _ = self.h.s.fevent(d, EventFlags::EVENT_READ, &caller());
                }
                let _ = self.h.s.ready_events();
            }
            Action::Close { handle } => {
                let all: Vec<usize> = self
                    .devices
                    .iter()
                    .chain(self.derived.iter())
                    .copied()
                    .collect();
                if let Some(x) = pick(&all, handle) {
                    self.h.s.on_close(x);
                    self.devices.retain(|d| *d != x);
                    self.derived.retain(|d| *d != x);
                }
            }
            Action::Complete => self.h.driver().complete_all(),
            Action::Advance(ns) => self.h.driver().advance(ns),
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128), ..ProptestConfig::default() })]

    #[test]
    fn random_requests_keep_the_server_sound(actions in prop::collection::vec(action(), 1..60)) {
        let limits = Limits { objects: 12, vram_bytes: 0x8000, system_bytes: 0x8000, mappings: 3, handles: 4, in_flight: 3, gpu_mappings: 6, devices_per_process: 3, timeline_points: 1 << 16 };
        let mut w = World { h: Harness::with_limits(limits), devices: vec![], derived: vec![], oracle: BTreeMap::new() };
        w.devices.push(w.h.open());
        w.devices.push(w.h.open());
        for a in actions {
            w.step(a)?;
        }
        for h in w.devices.drain(..).chain(w.derived.drain(..)).collect::<Vec<_>>() {
            w.h.s.on_close(h);
        }
        prop_assert_eq!(w.h.s.client_count(), 0);
        prop_assert_eq!(w.h.s.handle_count(), 1, "only the root is left");
        prop_assert_eq!(w.h.s.parked_count(), 0);
    }
}
