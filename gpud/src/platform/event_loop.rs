//! The Redox main loop: scheme requests, parked blocking requests, IRQs and fevents.
//!
//! Owns: what happens on each wake-up of the event queue (scheme socket, IRQ, the wake source
//! a fence callback wrote, or the timer armed for the earliest parked deadline), in this
//! order —
//! 1. on an IRQ wake, read the counter, let the driver handle it, and acknowledge it only if
//!    the driver says the device raised it (INTx lines may be shared);
//! 2. retry the parked requests the server says are due (a fence they wait for signalled,
//!    their deadline passed, or nothing can wake them), in arrival order;
//! 3. drain the nonblocking socket: `Call` → dispatch through the `SchemeSync` server, and park
//!    it if the answer is `EWOULDBLOCK` unless the caller asked for `O_NONBLOCK`;
//!    `Cancellation` → answer the parked request with `EINTR`; `OnClose`, `SendFd`, `RecvFd`,
//!    `OnDetach` → the matching server hook;
//! 4. post the fevents the driver collected (`Response::post_fevent`).
//!
//! Must not: block anywhere but in [`EventWait::wait`], or make a syscall itself; the socket,
//! IRQ and queue are traits so all of this runs against fakes on the host.

use redox_scheme::scheme::{Op, SchemeResponse, SchemeState, SchemeSync};
use redox_scheme::{CallerCtx, Id, OpenResult, RequestKind, Response};
use std::time::Duration;
use syscall::error::{Error as SysErr, EINTR, ENOSYS, EWOULDBLOCK};
use syscall::flag::EventFlags;
use thiserror::Error;

use super::sys::{EventWait, IrqHandle, SchemeSocket, SysError, WakeSource};

/// Whether the device raised the interrupt that woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqOutcome {
    /// The device raised it: acknowledge.
    Handled,
    /// Not this device (shared INTx): leave it for its owner.
    NotMine,
}

/// The driver's half of the loop: interrupts in, readiness changes out.
pub trait DeviceEvents<S> {
    /// The IRQ fired; service the device (fences, faults) through `scheme`'s driver.
    fn handle_irq(&mut self, scheme: &mut S) -> IrqOutcome;
    /// Appends `(handle id, flags)` for every handle whose readiness changed since the last
    /// call. Over-reporting is harmless: clients re-check with nonblocking calls.
    fn take_fevents(&mut self, scheme: &mut S, out: &mut Vec<(usize, EventFlags)>);
    /// The caller of a parked request was interrupted; the loop has answered it with EINTR.
    /// Lets the server drop whatever it kept for that request (a wait's deadline).
    fn on_cancel(&mut self, _scheme: &mut S, _request: Id) {}
    /// How long until the earliest parked request times out, if any does. The loop arms its
    /// timer with it so an expired wait is answered (ETIME) on time.
    fn next_deadline(&mut self, _scheme: &mut S) -> Option<Duration> {
        None
    }
    /// Hands the server the hook that wakes the event queue (its wake source).
    fn install_waker(&mut self, _scheme: &mut S, _hook: gpu_scheme::wake::WakeHook) {}
    /// Called once per wake-up before parked requests are considered.
    fn collect_wakeups(&mut self, _scheme: &mut S) {}
    /// Whether parked request `request` should be retried on this wake-up.
    fn is_due(&mut self, _scheme: &mut S, _request: Id) -> bool {
        true
    }
}

/// A fatal loop failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoopError {
    /// Reading requests failed.
    #[error("reading the scheme socket: {0}")]
    Read(SysError),
    /// Writing a response failed.
    #[error("writing the scheme socket: {0}")]
    Write(SysError),
    /// Reading or acknowledging the IRQ failed.
    #[error("irq handle: {0}")]
    Irq(SysError),
    /// Waiting on the event queue (or arming its timer) failed.
    #[error("event queue: {0}")]
    Wait(SysError),
}

/// Whether to keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep waiting for events.
    Continue,
    /// The scheme was unmounted: exit.
    Exit,
}

