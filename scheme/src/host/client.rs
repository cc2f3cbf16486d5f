//! The client side of the host transport: one `HostHandle` per scheme handle.
//!
//! Owns: connecting to the server socket, sending one request and receiving its reply, and
//! receiving the new connection (an fd) that `open` / `dup` return and the memory fd `mmap`
//! returns. Must not: interpret payloads or errno beyond passing them up.
//!
//! A `HostHandle` is a socket; its fd is the capability. Send it to another process with
//! SCM_RIGHTS (`into_fd` / `from_fd`) and it keeps working there.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::IoSliceMut;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendFlags, SocketAddrUnix, SocketType,
};
use syscall::flag::EventFlags;
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

use super::frame::{kind, ReplyFrame, RequestFrame, EVENT_TAG, MAX_FRAME_PAYLOAD, REPLY_SIZE};
use super::shm::SharedMapping;

/// An error of a host-transport call.
#[derive(Debug, Error)]
pub enum HostError {
    /// The scheme answered with this Redox errno.
    #[error("scheme error {0}")]
    Scheme(i32),
    /// The transport itself failed (server gone, bad reply).
    #[error("transport: {0}")]
    Io(#[from] rustix::io::Errno),
    /// The reply was malformed.
    #[error("malformed reply")]
    BadReply,
}

impl HostError {
    /// The Redox errno, if the scheme produced this error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            HostError::Scheme(e) => Some(*e),
            _ => None,
        }
    }
}

/// One scheme handle on the host.
pub struct HostHandle {
    fd: OwnedFd,
    tag: AtomicU32,
    /// One request in flight per handle: replies come back in order on the socket.
    lock: Mutex<()>,
    /// Event bits received (unsolicited messages) and not yet taken.
    events: AtomicU32,
}

/// A CPU mapping of a BO handle; unmapped (and reported to the server) on drop.
pub struct BoMapping<'a> {
    map: SharedMapping,
    handle: &'a HostHandle,
    offset: u64,
}

impl BoMapping<'_> {
    /// The shared memory.
    pub fn memory(&self) -> &SharedMapping {
        &self.map
    }
}

impl Drop for BoMapping<'_> {
    fn drop(&mut self) {
        let args = [self.offset, self.map.len() as u64, 0, 0];
        let _ = self.handle.transact(kind::MUNMAP, args, &[], 0);
    }
}

/// A CPU mapping of a BO handle that keeps its handle alive (for callers that share handles
/// through `Arc`); unmapped (and reported to the server) on drop.
pub struct SharedBoMapping {
    map: SharedMapping,
    handle: Arc<HostHandle>,
    offset: u64,
}

impl SharedBoMapping {
    /// The shared memory.
    pub fn memory(&self) -> &SharedMapping {
        &self.map
    }
}

impl Drop for SharedBoMapping {
    fn drop(&mut self) {
        let args = [self.offset, self.map.len() as u64, 0, 0];
        let _ = self.handle.transact(kind::MUNMAP, args, &[], 0);
    }
}

impl HostHandle {
    /// Connect to the server socket; the connection is the scheme root.
    pub fn connect(path: &Path) -> Result<HostHandle, HostError> {
        let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(HostHandle::from_fd(fd))
    }

    /// A handle from a received fd.
    pub fn from_fd(fd: OwnedFd) -> HostHandle {
        HostHandle {
            fd,
            tag: AtomicU32::new(1),
            lock: Mutex::new(()),
            events: AtomicU32::new(0),
        }
    }

    /// The fd, to pass to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `openat(self, path)` (on the root: `"card0"`).
    pub fn open(&self, path: &str) -> Result<HostHandle, HostError> {
        let (_, _, fd) = self.transact(kind::OPEN, [0; 4], path.as_bytes(), 0)?;
        fd.map(HostHandle::from_fd).ok_or(HostError::BadReply)
    }

    /// `dup(self, path)` (on a device handle: `"bo/<id>"`, `"syncobj/<id>"`).
    pub fn dup(&self, path: &str) -> Result<HostHandle, HostError> {
        let (_, _, fd) = self.transact(kind::DUP, [0; 4], path.as_bytes(), 0)?;
        fd.map(HostHandle::from_fd).ok_or(HostError::BadReply)
    }

