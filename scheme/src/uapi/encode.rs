//! The client side of the wire: a typed `Request` → opcode and payload bytes.
//!
//! Owns: encoding (used by libgpu, the tests and the fuzz corpus) and reading replies back.
//! Must not: validate (a client may encode nonsense; the server's decoder judges it).
//! `encode` followed by `decode` is the identity on every valid request (property-tested).

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::flags::{
    bind_op, sync_type, BatchFormat, BindFlags, ExecQueueCreateFlags, ObjectKind, QueuePriority,
    Region, SyncFlags, SyncobjCreateFlags, SyncobjWaitFlags, WaitFlags,
};
use super::request::*;
use super::wire::*;

/// How to lay out a payload; the default is this uAPI version's exact sizes. Larger values
/// imitate a newer client (their extra bytes are zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Zero bytes appended to the args struct.
    pub args_extra: u32,
    /// Zero bytes appended to every array element (rounded by the caller to a multiple of 8).
    pub stride_extra: u32,
}

/// Encode `req` with the exact layout of this uAPI version.
pub fn encode(req: &Request) -> (u64, Vec<u8>) {
    encode_with(req, Layout::default())
}

/// Encode `req` with the given layout.
pub fn encode_with(req: &Request, layout: Layout) -> (u64, Vec<u8>) {
    let mut p = Builder {
        bytes: Vec::new(),
        layout,
    };
    let op = match req {
        Request::DeviceQuery => p.args(Opcode::DeviceQuery, &DeviceQueryArgs::default()),
        Request::VmCreate(f) => p.args(
            Opcode::VmCreate,
            &VmCreateArgs {
                flags: f.bits(),
                ..Default::default()
            },
        ),
        Request::VmDestroy(id) => p.id(Opcode::VmDestroy, id.0),
        Request::BoDestroy(id) => p.id(Opcode::BoDestroy, id.0),
        Request::ExecQueueDestroy(id) => p.id(Opcode::ExecQueueDestroy, id.0),
        Request::SyncobjDestroy(id) => p.id(Opcode::SyncobjDestroy, id.0),
        Request::BoCreate(b) => p.args(
            Opcode::BoCreate,
            &BoCreateArgs {
                size: b.size,
                placement: b.placement.bits(),
                flags: b.flags.bits(),
                vm_id: b.vm.map_or(0, |v| v.0),
                ..Default::default()
            },
        ),
        Request::ExecQueueCreate {
            vm,
            class,
            priority,
            batches,
        } => {
            // Normal priority is sent the way clients that predate priorities send it.
            let (mut flags, priority) = match priority {
                QueuePriority::Normal => (ExecQueueCreateFlags::empty(), 0),
                p => (ExecQueueCreateFlags::PRIORITY, *p as u32),
            };
            if *batches == BatchFormat::Intel {
                flags |= ExecQueueCreateFlags::INTEL_BATCHES;
            }
            p.args(
                Opcode::ExecQueueCreate,
                &ExecQueueCreateArgs {
                    vm_id: vm.0,
                    engine_class: *class as u16,
                    flags: flags.bits(),
                    priority,
                    ..Default::default()
                },
            )
        }
        Request::VmBind(b) => p.vm_bind(b),
        Request::Exec(e) => p.exec(e),
        Request::WaitUserFence(w) => p.args(Opcode::WaitUserFence, &wait_args(w)),
        Request::SyncobjCreate { signaled } => {
            let flags = if *signaled {
                SyncobjCreateFlags::SIGNALED.bits()
            } else {
                0
            };
            p.args(
                Opcode::SyncobjCreate,
                &SyncobjCreateArgs {
                    flags,
                    ..Default::default()
                },
            )
        }
        Request::SyncobjWait(w) => p.syncobj_wait(w),
        Request::SyncobjSignal(points) => p.syncobj_signal(points),
        Request::SyncobjReset(ids) => p.syncobj_reset(ids),
        Request::SyncobjQuery(id) => p.args(
            Opcode::SyncobjQuery,
            &SyncobjQueryArgs {
                syncobj_id: id.0,
                ..Default::default()
            },
        ),
        Request::SyncobjTransfer(t) => p.args(
            Opcode::SyncobjTransfer,
            &SyncobjTransferArgs {
                src_id: t.src.syncobj.0,
                dst_id: t.dst.syncobj.0,
                src_point: t.src.point,
                dst_point: t.dst.point,
                flags: if t.wait_for_submit {
                    SyncobjWaitFlags::WAIT_FOR_SUBMIT.bits()
                } else {
                    0
                },
                ..Default::default()
            },
        ),
        Request::ExportToken => p.args(Opcode::ExportToken, &ExportTokenArgs::default()),
        Request::Import { kind, token } => p.args(
            Opcode::Import,
            &ImportArgs {
                kind: *kind as u32,
                token: token.map_or([0, 0], |t| t.0),
                ..Default::default()
            },
        ),
    };
    (op as u64, p.bytes)
}