/// Counters for tests and debugging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Requests dispatched (first attempt).
    pub dispatched: u64,
    /// Requests parked.
    pub parked: u64,
    /// Parked requests answered after a retry.
    pub unparked: u64,
    /// Retries of parked requests (answered or parked again).
    pub retried: u64,
    /// Cancellations that hit a parked request.
    pub cancelled: u64,
    /// IRQs the driver handled and gpud acknowledged.
    pub irqs_acked: u64,
    /// IRQ wake-ups that were not this device's.
    pub irqs_foreign: u64,
    /// Fevents posted.
    pub fevents: u64,
    /// Kernel messages gpud has no handler for (`Msync`, `RequestMmap`).
    pub ignored: u64,
}

/// A request that would block, kept until it can be answered.
struct Parked {
    caller: CallerCtx,
    op: Op,
}

/// The loop state: socket, IRQ, server and driver hooks.
pub struct EventLoop<K, I, S, E> {
    socket: K,
    irq: I,
    scheme: S,
    events: E,
    state: SchemeState,
    parked: Vec<Parked>,
    fevent_buf: Vec<(usize, EventFlags)>,
    stats: LoopStats,
}

fn would_block(resp: &SchemeResponse) -> bool {
    let is_wb = |e: &SysErr| e.errno == EWOULDBLOCK;
    match resp {
        SchemeResponse::Regular(Err(e)) | SchemeResponse::RegularAndNotifyOnDetach(Err(e)) => {
            is_wb(e)
        }
        SchemeResponse::Opened(Err(e)) => is_wb(e),
        SchemeResponse::Opened(Ok(OpenResult::WouldBlock)) => true,
        _ => false,
    }
}

fn into_response(resp: SchemeResponse, op: Op) -> Response {
    match resp {
        SchemeResponse::Opened(open) => Response::open_dup_like(open, op),
        SchemeResponse::RegularAndNotifyOnDetach(s) => Response::new_notify_on_detach(s, op),
        SchemeResponse::Regular(s) => Response::new(s, op),
    }
}

