//! The server side of the host transport: a Unix `SOCK_SEQPACKET` socket, one connection per
//! scheme handle, every request dispatched through redox-scheme's decoder.
//!
//! Owns: accepting connections (each new one is the scheme root), turning frames into
//! `TransportOp`s for `crate::dispatch`, creating a socketpair per new handle (`open`/`dup`) and
//! passing one end back with SCM_RIGHTS, passing a BO's memory fd for `mmap`, parking requests
//! that answer EWOULDBLOCK and retrying them when the scheme says they are due (an eventfd in
//! the poll set is the scheme's wake hook: fence callbacks write it), and `on_close` when a
//! connection's last fd closes.
//! Must not: block on one client (sockets are polled; replies are sent without waiting).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redox_scheme::scheme::{SchemeResponse, SchemeState, SchemeSync};
use redox_scheme::OpenResult;
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use syscall::error::{EINVAL, EIO, EWOULDBLOCK};
use syscall::flag::{EventFlags, MapFlags, MunmapFlags};
use zerocopy::{FromBytes, IntoBytes};

use super::client::{recv, send};
use super::frame::{kind, ReplyFrame, RequestFrame, EVENT_TAG, MAX_FRAME_PAYLOAD, REQUEST_SIZE};
use super::HostMemory;
use crate::dispatch::{dispatch, Peer, TransportOp};
use crate::GpuScheme;

/// Connections served at once; further ones are accepted and closed at once, so a flood of
/// connections cannot exhaust the daemon's fds (each client is also limited by the scheme).
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections (root connections and derived handles) one user, by peer uid, may hold at
/// once by default: a quarter of [`MAX_CONNECTIONS`], so one user's flood leaves the rest
/// to others. Further connections of that user are accepted and closed at once.
pub const MAX_CONNECTIONS_PER_UID: usize = MAX_CONNECTIONS / 4;
/// How long the listener is left alone after `accept` found no descriptor (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM): the pending connection keeps the listener readable, so polling it
/// again at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One connection = one scheme handle.
struct Conn {
    fd: OwnedFd,
    handle: usize,
    /// Connections accepted on the listener name the root, which is never closed.
    is_root: bool,
    /// The peer process of the root connection it descends from (per-process limits, and
    /// its user for the root's cross-client views).
    peer: Peer,
}

/// A request that answered EWOULDBLOCK, kept to retry.
struct Parked {
    conn: u64,
    frame: RequestFrame,
    payload: Vec<u8>,
}

/// What handling one request produced.
enum Outcome {
    Reply(i64, Vec<u8>, Option<OwnedFd>),
    Park,
}

/// Wakes a [`HostServer`]'s loop from another thread: its `poll` returns at once. A thread
/// that sets the flag `serve`'s `stop` reads must wake the loop too, or the loop notices only
/// at the end of its tick (an idle loop sleeps in `poll` until then).
#[derive(Clone)]
pub struct LoopWaker(Arc<OwnedFd>);

