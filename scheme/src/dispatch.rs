//! Dispatch of transport requests through redox-scheme's own decoder.
//!
//! Owns: building an `Sqe` (the kernel's request record) from a borrowed request, decoding it
//! with `Op::from_sqe_unchecked` and running `handle_sync_dont_consume`, so that a transport
//! other than the Redox kernel (the host transport, tests) exercises exactly the code path that
//! runs on Redox. This is the only module of the crate with `unsafe`. Must not: keep any pointer
//! past the end of `dispatch` (the `Op` borrows the caller's buffers and is dropped inside).

#![allow(unsafe_code)]

use redox_scheme::scheme::{IntoTag, Op, SchemeResponse, SchemeState, SchemeSync};
use redox_scheme::CallerCtx;
use syscall::flag::{EventFlags, MapFlags, MunmapFlags};
use syscall::schemev2::{Opcode, Sqe, SqeFlags};

/// A request as a transport receives it, with borrowed buffers.
#[derive(Debug)]
pub enum TransportOp<'a> {
    /// `openat(dirfd, path)`.
    OpenAt {
        /// The directory handle (the root).
        dirfd: usize,
        /// The path.
        path: &'a str,
    },
    /// `dup(fd, buf)`.
    Dup {
        /// The handle.
        fd: usize,
        /// The dup path.
        buf: &'a [u8],
    },
    /// `read(fd, buf, offset)`.
    Read {
        /// The handle.
        fd: usize,
        /// Out buffer.
        buf: &'a mut [u8],
        /// Offset.
        offset: u64,
    },
    /// `call(fd, payload, metadata)` or, with `second`, `call_multiple_ids`.
    Call {
        /// The handle.
        fd: usize,
        /// Another handle named by the call.
        second: Option<usize>,
        /// In/out payload.
        payload: &'a mut [u8],
        /// Metadata (`[opcode, …]`).
        metadata: [u64; 3],
    },
    /// `fevent(fd, flags)`.
    Fevent {
        /// The handle.
        fd: usize,
        /// Requested events.
        flags: EventFlags,
    },
    /// `mmap_prep(fd, offset, len, flags)`.
    MmapPrep {
        /// The handle.
        fd: usize,
        /// Offset in the object.
        offset: u64,
        /// Bytes.
        len: usize,
        /// Map flags.
        flags: MapFlags,
    },
    /// `munmap(fd, offset, len, flags)`.
    Munmap {
        /// The handle.
        fd: usize,
        /// Offset in the object.
        offset: u64,
        /// Bytes.
        len: usize,
        /// Unmap flags.
        flags: MunmapFlags,
    },
}

fn sqe(opcode: Opcode, tag: u32, pid: usize, args: [u64; 6]) -> Sqe {
    Sqe {
        opcode: opcode as u8,
        sqe_flags: SqeFlags::empty(),
        _rsvd: 0,
        tag,
        args,
        caller: pid as u64,
    }
}