impl<K, I, S, E> EventLoop<K, I, S, E>
where
    K: SchemeSocket,
    I: IrqHandle,
    S: SchemeSync,
    E: DeviceEvents<S>,
{
    /// A loop over a registered socket, an IRQ handle, the server and the driver hooks.
    pub fn new(socket: K, irq: I, scheme: S, events: E) -> Self {
        Self {
            socket,
            irq,
            scheme,
            events,
            state: SchemeState::new(),
            parked: Vec::new(),
            fevent_buf: Vec::new(),
            stats: LoopStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }
    /// Requests waiting for the device.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }
    /// The server (for inspection).
    pub fn scheme_mut(&mut self) -> &mut S {
        &mut self.scheme
    }
    /// The driver hooks (for inspection).
    pub fn events_mut(&mut self) -> &mut E {
        &mut self.events
    }
    /// The socket (for inspection).
    pub fn socket_mut(&mut self) -> &mut K {
        &mut self.socket
    }
    #[cfg(test)]
    pub(crate) fn irq_mut_for_tests(&mut self) -> &mut I {
        &mut self.irq
    }

    /// Runs until the scheme is unmounted or a fatal error.
    pub fn run<W: EventWait>(&mut self, queue: &mut W) -> Result<(), LoopError> {
        // Requests may have queued between registration and the first wait.
        if self.on_wake(WakeSource::Scheme)? == Flow::Exit {
            return Ok(());
        }
        loop {
            let next = self.next_deadline();
            queue.arm_timer(next).map_err(LoopError::Wait)?;
            let source = match queue.wait() {
                Ok(s) => s,
                Err(e) if e.is_interrupted() => continue,
                Err(e) => return Err(LoopError::Wait(e)),
            };
            if self.on_wake(source)? == Flow::Exit {
                return Ok(());
            }
        }
    }

    /// One wake-up (see the module docs for the order).
    pub fn on_wake(&mut self, source: WakeSource) -> Result<Flow, LoopError> {
        if source == WakeSource::Irq {
            self.service_irq()?;
        }
        self.retry_parked()?;
        let flow = self.drain_requests()?;
        self.post_fevents()?;
        Ok(flow)
    }

    /// When the timer should fire: the earliest parked deadline, if anything is parked.
    pub fn next_deadline(&mut self) -> Option<Duration> {
        if self.parked.is_empty() {
            return None;
        }
        self.events.next_deadline(&mut self.scheme)
    }

    fn write(&mut self, response: Response) -> Result<(), LoopError> {
        self.socket
            .write_response(response)
            .map_err(LoopError::Write)
    }

    fn service_irq(&mut self) -> Result<(), LoopError> {
        let Some(count) = self.irq.read_count().map_err(LoopError::Irq)? else {
            return Ok(());
        };
        match self.events.handle_irq(&mut self.scheme) {
            IrqOutcome::Handled => {
                self.irq.ack(count).map_err(LoopError::Irq)?;
                self.stats.irqs_acked += 1;
            }
            IrqOutcome::NotMine => self.stats.irqs_foreign += 1,
        }
        Ok(())
    }

    fn retry_parked(&mut self) -> Result<(), LoopError> {
        let mut still = Vec::with_capacity(self.parked.len());
        self.events.collect_wakeups(&mut self.scheme);
        for mut p in std::mem::take(&mut self.parked) {
            if !self.events.is_due(&mut self.scheme, p.caller.id) {
                still.push(p);
                continue;
            }
            self.stats.retried += 1;
            let resp =
                p.op.handle_sync_dont_consume(&p.caller, &mut self.scheme, &mut self.state);
            if would_block(&resp) {
                still.push(p);
            } else {
                self.stats.unparked += 1;
                self.write(into_response(resp, p.op))?;
            }
        }
        // The ones that still wait, in arrival order.
        self.parked = still;
        Ok(())
    }

    fn drain_requests(&mut self) -> Result<Flow, LoopError> {
        loop {
            let request = match self.socket.next_request() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(Flow::Exit),
                Err(e) if e.is_would_block() => return Ok(Flow::Continue),
                Err(e) if e.is_interrupted() => continue,
                Err(e) => return Err(LoopError::Read(e)),
            };
            self.handle_request(request.kind())?;
        }
    }

    fn handle_request(&mut self, kind: RequestKind) -> Result<(), LoopError> {
        match kind {
            RequestKind::Call(call) => {
                let caller = call.caller();
                match call.op() {
                    Ok(op) => self.dispatch(caller, op)?,
                    Err(call) => self.write(Response::new(Err(SysErr::new(ENOSYS)), call))?,
                }
            }
            RequestKind::Cancellation(c) => {
                if let Some(i) = self.parked.iter().position(|p| p.caller.id == c.id) {
                    let p = self.parked.remove(i);
                    self.stats.cancelled += 1;
                    self.events.on_cancel(&mut self.scheme, c.id);
                    self.write(Response::new(Err(SysErr::new(EINTR)), p.op))?;
                }
                // Otherwise the request was already answered; nothing to do.
            }
            RequestKind::OnClose { id } => {
                self.scheme.on_close(id);
                self.state.on_close(id);
            }
            RequestKind::OnDetach { id, pid } => {
                if let Ok(inode) = self.scheme.inode(id) {
                    self.state.on_detach(id, inode, pid);
                }
            }
            RequestKind::SendFd(req) => {
                let result = self.scheme.on_sendfd(&req);
                self.write(Response::new(result, req))?;
            }
            RequestKind::RecvFd(req) => {
                let result = self.scheme.on_recvfd(&req);
                self.write(Response::open_dup_like(result, req))?;
            }
            RequestKind::MsyncMsg | RequestKind::MunmapMsg | RequestKind::MmapMsg => {
                self.stats.ignored += 1;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, caller: CallerCtx, mut op: Op) -> Result<(), LoopError> {
        self.stats.dispatched += 1;
        let resp = op.handle_sync_dont_consume(&caller, &mut self.scheme, &mut self.state);
        if would_block(&resp) && !op.is_explicitly_nonblock() {
            self.stats.parked += 1;
            self.parked.push(Parked { caller, op });
            return Ok(());
        }
        self.write(into_response(resp, op))
    }

    fn post_fevents(&mut self) -> Result<(), LoopError> {
        let mut buf = std::mem::take(&mut self.fevent_buf);
        self.events.take_fevents(&mut self.scheme, &mut buf);
        for (id, flags) in buf.drain(..) {
            self.stats.fevents += 1;
            self.write(Response::post_fevent(id, flags.bits()))?;
        }
        self.fevent_buf = buf;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
