//! The validating decoder: bytes of a `call` payload → a typed `Request`.
//!
//! Owns: framing (header, extensible args, strided arrays), every check that needs no driver
//! state, and writing replies back into a payload. Must not: look up objects, know errno values,
//! or panic on any input (every slice access is checked; `fuzz/` and the property tests feed it
//! arbitrary bytes).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::error::{ArrayKind, DecodeError};
use super::flags::{
    bind_op, sync_type, BatchFormat, BindFlags, BoCreateFlags, EngineClass, ExecQueueCreateFlags,
    ObjectKind, Placement, QueuePriority, Region, SyncFlags, SyncobjCreateFlags, SyncobjWaitFlags,
    VmCreateFlags, WaitFlags, WaitOp,
};
use super::request::*;
use super::wire::*;

/// Alignment of GPU VAs, ranges and BO offsets.
pub const BIND_ALIGN: u64 = 4096;

const HEADER_SIZE: usize = size_of::<CallHeader>();

/// Decode and validate one call.
pub fn decode(opcode: u64, payload: &[u8]) -> Result<Request, DecodeError> {
    let op = Opcode::from_raw(opcode).ok_or(DecodeError::UnknownOpcode(opcode))?;
    let mut cur = Cursor::open(op, payload)?;
    let request = match op {
        Opcode::DeviceQuery => {
            decode_out_only::<DeviceQueryArgs>(&cur).map(|_| Request::DeviceQuery)
        }
        Opcode::VmCreate => decode_vm_create(&cur),
        Opcode::VmDestroy => decode_id(&cur).map(|id| Request::VmDestroy(VmId(id))),
        Opcode::BoDestroy => decode_id(&cur).map(|id| Request::BoDestroy(BoId(id))),
        Opcode::ExecQueueDestroy => {
            decode_id(&cur).map(|id| Request::ExecQueueDestroy(QueueId(id)))
        }
        Opcode::SyncobjDestroy => decode_id(&cur).map(|id| Request::SyncobjDestroy(SyncobjId(id))),
        Opcode::BoCreate => decode_bo_create(&cur),
        Opcode::ExecQueueCreate => decode_queue_create(&cur),
        Opcode::VmBind => decode_vm_bind(&mut cur),
        Opcode::Exec => decode_exec(&mut cur),
        Opcode::WaitUserFence => decode_wait_user_fence(&cur),
        Opcode::SyncobjCreate => decode_syncobj_create(&cur),
        Opcode::SyncobjWait => decode_syncobj_wait(&mut cur),
        Opcode::SyncobjSignal => decode_syncobj_signal(&mut cur),
        Opcode::SyncobjQuery => decode_syncobj_query(&cur),
        Opcode::SyncobjTransfer => decode_syncobj_transfer(&cur),
        Opcode::ExportToken => {
            decode_out_only::<ExportTokenArgs>(&cur).map(|_| Request::ExportToken)
        }
        Opcode::Import => decode_import(&cur),
        Opcode::SyncobjReset => decode_syncobj_reset(&mut cur),
    }?;
    cur.finish()?;
    Ok(request)
}

/// Write a reply's out fields into the args area of `payload` (which `decode` accepted for
/// `opcode`). Returns the number of bytes of the payload that are meaningful to the client.
pub fn write_reply(opcode: u64, payload: &mut [u8], reply: &Reply) -> Result<usize, DecodeError> {
    let op = Opcode::from_raw(opcode).ok_or(DecodeError::UnknownOpcode(opcode))?;
    match (*reply, op) {
        (Reply::None, _) => Ok(payload.len()),
        (Reply::DeviceInfo(info), _) => patch::<DeviceQueryArgs>(payload, |a| *a = info),
        (Reply::NewId(id), Opcode::VmCreate) => patch::<VmCreateArgs>(payload, |a| a.vm_id = id),
        (Reply::NewId(id), Opcode::BoCreate) => patch::<BoCreateArgs>(payload, |a| a.bo_id = id),
        (Reply::NewId(id), Opcode::ExecQueueCreate) => {
            patch::<ExecQueueCreateArgs>(payload, |a| a.queue_id = id)
        }
        (Reply::NewId(id), Opcode::SyncobjCreate) => {
            patch::<SyncobjCreateArgs>(payload, |a| a.syncobj_id = id)
        }
        (Reply::NewId(id), _) => patch::<ImportArgs>(payload, |a| a.id = id),
        (Reply::FirstSignaled(i), _) => patch::<SyncobjWaitArgs>(payload, |a| a.first_signaled = i),
        (Reply::Point(p), _) => patch::<SyncobjQueryArgs>(payload, |a| a.point = p),
        (Reply::Token(kind, Token(t)), _) => patch::<ExportTokenArgs>(payload, |a| {
            a.kind = kind as u32;
            a.token = t;
        }),
    }
}