fn to_sqe(op: &mut TransportOp<'_>, tag: u32, pid: usize) -> Sqe {
    let ptr = |p: *const u8| p as usize as u64;
    match op {
        TransportOp::OpenAt { dirfd, path } => sqe(
            Opcode::OpenAt,
            tag,
            pid,
            [
                *dirfd as u64,
                ptr(path.as_ptr()),
                path.len() as u64,
                0,
                0,
                0,
            ],
        ),
        TransportOp::Dup { fd, buf } => sqe(
            Opcode::Dup,
            tag,
            pid,
            [*fd as u64, ptr(buf.as_ptr()), buf.len() as u64, 0, 0, 0],
        ),
        TransportOp::Read { fd, buf, offset } => sqe(
            Opcode::Read,
            tag,
            pid,
            [
                *fd as u64,
                ptr(buf.as_mut_ptr()),
                buf.len() as u64,
                *offset,
                0,
                0,
            ],
        ),
        TransportOp::Call {
            fd,
            second,
            payload,
            metadata,
        } => {
            let (p, len) = (ptr(payload.as_mut_ptr()), payload.len() as u64);
            match second {
                None => sqe(
                    Opcode::Call,
                    tag,
                    pid,
                    [*fd as u64, p, len, metadata[0], metadata[1], metadata[2]],
                ),
                Some(other) => {
                    let mut s = sqe(
                        Opcode::Call,
                        tag,
                        pid,
                        [*fd as u64, p, len, metadata[0], metadata[1], *other as u64],
                    );
                    s.sqe_flags = SqeFlags::MULTIPLE_IDS;
                    s
                }
            }
        }
        TransportOp::Fevent { fd, flags } => sqe(
            Opcode::Fevent,
            tag,
            pid,
            [*fd as u64, flags.bits() as u64, 0, 0, 0, 0],
        ),
        TransportOp::MmapPrep {
            fd,
            offset,
            len,
            flags,
        } => sqe(
            Opcode::MmapPrep,
            tag,
            pid,
            [*fd as u64, *len as u64, flags.bits() as u64, *offset, 0, 0],
        ),
        TransportOp::Munmap {
            fd,
            offset,
            len,
            flags,
        } => sqe(
            Opcode::Munmap,
            tag,
            pid,
            [*fd as u64, *len as u64, flags.bits() as u64, *offset, 0, 0],
        ),
    }
}

/// The process a request comes from, as the transport knows it (the host: the peer
/// credentials of the connection the handle descends from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer {
    /// Process id (per-process limits).
    pub pid: usize,
    /// User id (who may see other clients through the root).
    pub uid: u32,
}

/// Dispatch `op` (request tag `tag`, from `peer`) to `scheme` through redox-scheme's decoder.
pub fn dispatch<S: SchemeSync>(
    scheme: &mut S,
    state: &mut SchemeState,
    mut op: TransportOp<'_>,
    tag: u32,
    peer: Peer,
) -> SchemeResponse {
    let Peer { pid, uid } = peer;
    let sqe = to_sqe(&mut op, tag, pid);
    // SAFETY: every pointer in `sqe` comes from a slice or str borrowed by `op` (exclusively for
    // the mutable ones), with its exact length, so each is non-null, aligned for u8 and valid for
    // that many bytes; `op` outlives the decoded `Op`, which is dropped before this function
    // returns; paths come from `&str`, so the decoder's unchecked UTF-8 conversion is sound; the
    // opcodes built by `to_sqe` never make the decoder read a `Stat` or `TimeSpec` buffer.
    let decoded = unsafe { Op::from_sqe_unchecked(&sqe) };
    let Some(mut decoded) = decoded else {
        return SchemeResponse::Regular(Err(syscall::Error::new(syscall::error::ENOSYS)));
    };
    let caller = CallerCtx {
        pid,
        uid,
        gid: 0,
        id: decoded.req_id(),
    };
    // `decoded` (and the borrows it hides) ends here, before `op` does.
    decoded.handle_sync_dont_consume(&caller, scheme, state)
}

/// The request id a transport request with tag `tag` gets (what `CallerCtx::id` holds when
/// it is dispatched), so a transport can ask the server about its parked requests.
pub fn request_id(tag: u32) -> redox_scheme::Id {
    caller_ctx(0, tag).id
}

/// A caller context with request tag `tag` (for transports and tests that call `SchemeSync`
/// methods directly and need distinct request ids).
pub fn caller_ctx(pid: usize, tag: u32) -> CallerCtx {
    let sqe = sqe(Opcode::Fsync, tag, pid, [0; 6]);
    // SAFETY: an Fsync SQE carries no pointers; decoding it reads only the integers above.
    let op = unsafe { Op::from_sqe_unchecked(&sqe) };
    let id = match op {
        Some(op) => op.into_tag().id(),
        // Fsync is always decodable; keep a usable context regardless.
        None => crate::testing::caller().id,
    };
    CallerCtx {
        pid,
        uid: 0,
        gid: 0,
        id,
    }
}