    /// `call(self, payload, metadata)`; the payload is updated in place.
    pub fn call(&self, payload: &mut [u8], metadata: [u64; 3]) -> Result<usize, HostError> {
        let args = [metadata[0], metadata[1], metadata[2], 0];
        let (result, out, _) = self.transact(kind::CALL, args, payload, 0)?;
        if out.len() != payload.len() {
            return Err(HostError::BadReply);
        }
        payload.copy_from_slice(&out);
        Ok(result)
    }

    /// `read(self, buf, offset)`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize, HostError> {
        let want = buf.len().min(MAX_FRAME_PAYLOAD) as u32;
        let (_, out, _) = self.transact(kind::READ, [offset, 0, 0, 0], &[], want)?;
        let n = out.len().min(buf.len());
        // PANIC: n is at most both lengths.
        buf[..n].copy_from_slice(&out[..n]);
        Ok(n)
    }

    /// `fevent(self, flags)`: what is ready now.
    pub fn fevent(&self, flags: EventFlags) -> Result<EventFlags, HostError> {
        let (r, _, _) = self.transact(kind::FEVENT, [flags.bits() as u64, 0, 0, 0], &[], 0)?;
        Ok(EventFlags::from_bits_retain(r))
    }

    /// Take the event bits the server pushed since the last call (after subscribing with
    /// `fevent`). The handle's fd turns readable when an event arrives, so it can be waited for
    /// with poll(2); this reads the pending event messages without blocking.
    pub fn take_events(&self) -> Result<EventFlags, HostError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; REPLY_SIZE];
        loop {
            match recv(self.fd.as_fd(), &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Err(HostError::Io(rustix::io::Errno::PIPE)),
                Ok((n, _)) => {
                    let frame = ReplyFrame::read_from_prefix(buf.get(..n).unwrap_or_default());
                    let (reply, _) = frame.map_err(|_| HostError::BadReply)?;
                    if reply.tag != EVENT_TAG {
                        return Err(HostError::BadReply);
                    }
                    self.events.fetch_or(reply.result as u32, Ordering::Relaxed);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => return Err(HostError::Io(e)),
            }
        }
        let bits = self.events.swap(0, Ordering::Relaxed);
        Ok(EventFlags::from_bits_retain(bits as usize))
    }

    /// `mmap` of a BO handle: `len` bytes at `offset`, shared with every other mapping.
    pub fn mmap(&self, offset: u64, len: usize) -> Result<BoMapping<'_>, HostError> {
        let map = self.map_memory(offset, len)?;
        Ok(BoMapping {
            map,
            handle: self,
            offset,
        })
    }

    /// As `mmap`, for a handle held in an `Arc`: the mapping keeps the handle alive.
    pub fn mmap_shared(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
    ) -> Result<SharedBoMapping, HostError> {
        let map = self.map_memory(offset, len)?;
        Ok(SharedBoMapping {
            map,
            handle: Arc::clone(self),
            offset,
        })
    }

    /// The raw `mmap` exchange: the memory object the server passes for `len` bytes at
    /// `offset` of a BO handle, and the file offset of `offset` in it. gpud passes the BO's
    /// own memfd (exactly the BO's size, file offset = BO offset). The server counts this as
    /// a mapping, as `mmap` does; nothing reports it unmapped.
    pub fn mmap_fd(&self, offset: u64, len: usize) -> Result<(OwnedFd, u64), HostError> {
        let args = [offset, len as u64, 0, 0];
        let (file_offset, _, fd) = self.transact(kind::MMAP, args, &[], 0)?;
        Ok((fd.ok_or(HostError::BadReply)?, file_offset as u64))
    }

    /// MM_FD on a device handle: pass `fd` (the client's userfaultfd or a memfd of its
    /// memory) with `payload` (`uapi::mm::encode_mm_fd`).
    pub fn send_mm_fd(&self, payload: &[u8], fd: BorrowedFd<'_>) -> Result<(), HostError> {
        self.transact_fd(kind::MM_FD, [0; 4], payload, 0, Some(fd))
            .map(drop)
    }

    fn map_memory(&self, offset: u64, len: usize) -> Result<SharedMapping, HostError> {
        let (fd, file_offset) = self.mmap_fd(offset, len)?;
        Ok(SharedMapping::map(&fd, file_offset, len)?)
    }

    fn transact(
        &self,
        kind: u32,
        args: [u64; 4],
        payload: &[u8],
        out_len: u32,
    ) -> Result<(usize, Vec<u8>, Option<OwnedFd>), HostError> {
        self.transact_fd(kind, args, payload, out_len, None)
    }

    fn transact_fd(
        &self,
        kind: u32,
        args: [u64; 4],
        payload: &[u8],
        out_len: u32,
        pass: Option<BorrowedFd<'_>>,
    ) -> Result<(usize, Vec<u8>, Option<OwnedFd>), HostError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let tag = match self.tag.fetch_add(1, Ordering::Relaxed) {
            EVENT_TAG => self.tag.fetch_add(1, Ordering::Relaxed),
            t => t,
        };
        // Larger payloads would be truncated by the socket; refuse them here with E2BIG.
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|n| *n as usize <= MAX_FRAME_PAYLOAD)
            .ok_or(HostError::Scheme(syscall::error::E2BIG))?;
        let frame = RequestFrame {
            kind,
            tag,
            args,
            payload_len,
            out_len,
        };
        send(
            self.fd.as_fd(),
            &[frame.as_bytes(), payload],
            pass,
            SendFlags::empty(),
        )?;
        // Replies carry at most the payload back (CALL) or `out_len` bytes (READ).
        let room = payload.len().max(out_len as usize);
        let (reply, out, fd) = loop {
            let (reply, out, fd) = recv_reply(self.fd.as_fd(), room)?;
            if reply.tag != EVENT_TAG {
                break (reply, out, fd);
            }
            self.events.fetch_or(reply.result as u32, Ordering::Relaxed);
        };
        if reply.tag != tag {
            return Err(HostError::BadReply);
        }
        if reply.result < 0 {
            let errno = i32::try_from(-reply.result).unwrap_or(syscall::error::EIO);
            return Err(HostError::Scheme(errno));
        }
        Ok((reply.result as usize, out, fd))
    }
}