fn patch<T>(payload: &mut [u8], f: impl FnOnce(&mut T)) -> Result<usize, DecodeError>
where
    T: FromBytes + IntoBytes + KnownLayout + Immutable,
{
    let need = HEADER_SIZE + size_of::<T>();
    let got = payload.len();
    let area = payload
        .get_mut(HEADER_SIZE..need)
        .ok_or(DecodeError::Truncated { need, got })?;
    let mut args = T::read_from_bytes(area).map_err(|_| DecodeError::Truncated { need, got })?;
    f(&mut args);
    area.copy_from_slice(args.as_bytes());
    Ok(got)
}

/// Walks a payload: the header, the args struct, then the arrays in order.
struct Cursor<'a> {
    bytes: &'a [u8],
    /// Bytes of the args struct known to this server.
    args: &'a [u8],
    /// Offset of the next array.
    next: usize,
}

impl<'a> Cursor<'a> {
    fn open(op: Opcode, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let got = bytes.len();
        let (header, _) =
            CallHeader::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                need: HEADER_SIZE,
                got,
            })?;
        if header.version != UAPI_VERSION {
            return Err(DecodeError::BadVersion(header.version));
        }
        nonzero_is_err(header.pad as u64, "header.pad")?;
        nonzero_is_err(header.reserved, "header.reserved")?;
        let known = op.args_size();
        if (header.args_size as usize) < known || header.args_size > MAX_ARGS_SIZE {
            return Err(DecodeError::BadArgsSize {
                got: header.args_size,
                known,
            });
        }
        let end = HEADER_SIZE + header.args_size as usize;
        let all_args = bytes
            .get(HEADER_SIZE..end)
            .ok_or(DecodeError::Truncated { need: end, got })?;
        let (args, extension) = all_args.split_at(known);
        check_zero_tail(extension, known)?;
        Ok(Cursor {
            bytes,
            args,
            next: end,
        })
    }

    fn args<T: FromBytes>(&self) -> T {
        // INVARIANT: `open` sized `args` to exactly `op.args_size()`, which is `size_of::<T>()`
        // for the T each opcode's decoder reads; a mismatch would be a bug in this file (caught
        // by the round-trip tests), so fall back to a zeroed struct rather than panic.
        T::read_from_bytes(self.args).unwrap_or_else(|_| T::new_zeroed())
    }

    /// Take `count` elements of `stride` bytes, each decoded as `E` (its known prefix) with the
    /// rest required to be zero.
    fn array<E: FromBytes>(
        &mut self,
        array: ArrayKind,
        count: u32,
        stride: u32,
        max: u32,
    ) -> Result<Vec<E>, DecodeError> {
        if count > max {
            return Err(DecodeError::TooMany { array, count, max });
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let known = size_of::<E>();
        if (stride as usize) < known || stride % 8 != 0 || stride > MAX_STRIDE {
            return Err(DecodeError::BadStride {
                array,
                stride,
                known,
            });
        }
        let got = self.bytes.len();
        let len = (count as usize).checked_mul(stride as usize);
        let end = len.and_then(|l| l.checked_add(self.next));
        let end = end.ok_or(DecodeError::Truncated {
            need: usize::MAX,
            got,
        })?;
        let area = self
            .bytes
            .get(self.next..end)
            .ok_or(DecodeError::Truncated { need: end, got })?;
        let mut out = Vec::with_capacity(count as usize);
        for element in area.chunks_exact(stride as usize) {
            let (head, tail) = element.split_at(known);
            check_zero_tail(tail, known)?;
            out.push(
                E::read_from_bytes(head).map_err(|_| DecodeError::Truncated { need: end, got })?,
            );
        }
        self.next = end;
        Ok(out)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.next != self.bytes.len() {
            return Err(DecodeError::TrailingBytes {
                expected: self.next,
                got: self.bytes.len(),
            });
        }
        Ok(())
    }
}