/// Read the args struct (with the server's out fields) back from a payload.
pub fn read_args<T: FromBytes>(payload: &[u8]) -> Option<T> {
    let area = payload.get(size_of::<CallHeader>()..)?;
    T::read_from_prefix(area).ok().map(|(t, _)| t)
}

struct Builder {
    bytes: Vec<u8>,
    layout: Layout,
}

impl Builder {
    fn args<T: IntoBytes + Immutable>(&mut self, op: Opcode, args: &T) -> Opcode {
        let size = size_of::<T>() as u32 + self.layout.args_extra;
        let header = CallHeader {
            version: UAPI_VERSION,
            pad: 0,
            args_size: size,
            reserved: 0,
        };
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(args.as_bytes());
        self.zeros(self.layout.args_extra);
        op
    }

    fn id(&mut self, op: Opcode, id: u32) -> Opcode {
        self.args(
            op,
            &IdArgs {
                id,
                ..Default::default()
            },
        )
    }

    fn zeros(&mut self, n: u32) {
        self.bytes.resize(self.bytes.len() + n as usize, 0);
    }

    fn stride<E>(&self) -> u32 {
        size_of::<E>() as u32 + self.layout.stride_extra
    }

    fn elements<E: IntoBytes + Immutable>(&mut self, items: &[E]) {
        for item in items {
            self.bytes.extend_from_slice(item.as_bytes());
            self.zeros(self.layout.stride_extra);
        }
    }

    fn vm_bind(&mut self, b: &VmBindRequest) -> Opcode {
        let ops: Vec<BindOpWire> = b.ops.iter().map(bind_op_wire).collect();
        let syncs: Vec<SyncWire> = b.syncs.iter().map(sync_wire).collect();
        self.args(
            Opcode::VmBind,
            &VmBindArgs {
                vm_id: b.vm.0,
                queue_id: b.queue.map_or(0, |q| q.0),
                num_ops: ops.len() as u32,
                op_stride: self.stride::<BindOpWire>(),
                num_syncs: syncs.len() as u32,
                sync_stride: self.stride::<SyncWire>(),
                reserved: [0; 2],
            },
        );
        self.elements(&ops);
        self.elements(&syncs);
        Opcode::VmBind
    }

    fn exec(&mut self, e: &ExecRequest) -> Opcode {
        let syncs: Vec<SyncWire> = e.syncs.iter().map(sync_wire).collect();
        self.args(
            Opcode::Exec,
            &ExecArgs {
                queue_id: e.queue.0,
                num_batches: e.batches.len() as u32,
                num_syncs: syncs.len() as u32,
                sync_stride: self.stride::<SyncWire>(),
                reserved: [0; 2],
            },
        );
        for b in &e.batches {
            self.bytes.extend_from_slice(b.as_bytes());
        }
        self.elements(&syncs);
        Opcode::Exec
    }

    fn syncobj_wait(&mut self, w: &SyncobjWaitRequest) -> Opcode {
        let (timeout_ns, abstime) = timeout_wire(w.timeout);
        let mut flags = w.flags;
        flags.set(SyncobjWaitFlags::ABSTIME, abstime);
        self.args(
            Opcode::SyncobjWait,
            &SyncobjWaitArgs {
                count: w.points.len() as u32,
                stride: self.stride::<SyncobjPointWire>(),
                flags: flags.bits(),
                first_signaled: 0,
                timeout_ns,
                reserved: [0; 2],
            },
        );
        self.elements(&points_wire(&w.points));
        Opcode::SyncobjWait
    }