impl AsFd for HostHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Send one message made of `parts`, with an optional fd.
pub(super) fn send(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    pass: Option<BorrowedFd<'_>>,
    flags: SendFlags,
) -> rustix::io::Result<()> {
    let iov: Vec<rustix::io::IoSlice<'_>> =
        parts.iter().map(|p| rustix::io::IoSlice::new(p)).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(pass) = pass {
        fds = [pass];
        control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(fd, &iov, &mut control, flags | SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receive one message into `buf`; returns its length (0 at end of stream) and any fd.
pub(super) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> rustix::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(fd, &mut iov, &mut control, flags | RecvFlags::CMSG_CLOEXEC)?;
    let mut passed = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                passed.get_or_insert(f);
            }
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(rustix::io::Errno::MSGSIZE);
    }
    Ok((msg.bytes, passed))
}

fn recv_reply(
    fd: BorrowedFd<'_>,
    room: usize,
) -> Result<(ReplyFrame, Vec<u8>, Option<OwnedFd>), HostError> {
    let mut buf = vec![0u8; REPLY_SIZE + room.min(MAX_FRAME_PAYLOAD)];
    let (n, passed) = recv(fd, &mut buf, RecvFlags::empty())?;
    if n == 0 {
        return Err(HostError::Io(rustix::io::Errno::PIPE));
    }
    // PANIC: recvmsg without MSG_TRUNC reports at most the buffer's length.
    let (reply, rest) = ReplyFrame::read_from_prefix(&buf[..n]).map_err(|_| HostError::BadReply)?;
    let out = rest
        .get(..reply.out_len as usize)
        .ok_or(HostError::BadReply)?
        .to_vec();
    if (reply.has_fd == 1) != passed.is_some() {
        return Err(HostError::BadReply);
    }
    Ok((reply, out, passed))
}