fn check_zero_tail(tail: &[u8], known: usize) -> Result<(), DecodeError> {
    match tail.iter().position(|b| *b != 0) {
        Some(i) => Err(DecodeError::UnknownExtension { offset: known + i }),
        None => Ok(()),
    }
}

fn nonzero_is_err(value: u64, field: &'static str) -> Result<(), DecodeError> {
    if value != 0 {
        return Err(DecodeError::ReservedNonZero { field });
    }
    Ok(())
}

fn reserved2(r: [u64; 2]) -> Result<(), DecodeError> {
    nonzero_is_err(r[0] | r[1], "reserved")
}

fn flags<F: bitflags::Flags>(raw: F::Bits, field: &'static str) -> Result<F, DecodeError>
where
    F::Bits: Into<u64>,
{
    F::from_bits(raw).ok_or_else(|| {
        let known: u64 = F::all().bits().into();
        DecodeError::UnknownFlags {
            field,
            bits: raw.into() & !known,
        }
    })
}

fn decode_out_only<T: FromBytes + IntoBytes + Immutable>(
    cur: &Cursor<'_>,
) -> Result<(), DecodeError> {
    // Out-only structs must arrive zeroed: a client that fills them is confused, and zero is
    // what a newer server will expect from an old client in fields that later become inputs.
    let args: T = cur.args();
    if args.as_bytes().iter().any(|b| *b != 0) {
        return Err(DecodeError::ReservedNonZero {
            field: "out-only args",
        });
    }
    Ok(())
}

fn decode_id(cur: &Cursor<'_>) -> Result<u32, DecodeError> {
    let a: IdArgs = cur.args();
    nonzero_is_err(a.pad as u64, "pad")?;
    reserved2(a.reserved)?;
    Ok(a.id)
}

fn decode_vm_create(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: VmCreateArgs = cur.args();
    nonzero_is_err(a.vm_id as u64, "vm_id (out)")?;
    reserved2(a.reserved)?;
    let f: VmCreateFlags = flags(a.flags, "vm_create.flags")?;
    super::rules::vm_flags(f).map_err(|_| DecodeError::BadVmFlags(a.flags))?;
    Ok(Request::VmCreate(f))
}

fn decode_bo_create(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: BoCreateArgs = cur.args();
    nonzero_is_err(a.bo_id as u64, "bo_id (out)")?;
    reserved2(a.reserved)?;
    if a.size == 0 {
        return Err(DecodeError::Zero { field: "size" });
    }
    aligned(a.size, "size")?;
    let placement: Placement = flags(a.placement, "placement")?;
    if placement.is_empty() {
        return Err(DecodeError::Zero { field: "placement" });
    }
    let flags: BoCreateFlags = flags(a.flags, "bo_create.flags")?;
    let vm = (a.vm_id != 0).then_some(VmId(a.vm_id));
    Ok(Request::BoCreate(BoCreateRequest {
        size: a.size,
        placement,
        flags,
        vm,
    }))
}

fn decode_queue_create(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: ExecQueueCreateArgs = cur.args();
    nonzero_is_err(a.queue_id as u64, "queue_id (out)")?;
    reserved2(a.reserved)?;
    let flags = ExecQueueCreateFlags::from_bits(a.flags).ok_or(DecodeError::UnknownFlags {
        field: "queue.flags",
        bits: a.flags as u64,
    })?;
    let class = EngineClass::from_raw(a.engine_class).ok_or(DecodeError::BadEnum {
        field: "engine_class",
        value: a.engine_class as u64,
    })?;
    let priority = if flags.contains(ExecQueueCreateFlags::PRIORITY) {
        QueuePriority::from_raw(a.priority).ok_or(DecodeError::BadEnum {
            field: "priority",
            value: a.priority as u64,
        })?
    } else {
        nonzero_is_err(a.priority as u64, "priority (no PRIORITY flag)")?;
        QueuePriority::Normal
    };
    let batches = if flags.contains(ExecQueueCreateFlags::INTEL_BATCHES) {
        BatchFormat::Intel
    } else {
        BatchFormat::Native
    };
    Ok(Request::ExecQueueCreate {
        vm: VmId(a.vm_id),
        class,
        priority,
        batches,
    })
}

fn aligned(value: u64, field: &'static str) -> Result<(), DecodeError> {
    if value % BIND_ALIGN != 0 {
        return Err(DecodeError::Misaligned {
            field,
            value,
            align: BIND_ALIGN,
        });
    }
    Ok(())
}

fn no_overflow(start: u64, len: u64, field: &'static str) -> Result<(), DecodeError> {
    start
        .checked_add(len)
        .map(|_| ())
        .ok_or(DecodeError::Overflow { field, start, len })
}

fn decode_vm_bind(cur: &mut Cursor<'_>) -> Result<Request, DecodeError> {
    let a: VmBindArgs = cur.args();
    reserved2(a.reserved)?;
    let ops: Vec<BindOpWire> =
        cur.array(ArrayKind::BindOps, a.num_ops, a.op_stride, MAX_BIND_OPS)?;
    let syncs: Vec<SyncWire> =
        cur.array(ArrayKind::Syncs, a.num_syncs, a.sync_stride, MAX_SYNCS)?;
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, op)| decode_bind_op(i, op))
        .collect::<Result<Vec<_>, _>>()?;
    let syncs = decode_syncs(&syncs, !ops.is_empty())?;
    let queue = (a.queue_id != 0).then_some(QueueId(a.queue_id));
    Ok(Request::VmBind(VmBindRequest {
        vm: VmId(a.vm_id),
        queue,
        ops,
        syncs,
    }))
}

