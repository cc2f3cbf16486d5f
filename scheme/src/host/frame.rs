//! The host transport's message framing, declared once, as data.
//!
//! Owns: the request and reply records exchanged over a `SOCK_SEQPACKET` Unix socket (one
//! message per request or reply, so a frame is never split or merged), and their size caps.
//! Must not: interpret payloads (the scheme's decoder does).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Largest payload a request or reply may carry (the socket's message size bounds it).
pub const MAX_FRAME_PAYLOAD: usize = 128 * 1024;

/// Kinds of request.
pub mod kind {
    /// `openat(connection's handle, payload as path)`.
    pub const OPEN: u32 = 1;
    /// `dup(handle, payload)`.
    pub const DUP: u32 = 2;
    /// `read(handle, out_len bytes, offset = args[0])`.
    pub const READ: u32 = 3;
    /// `call(handle, payload, metadata = args[0..3])`.
    pub const CALL: u32 = 4;
    /// `fevent(handle, flags = args[0])`.
    pub const FEVENT: u32 = 5;
    /// `mmap_prep(handle, offset = args[0], len = args[1], flags = args[2])`.
    pub const MMAP: u32 = 6;
    /// `munmap(handle, offset = args[0], len = args[1], flags = args[2])`.
    pub const MUNMAP: u32 = 7;
    /// `MM_FD(device handle, payload = uapi::mm::MmFdArgs)` with one fd (SCM_RIGHTS): a
    /// descriptor of the client's memory manager (its userfaultfd, or a memfd of its memory).
    pub const MM_FD: u32 = 8;
}

/// A request: this record, then `payload_len` bytes (and, for `MM_FD`, one fd).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RequestFrame {
    /// `kind::*`.
    pub kind: u32,
    /// Echoed in the reply.
    pub tag: u32,
    /// Kind-specific integers.
    pub args: [u64; 4],
    /// Bytes of payload that follow.
    pub payload_len: u32,
    /// Bytes the client can take back (READ).
    pub out_len: u32,
}

/// A reply: this record, then `out_len` bytes, and an fd (SCM_RIGHTS) when `has_fd` is 1.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ReplyFrame {
    /// The request's tag.
    pub tag: u32,
    /// 1 when an fd travels with the reply.
    pub has_fd: u32,
    /// ≥ 0: the result; < 0: minus a Redox errno.
    pub result: i64,
    /// Bytes of data that follow.
    pub out_len: u32,
    /// Zero.
    pub pad: u32,
}

/// The tag of an unsolicited event message: `result` holds the ready `EventFlags` bits. The
/// server sends one on a connection whose handle the client subscribed with FEVENT when the
/// handle becomes ready, so the connection's fd turns readable and can be waited for with
/// poll(2). Clients never use tag 0 for requests.
pub const EVENT_TAG: u32 = 0;

/// Size of a request record.
pub const REQUEST_SIZE: usize = size_of::<RequestFrame>();
/// Size of a reply record.
pub const REPLY_SIZE: usize = size_of::<ReplyFrame>();