    fn syncobj_signal(&mut self, points: &[SyncobjPoint]) -> Opcode {
        self.args(
            Opcode::SyncobjSignal,
            &SyncobjSignalArgs {
                count: points.len() as u32,
                stride: self.stride::<SyncobjPointWire>(),
                reserved: [0; 2],
            },
        );
        self.elements(&points_wire(points));
        Opcode::SyncobjSignal
    }

    fn syncobj_reset(&mut self, ids: &[SyncobjId]) -> Opcode {
        self.args(
            Opcode::SyncobjReset,
            &SyncobjResetArgs {
                count: ids.len() as u32,
                stride: self.stride::<SyncobjPointWire>(),
                reserved: [0; 2],
            },
        );
        let points: Vec<SyncobjPoint> = ids
            .iter()
            .map(|&syncobj| SyncobjPoint { syncobj, point: 0 })
            .collect();
        self.elements(&points_wire(&points));
        Opcode::SyncobjReset
    }
}

fn points_wire(points: &[SyncobjPoint]) -> Vec<SyncobjPointWire> {
    points
        .iter()
        .map(|p| SyncobjPointWire {
            syncobj_id: p.syncobj.0,
            pad: 0,
            point: p.point,
        })
        .collect()
}

fn timeout_wire(t: Timeout) -> (i64, bool) {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match t {
        Timeout::Forever => (-1, false),
        Timeout::Poll => (0, false),
        Timeout::Relative(ns) => (clamp(ns), false),
        Timeout::Absolute(ns) => (clamp(ns), true),
    }
}

fn wait_args(w: &WaitUserFenceRequest) -> WaitUserFenceArgs {
    let (timeout_ns, abstime) = timeout_wire(w.timeout);
    WaitUserFenceArgs {
        vm_id: w.vm.0,
        queue_id: w.queue.map_or(0, |q| q.0),
        addr: w.addr,
        op: w.op as u16,
        flags: if abstime {
            WaitFlags::ABSTIME.bits()
        } else {
            0
        },
        pad: 0,
        value: w.value,
        mask: w.mask,
        timeout_ns,
        reserved: [0; 2],
    }
}

/// The wire form of one bind op.
pub fn bind_op_wire(op: &BindOp) -> BindOpWire {
    let mut w = BindOpWire {
        flags: op.flags.bits(),
        pat_index: op.pat_index,
        addr: op.addr,
        range: op.range,
        ..Default::default()
    };
    match op.kind {
        BindOpKind::Map { bo, bo_offset } => {
            (w.op, w.bo_id, w.obj_offset) = (bind_op::MAP, bo.0, bo_offset);
        }
        BindOpKind::MapNull => (w.op, w.flags) = (bind_op::MAP, w.flags | BindFlags::NULL.bits()),
        BindOpKind::MapCpuMirror => {
            (w.op, w.flags) = (bind_op::MAP, w.flags | BindFlags::CPU_ADDR_MIRROR.bits());
        }
        BindOpKind::MapUserptr { userptr } => {
            (w.op, w.obj_offset) = (bind_op::MAP_USERPTR, userptr)
        }
        BindOpKind::Unmap => w.op = bind_op::UNMAP,
        BindOpKind::UnmapAll { bo } => (w.op, w.bo_id) = (bind_op::UNMAP_ALL, bo.0),
        BindOpKind::Prefetch { region } => {
            (w.op, w.prefetch_region) = (bind_op::PREFETCH, Region::raw(region));
        }
    }
    w
}

/// The wire form of one sync entry.
pub fn sync_wire(s: &SyncSpec) -> SyncWire {
    let flags = if s.signal {
        SyncFlags::SIGNAL.bits()
    } else {
        0
    };
    let mut w = SyncWire {
        flags,
        ..Default::default()
    };
    match s.kind {
        SyncKind::Syncobj(id) => (w.sync_type, w.handle) = (sync_type::SYNCOBJ, id.0),
        SyncKind::Timeline(id, point) => {
            (w.sync_type, w.handle, w.value) = (sync_type::TIMELINE_SYNCOBJ, id.0, point);
        }
        SyncKind::UserFence { addr, value } => {
            (w.sync_type, w.addr, w.value) = (sync_type::USER_FENCE, addr, value);
        }
    }
    w
}

/// The kind an EXPORT_TOKEN reply names.
pub fn export_kind(args: &ExportTokenArgs) -> Option<ObjectKind> {
    ObjectKind::from_raw(args.kind)
}