/// The op/flag table of Xe's `vm_bind_ioctl_check_args`, minus the checks needing VM state.
fn decode_bind_op(index: usize, w: &BindOpWire) -> Result<BindOp, DecodeError> {
    let bad = |reason| DecodeError::BadBindOp { index, reason };
    nonzero_is_err((w.pad as u64) | (w.pad2 as u64), "bind_op.pad")?;
    reserved2(w.reserved)?;
    let mut f: BindFlags = flags(w.flags, "bind_op.flags")?;
    let null = f.contains(BindFlags::NULL);
    let mirror = f.contains(BindFlags::CPU_ADDR_MIRROR);
    if w.op > bind_op::PREFETCH {
        return Err(DecodeError::BadEnum {
            field: "bind_op.op",
            value: w.op as u64,
        });
    }
    super::rules::bind_op_shape(super::rules::BindOpShape {
        op: w.op,
        flags: f,
        bo: w.bo_id != 0,
        offset: w.obj_offset != 0,
        range: w.addr != 0 || w.range != 0,
    })
    .map_err(bad)?;
    if w.op != bind_op::PREFETCH && w.prefetch_region != 0 {
        return Err(bad("prefetch_region only with PREFETCH"));
    }
    aligned(w.addr, "bind_op.addr")?;
    aligned(w.range, "bind_op.range")?;
    aligned(w.obj_offset, "bind_op.obj_offset")?;
    no_overflow(w.addr, w.range, "bind_op.addr")?;
    no_overflow(w.obj_offset, w.range, "bind_op.obj_offset")?;
    if w.range == 0 && w.op != bind_op::UNMAP_ALL {
        return Err(DecodeError::Zero {
            field: "bind_op.range",
        });
    }
    let kind = bind_op_kind(w, null, mirror).map_err(bad)?;
    f.remove(BindFlags::NULL | BindFlags::CPU_ADDR_MIRROR);
    Ok(BindOp {
        kind,
        addr: w.addr,
        range: w.range,
        flags: f,
        pat_index: w.pat_index,
    })
}

/// The request form of an op `rules::bind_op_shape` accepted.
fn bind_op_kind(w: &BindOpWire, null: bool, mirror: bool) -> Result<BindOpKind, &'static str> {
    Ok(match w.op {
        bind_op::MAP if null => BindOpKind::MapNull,
        bind_op::MAP if mirror => BindOpKind::MapCpuMirror,
        bind_op::MAP => BindOpKind::Map {
            bo: BoId(w.bo_id),
            bo_offset: w.obj_offset,
        },
        bind_op::UNMAP => BindOpKind::Unmap,
        bind_op::MAP_USERPTR => BindOpKind::MapUserptr {
            userptr: w.obj_offset,
        },
        bind_op::UNMAP_ALL => BindOpKind::UnmapAll { bo: BoId(w.bo_id) },
        _ => BindOpKind::Prefetch {
            region: Region::from_raw(w.prefetch_region).ok_or("unknown prefetch region")?,
        },
    })
}