impl LoopWaker {
    /// Makes the loop's wake source readable.
    pub fn wake(&self) {
        // A full counter (never reached) or any error still leaves the fd readable.
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

/// The host transport server around a `GpuScheme`.
pub struct HostServer<D: HostMemory> {
    scheme: GpuScheme<D>,
    state: SchemeState,
    listener: OwnedFd,
    root: usize,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    parked: Vec<Parked>,
    buf: Vec<u8>,
    max_per_uid: usize,
    accept_backoff: Duration,
    /// The listener is not polled before this instant (after running out of descriptors).
    accept_paused_until: Option<Instant>,
    /// `accept` calls that failed for lack of descriptors or memory.
    accept_failures: u64,
    /// The wake source: an eventfd the driver's fence callbacks write (through the scheme's
    /// wake hook) when a parked request may be answerable.
    wake: Arc<OwnedFd>,
    /// Loop turns that found the wake source readable (for tests).
    wakeups: u64,
}

impl<D: HostMemory> HostServer<D> {
    /// Listen on `path` (which must not exist) and serve `scheme`.
    pub fn bind(path: &Path, mut scheme: GpuScheme<D>) -> rustix::io::Result<Self> {
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&listener, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&listener, 64)?;
        let root = scheme.scheme_root().map_err(|_| rustix::io::Errno::IO)?;
        let wake = Arc::new(rustix::event::eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?);
        let hook = LoopWaker(wake.clone());
        scheme.set_wake_hook(Arc::new(move || hook.wake()));
        // The daemon's own user administers it (as root does on Redox).
        scheme.set_admin_uid(rustix::process::getuid().as_raw());
        Ok(HostServer {
            scheme,
            state: SchemeState::new(),
            listener,
            root,
            conns: BTreeMap::new(),
            next_conn: 1,
            parked: Vec::new(),
            buf: vec![0u8; REQUEST_SIZE + MAX_FRAME_PAYLOAD],
            max_per_uid: MAX_CONNECTIONS_PER_UID,
            accept_backoff: ACCEPT_BACKOFF,
            accept_paused_until: None,
            accept_failures: 0,
            wake,
            wakeups: 0,
        })
    }

    /// Sets the connections one user may hold (default [`MAX_CONNECTIONS_PER_UID`]) and the
    /// pause after `accept` ran out of descriptors (default [`ACCEPT_BACKOFF`]).
    pub fn with_connection_limits(mut self, per_uid: usize, accept_backoff: Duration) -> Self {
        self.max_per_uid = per_uid;
        self.accept_backoff = accept_backoff;
        self
    }

    /// How many `accept` calls failed for lack of descriptors or memory (each one pauses the
    /// listener for the back-off).
    pub fn accept_failures(&self) -> u64 {
        self.accept_failures
    }

    /// The scheme (for inspection).
    pub fn scheme(&self) -> &GpuScheme<D> {
        &self.scheme
    }

    /// Turns on which the wake source was readable (a fence callback woke the loop).
    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    /// A handle that wakes this server's loop (for a thread that stops it).
    pub fn waker(&self) -> LoopWaker {
        LoopWaker(self.wake.clone())
    }

    /// Requests parked now.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Serve until `stop` returns true (checked after every turn: at least every `tick`, and
    /// at once after a [`LoopWaker::wake`]).
    pub fn serve(
        &mut self,
        tick: Duration,
        mut stop: impl FnMut(&GpuScheme<D>) -> bool,
    ) -> rustix::io::Result<()> {
        while !stop(&self.scheme) {
            self.run_once(tick)?;
        }
        Ok(())
    }

    /// Wait up to `timeout` for activity, handle it, and retry parked requests that are due.
    pub fn run_once(&mut self, timeout: Duration) -> rustix::io::Result<()> {
        // Device progress arrives on the wake source; only deadlines (and parked calls the
        // driver cannot watch, polled every `POLL_NS`) need the timer.
        let timeout = match self.scheme.next_wake_ns() {
            Some(at) if !self.parked.is_empty() => {
                let now = self.scheme.driver().now_ns();
                timeout.min(Duration::from_nanos(at.saturating_sub(now)))
            }
            _ => timeout,
        };
        // After running out of descriptors the listener rests for the back-off, never spins.
        let now = Instant::now();
        self.accept_paused_until = self.accept_paused_until.filter(|&t| t > now);
        let (timeout, listen) = match self.accept_paused_until {
            Some(t) => (timeout.min(t - now), PollFlags::empty()),
            None => (timeout, PollFlags::IN),
        };
        let ts = rustix::event::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as i64,
        };
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        let (listener_ready, woken, ready) = {
            let mut fds = vec![
                PollFd::new(&self.listener, listen),
                PollFd::new(&*self.wake, PollFlags::IN),
            ];
            // A connection with a parked request is not read again until it is answered: replies
            // stay in request order, and one client cannot pile up parked requests. Hang-ups
            // are still reported (poll always reports HUP/ERR).
            let parked: Vec<u64> = self.parked.iter().map(|p| p.conn).collect();
            fds.extend(self.conns.iter().map(|(id, c)| {
                let events = if parked.contains(id) {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                };
                PollFd::new(&c.fd, events)
            }));
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e),
            }
            let ready: Vec<(u64, PollFlags)> = ids
                .iter()
                .zip(&fds[2..])
                .map(|(id, f)| (*id, f.revents()))
                .collect();
            (
                !fds[0].revents().is_empty(),
                !fds[1].revents().is_empty(),
                ready,
            )
        };
        if woken {
            self.wakeups += 1;
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&*self.wake, &mut count);
        }
        if listener_ready {
            self.accept();
        }
        for (id, revents) in ready {
            let parked = self.parked.iter().any(|p| p.conn == id);
            if parked && revents.intersects(PollFlags::HUP | PollFlags::ERR) {
                self.close_conn(id);
            } else if revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                self.service(id);
            }
        }
        self.retry_parked();
        self.post_events();
        Ok(())
    }

    /// Send an event message for every handle that became ready (the host form of Redox's
    /// `post_fevent`).
    fn post_events(&mut self) {
        for (handle, flags) in self.scheme.ready_events() {
            let conns: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| c.handle == handle)
                .map(|(id, _)| *id)
                .collect();
            for conn in conns {
                self.reply(conn, EVENT_TAG, flags.bits() as i64, &[], None);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let fd = match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(fd) => fd,
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    self.accept_failures += 1;
                    self.accept_paused_until = Some(Instant::now() + self.accept_backoff);
                    return;
                }
                Err(_) => return,
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                drop(fd);
                continue;
            }
            // Without credentials the peer gets an unprivileged uid, never root's.
            let peer = rustix::net::sockopt::socket_peercred(&fd).map_or(
                Peer {
                    pid: 0,
                    uid: u32::MAX,
                },
                |c| Peer {
                    pid: rustix::process::Pid::as_raw(Some(c.pid)) as usize,
                    uid: c.uid.as_raw(),
                },
            );
            let held = self
                .conns
                .values()
                .filter(|c| c.peer.uid == peer.uid)
                .count();
            if held >= self.max_per_uid {
                drop(fd);
                continue;
            }
            let id = self.add_conn(fd, self.root, peer);
            if let Some(c) = self.conns.get_mut(&id) {
                c.is_root = true;
            }
        }
    }

    fn add_conn(&mut self, fd: OwnedFd, handle: usize, peer: Peer) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                fd,
                handle,
                is_root: false,
                peer,
            },
        );
        id
    }

    fn close_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.parked.retain(|p| p.conn != id);
        if !conn.is_root {
            self.scheme.on_close(conn.handle);
        }
    }

    /// Read one request from a readable connection and answer or park it.
    fn service(&mut self, id: u64) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let received = recv(conn.fd.as_fd(), &mut self.buf, RecvFlags::DONTWAIT);
        let (n, passed) = match received {
            Ok((0, _)) | Err(_) => return self.close_conn(id),
            Ok((n, passed)) => (n, passed),
        };
        // PANIC: recvmsg without MSG_TRUNC reports at most the buffer's length.
        let Ok((frame, rest)) = RequestFrame::read_from_prefix(&self.buf[..n]) else {
            return self.close_conn(id);
        };
        let Some(payload) = rest.get(..frame.payload_len as usize) else {
            return self.close_conn(id);
        };
        let payload = payload.to_vec();
        if frame.kind == kind::MM_FD {
            // Answered at once (never parked); an fd passed with any other request is
            // dropped (closed) here.
            let r = self.mm_fd(id, &payload, passed);
            return self.reply(id, frame.tag, r, &[], None);
        }
        self.run(id, frame, payload);
    }

    /// MM_FD: decode the payload, check the handle is a device handle, and give the driver
    /// the descriptor. The result, or minus an errno.
    fn mm_fd(&mut self, conn: u64, payload: &[u8], fd: Option<OwnedFd>) -> i64 {
        let fail = |e: crate::errno::SchemeError| -(e.errno() as i64);
        let req = match crate::uapi::mm::decode_mm_fd(payload) {
            Ok(req) => req,
            Err(e) => return fail(e.into()),
        };
        let Some(fd) = fd else {
            return -(syscall::error::EBADF as i64);
        };
        let handle = self.conns.get(&conn).map(|c| c.handle);
        let Some(client) = handle.and_then(|h| self.scheme.client_of(h)) else {
            return -(syscall::error::EBADF as i64);
        };
        match self.scheme.driver().client_mm_fd(client, req, fd) {
            Ok(()) => 0,
            Err(e) => fail(e.into()),
        }
    }

    fn run(&mut self, conn: u64, frame: RequestFrame, mut payload: Vec<u8>) {
        match self.handle(conn, &frame, &mut payload) {
            Outcome::Park => self.parked.push(Parked {
                conn,
                frame,
                payload,
            }),
            Outcome::Reply(result, out, fd) => self.reply(conn, frame.tag, result, &out, fd),
        }
    }

    /// Retries, in arrival order, the parked requests the scheme says are due (woken by a
    /// fence, past their deadline, or polled); the others stay parked untouched.
    fn retry_parked(&mut self) {
        self.scheme.collect_wakeups();
        for p in std::mem::take(&mut self.parked) {
            let handle = self.conns.get(&p.conn).map(|c| c.handle);
            let due = handle.is_some_and(|h| {
                self.scheme
                    .is_due(Some(h), crate::dispatch::request_id(p.frame.tag))
            });
            if due {
                self.run(p.conn, p.frame, p.payload);
            } else {
                self.parked.push(p);
            }
        }
    }

    fn reply(&mut self, conn: u64, tag: u32, result: i64, out: &[u8], fd: Option<OwnedFd>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let out = out
            .get(..MAX_FRAME_PAYLOAD.min(out.len()))
            .unwrap_or_default();
        let frame = ReplyFrame {
            tag,
            has_fd: u32::from(fd.is_some()),
            result,
            out_len: out.len() as u32,
            pad: 0,
        };
        // A client that does not drain its socket loses its connection, not the server's time.
        if send(
            c.fd.as_fd(),
            &[frame.as_bytes(), out],
            fd.as_ref().map(|f| f.as_fd()),
            SendFlags::DONTWAIT,
        )
        .is_err()
        {
            self.close_conn(conn);
        }
    }

    fn handle(&mut self, conn: u64, frame: &RequestFrame, payload: &mut Vec<u8>) -> Outcome {
        let Some((handle, peer)) = self.conns.get(&conn).map(|c| (c.handle, c.peer)) else {
            return err(EIO);
        };
        let (tag, a) = (frame.tag, frame.args);
        let op = match frame.kind {
            kind::OPEN | kind::DUP => return self.open_or_dup(handle, peer, frame, payload),
            kind::READ => return self.read(handle, peer, frame),
            kind::MMAP => return self.mmap(handle, peer, a[0], a[1] as usize, tag),
            kind::CALL => TransportOp::Call {
                fd: handle,
                second: None,
                payload,
                metadata: [a[0], a[1], a[2]],
            },
            kind::FEVENT => TransportOp::Fevent {
                fd: handle,
                flags: EventFlags::from_bits_retain(a[0] as usize),
            },
            kind::MUNMAP => TransportOp::Munmap {
                fd: handle,
                offset: a[0],
                len: a[1] as usize,
                flags: MunmapFlags::from_bits_retain(a[2] as usize),
            },
            _ => return err(EINVAL),
        };
        match regular(dispatch(&mut self.scheme, &mut self.state, op, tag, peer)) {
            Err(EWOULDBLOCK) => Outcome::Park,
            Ok(n) if frame.kind == kind::CALL => Outcome::Reply(n as i64, payload.clone(), None),
            Ok(n) => Outcome::Reply(n as i64, vec![], None),
            Err(e) => err(e),
        }
    }

    fn open_or_dup(
        &mut self,
        handle: usize,
        peer: Peer,
        frame: &RequestFrame,
        payload: &[u8],
    ) -> Outcome {
        let Ok(path) = std::str::from_utf8(payload) else {
            return err(EINVAL);
        };
        let op = if frame.kind == kind::OPEN {
            TransportOp::OpenAt {
                dirfd: handle,
                path,
            }
        } else {
            TransportOp::Dup {
                fd: handle,
                buf: path.as_bytes(),
            }
        };
        let r = dispatch(&mut self.scheme, &mut self.state, op, frame.tag, peer);
        self.opened(r, peer)
    }

    fn read(&mut self, handle: usize, peer: Peer, frame: &RequestFrame) -> Outcome {
        let mut buf = vec![0u8; (frame.out_len as usize).min(MAX_FRAME_PAYLOAD)];
        let op = TransportOp::Read {
            fd: handle,
            buf: &mut buf,
            offset: frame.args[0],
        };
        match regular(dispatch(
            &mut self.scheme,
            &mut self.state,
            op,
            frame.tag,
            peer,
        )) {
            Ok(n) => Outcome::Reply(n as i64, buf.get(..n).unwrap_or_default().to_vec(), None),
            Err(e) => err(e),
        }
    }

    /// A new handle: make a socketpair, keep one end as its connection, pass the other back.
    fn opened(&mut self, r: SchemeResponse, peer: Peer) -> Outcome {
        let number = match r {
            SchemeResponse::Opened(Ok(OpenResult::ThisScheme { number, .. })) => number,
            SchemeResponse::Opened(Err(e)) => {
                return Outcome::Reply(-(e.errno as i64), vec![], None)
            }
            _ => return Outcome::Reply(-(EIO as i64), vec![], None),
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            self.scheme.on_close(number);
            return err(syscall::error::EMFILE);
        }
        match rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        ) {
            Ok((ours, theirs)) => {
                self.add_conn(ours, number, peer);
                Outcome::Reply(0, vec![], Some(theirs))
            }
            Err(_) => {
                self.scheme.on_close(number);
                Outcome::Reply(-(EIO as i64), vec![], None)
            }
        }
    }

    /// `mmap`: account and check through the scheme, then pass the BO's memory fd.
    fn mmap(&mut self, handle: usize, peer: Peer, offset: u64, len: usize, tag: u32) -> Outcome {
        let flags = MapFlags::PROT_READ | MapFlags::PROT_WRITE | MapFlags::MAP_SHARED;
        let op = TransportOp::MmapPrep {
            fd: handle,
            offset,
            len,
            flags,
        };
        if let Err(e) = regular(dispatch(&mut self.scheme, &mut self.state, op, tag, peer)) {
            return Outcome::Reply(-(e as i64), vec![], None);
        }
        let memory = self
            .scheme
            .bo_of_handle(handle)
            .map(|bo| self.scheme.driver().bo_memory(bo));
        match memory {
            Some(Ok((fd, base))) => {
                Outcome::Reply(base.saturating_add(offset) as i64, vec![], Some(fd))
            }
            Some(Err(e)) => Outcome::Reply(
                -(crate::errno::SchemeError::from(e).errno() as i64),
                vec![],
                None,
            ),
            None => Outcome::Reply(-(EIO as i64), vec![], None),
        }
    }
}

fn err(errno: i32) -> Outcome {
    Outcome::Reply(-(errno as i64), vec![], None)
}

fn regular(r: SchemeResponse) -> Result<usize, i32> {
    match r {
        SchemeResponse::Regular(r) | SchemeResponse::RegularAndNotifyOnDetach(r) => {
            r.map_err(|e| e.errno)
        }
        SchemeResponse::Opened(_) => Err(EIO),
    }
}