/// Xe's `xe_sync_entry_parse` table, minus the handle lookups and the LR-VM check.
fn decode_syncs(wire: &[SyncWire], user_fence_allowed: bool) -> Result<Vec<SyncSpec>, DecodeError> {
    let mut user_fences = 0;
    let mut out = Vec::with_capacity(wire.len());
    for (index, w) in wire.iter().enumerate() {
        let bad = |reason| DecodeError::BadSync { index, reason };
        nonzero_is_err(w.pad as u64, "sync.pad")?;
        reserved2(w.reserved)?;
        let f: SyncFlags = flags(w.flags, "sync.flags")?;
        let signal = f.contains(SyncFlags::SIGNAL);
        let kind = match w.sync_type {
            sync_type::SYNCOBJ | sync_type::TIMELINE_SYNCOBJ if w.addr != 0 => {
                return Err(bad("syncobj entries take no addr"))
            }
            sync_type::SYNCOBJ if w.value != 0 => return Err(bad("binary syncobj takes no value")),
            sync_type::SYNCOBJ => SyncKind::Syncobj(SyncobjId(w.handle)),
            sync_type::TIMELINE_SYNCOBJ if w.value == 0 => return Err(bad("timeline point 0")),
            sync_type::TIMELINE_SYNCOBJ => SyncKind::Timeline(SyncobjId(w.handle), w.value),
            sync_type::USER_FENCE => {
                if !signal || !user_fence_allowed {
                    return Err(DecodeError::UserFenceNotSupported { index });
                }
                if w.handle != 0 {
                    return Err(bad("user fence takes no handle"));
                }
                if w.addr % 8 != 0 {
                    return Err(DecodeError::Misaligned {
                        field: "sync.addr",
                        value: w.addr,
                        align: 8,
                    });
                }
                user_fences += 1;
                SyncKind::UserFence {
                    addr: w.addr,
                    value: w.value,
                }
            }
            other => {
                return Err(DecodeError::BadEnum {
                    field: "sync.type",
                    value: other as u64,
                })
            }
        };
        out.push(SyncSpec { kind, signal });
    }
    if user_fences > 1 {
        return Err(DecodeError::MultipleUserFences);
    }
    Ok(out)
}

fn decode_exec(cur: &mut Cursor<'_>) -> Result<Request, DecodeError> {
    let a: ExecArgs = cur.args();
    reserved2(a.reserved)?;
    let batches: Vec<u64> = cur.array(ArrayKind::Batches, a.num_batches, 8, MAX_BATCHES)?;
    let syncs: Vec<SyncWire> =
        cur.array(ArrayKind::Syncs, a.num_syncs, a.sync_stride, MAX_SYNCS)?;
    for (i, b) in batches.iter().enumerate() {
        if b % 8 != 0 {
            let _ = i;
            return Err(DecodeError::Misaligned {
                field: "batch address",
                value: *b,
                align: 8,
            });
        }
    }
    let syncs = decode_syncs(&syncs, true)?;
    Ok(Request::Exec(ExecRequest {
        queue: QueueId(a.queue_id),
        batches,
        syncs,
    }))
}

fn timeout(raw: i64, abstime: bool) -> Timeout {
    match (raw, abstime) {
        (r, _) if r < 0 => Timeout::Forever,
        (r, true) => Timeout::Absolute(r.unsigned_abs()),
        (0, false) => Timeout::Poll,
        (r, false) => Timeout::Relative(r.unsigned_abs()),
    }
}

fn decode_wait_user_fence(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: WaitUserFenceArgs = cur.args();
    nonzero_is_err(a.pad as u64, "pad")?;
    reserved2(a.reserved)?;
    let f: WaitFlags = flags(a.flags, "wait.flags")?;
    let op = WaitOp::from_raw(a.op).ok_or(DecodeError::BadEnum {
        field: "wait.op",
        value: a.op as u64,
    })?;
    if a.addr % 8 != 0 {
        return Err(DecodeError::Misaligned {
            field: "wait.addr",
            value: a.addr,
            align: 8,
        });
    }
    Ok(Request::WaitUserFence(WaitUserFenceRequest {
        vm: VmId(a.vm_id),
        queue: (a.queue_id != 0).then_some(QueueId(a.queue_id)),
        addr: a.addr,
        op,
        value: a.value,
        mask: a.mask,
        timeout: timeout(a.timeout_ns, f.contains(WaitFlags::ABSTIME)),
    }))
}

fn decode_syncobj_create(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjCreateArgs = cur.args();
    nonzero_is_err(a.syncobj_id as u64, "syncobj_id (out)")?;
    reserved2(a.reserved)?;
    let f: SyncobjCreateFlags = flags(a.flags, "syncobj_create.flags")?;
    Ok(Request::SyncobjCreate {
        signaled: f.contains(SyncobjCreateFlags::SIGNALED),
    })
}

fn points(cur: &mut Cursor<'_>, count: u32, stride: u32) -> Result<Vec<SyncobjPoint>, DecodeError> {
    if count == 0 {
        return Err(DecodeError::Zero { field: "count" });
    }
    let wire: Vec<SyncobjPointWire> =
        cur.array(ArrayKind::SyncobjPoints, count, stride, MAX_SYNCOBJ_POINTS)?;
    wire.iter()
        .map(|w| {
            nonzero_is_err(w.pad as u64, "point.pad")?;
            Ok(SyncobjPoint {
                syncobj: SyncobjId(w.syncobj_id),
                point: w.point,
            })
        })
        .collect()
}

fn decode_syncobj_wait(cur: &mut Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjWaitArgs = cur.args();
    nonzero_is_err(a.first_signaled as u64, "first_signaled (out)")?;
    reserved2(a.reserved)?;
    let mut f: SyncobjWaitFlags = flags(a.flags, "syncobj_wait.flags")?;
    let points = points(cur, a.count, a.stride)?;
    let timeout = timeout(a.timeout_ns, f.contains(SyncobjWaitFlags::ABSTIME));
    f.remove(SyncobjWaitFlags::ABSTIME);
    Ok(Request::SyncobjWait(SyncobjWaitRequest {
        points,
        flags: f,
        timeout,
    }))
}

fn decode_syncobj_signal(cur: &mut Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjSignalArgs = cur.args();
    reserved2(a.reserved)?;
    Ok(Request::SyncobjSignal(points(cur, a.count, a.stride)?))
}

fn decode_syncobj_reset(cur: &mut Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjResetArgs = cur.args();
    reserved2(a.reserved)?;
    let ids = points(cur, a.count, a.stride)?
        .into_iter()
        .map(|p| {
            nonzero_is_err(p.point, "reset.point")?;
            Ok(p.syncobj)
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(Request::SyncobjReset(ids))
}

fn decode_syncobj_query(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjQueryArgs = cur.args();
    nonzero_is_err(a.pad as u64, "pad")?;
    nonzero_is_err(a.point, "point (out)")?;
    reserved2(a.reserved)?;
    Ok(Request::SyncobjQuery(SyncobjId(a.syncobj_id)))
}

fn decode_syncobj_transfer(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: SyncobjTransferArgs = cur.args();
    nonzero_is_err(a.pad as u64, "pad")?;
    reserved2(a.reserved)?;
    let f: SyncobjWaitFlags = flags(a.flags, "transfer.flags")?;
    if f.intersects(!SyncobjWaitFlags::WAIT_FOR_SUBMIT) {
        let bits = f.difference(SyncobjWaitFlags::WAIT_FOR_SUBMIT).bits() as u64;
        return Err(DecodeError::UnknownFlags {
            field: "transfer.flags",
            bits,
        });
    }
    Ok(Request::SyncobjTransfer(SyncobjTransferRequest {
        src: SyncobjPoint {
            syncobj: SyncobjId(a.src_id),
            point: a.src_point,
        },
        dst: SyncobjPoint {
            syncobj: SyncobjId(a.dst_id),
            point: a.dst_point,
        },
        wait_for_submit: f.contains(SyncobjWaitFlags::WAIT_FOR_SUBMIT),
    }))
}

fn decode_import(cur: &Cursor<'_>) -> Result<Request, DecodeError> {
    let a: ImportArgs = cur.args();
    nonzero_is_err(a.id as u64, "id (out)")?;
    reserved2(a.reserved)?;
    let kind = ObjectKind::from_raw(a.kind).ok_or(DecodeError::BadEnum {
        field: "import.kind",
        value: a.kind as u64,
    })?;
    let token = (a.token != [0, 0]).then_some(Token(a.token));
    Ok(Request::Import { kind, token })
}
