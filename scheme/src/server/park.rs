//! Parked calls: requests that answered EWOULDBLOCK and wait for the device.
//!
//! Owns: the record of every parked call (`(handle, request id)` → deadline, armed wake
//! token, pending driver work), the wake-ups fired by the driver's fence callbacks, and the
//! questions a transport asks each turn: which parked calls are due for a retry
//! ([`GpuScheme::is_due`]), when the next deadline or poll is. Must not: block, or retry a
//! call itself (the transport re-dispatches the very request; the server then finds it here).
//!
//! A parked call is retried when its token fired (one of its fences signalled), its deadline
//! passed, or it has no token (the driver could not watch what it waits for: it is polled,
//! see `POLL_NS`). Calls that carry pending driver work (a synchronous bind, an EXEC being
//! prepared, a destroy with work in flight) were committed at the first attempt; a retry only
//! asks the driver whether that work completed, and answers its result.

use redox_scheme::{CallerCtx, Id};

use super::GpuScheme;
use crate::driver::GpuDriver;
use crate::errno::SchemeError;
use crate::uapi::request::Reply;
use crate::wake::{WakeHook, WakeToken, Waker};

type R<T> = Result<T, SchemeError>;

/// How often a transport retries parked calls nothing can wake (the driver could not watch
/// them): 1 ms.
pub const POLL_NS: u64 = 1_000_000;

/// Marks (in [`ParkedCall::captured`]) an EXEC parked until its client may have more work
/// in flight: it has committed nothing, and later calls of its handle wait behind it, so a
/// client (one device handle) holds at most one; closing the handle forgets it.
struct ExecCapacity;

fn waits_for_capacity<P>(c: &ParkedCall<P>) -> bool {
    c.captured
        .as_ref()
        .is_some_and(|a| (**a).is::<ExecCapacity>())
}

/// One parked call.
pub(super) struct ParkedCall<P> {
    /// Driver clock deadline (`None`: waits forever).
    pub(super) deadline: Option<u64>,
    /// Serial of the armed wake token; 0: none armed (polled).
    serial: u64,
    /// The token fired since the last check.
    woken: bool,
    /// Work the call waits for, committed at its first attempt.
    pub(super) pending: Option<P>,
    /// Not run yet: it waits behind an earlier call of its handle.
    behind: bool,
    /// What the call resolved at earlier attempts and must keep (a SYNCOBJ_WAIT's fences).
    captured: Option<Box<dyn std::any::Any + Send>>,
}

/// What a check found.
pub(super) enum Check<T> {
    Done(T),
    NotYet,
}

/// The parking state of a server.
pub(super) struct Parking<P> {
    pub(super) calls: std::collections::HashMap<(usize, Id), ParkedCall<P>>,
    serials: std::collections::HashMap<u64, (usize, Id)>,
    next_serial: u64,
    waker: Waker,
}

impl<P> Default for Parking<P> {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            serials: Default::default(),
            next_serial: 1,
            waker: Waker::default(),
        }
    }
}

impl<P> Parking<P> {
    /// Forgets a parked call and its token.
    pub(super) fn remove(&mut self, key: &(usize, Id)) {
        if let Some(c) = self.calls.remove(key) {
            self.serials.remove(&c.serial);
        }
    }

    /// Forgets every parked call matching `f`.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&(usize, Id)) -> bool) {
        let gone: Vec<(usize, Id)> = self.calls.keys().filter(|k| !keep(k)).copied().collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// Takes what the parked call `key` captured at its earlier attempts, if it is a `T`.
    pub(super) fn take_captured<T: 'static>(&mut self, key: &(usize, Id)) -> Option<T> {
        let call = self.calls.get_mut(key)?;
        let any = call.captured.take()?;
        any.downcast().ok().map(|b| *b)
    }

    /// Stores `value` with the parked call `key` (nothing if it is not parked).
    pub(super) fn keep_captured<T: Send + 'static>(&mut self, key: &(usize, Id), value: T) {
        if let Some(call) = self.calls.get_mut(key) {
            call.captured = Some(Box::new(value));
        }
    }

    /// A fresh token for `key` (replacing its earlier one).
    fn arm(&mut self, key: (usize, Id)) -> WakeToken {
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(c) = self.calls.get_mut(&key) {
            self.serials.remove(&c.serial);
            c.serial = serial;
            c.woken = false;
        }
        self.serials.insert(serial, key);
        self.waker.token(serial)
    }

    /// The call `key` could not be watched: it is polled.
    fn unarm(&mut self, key: (usize, Id)) {
        if let Some(c) = self.calls.get_mut(&key) {
            self.serials.remove(&c.serial);
            c.serial = 0;
        }
    }

    /// Marks the calls whose tokens fired.
    fn collect(&mut self) {
        for serial in self.waker.collect() {
            if let Some(key) = self.serials.get(&serial) {
                if let Some(c) = self.calls.get_mut(key) {
                    c.woken = true;
                }
            }
        }
    }
}

impl<D: GpuDriver> GpuScheme<D> {
    /// Installs the hook that wakes the transport's loop (its eventfd or pipe): driver fence
    /// callbacks call it, from their own threads, when a parked call may be answerable.
    pub fn set_wake_hook(&mut self, hook: WakeHook) {
        self.parking.waker.set_hook(hook);
    }

    /// Takes the wake-ups fired since the last turn. Transports call it once per turn, before
    /// asking [`Self::is_due`] about their parked requests.
    pub fn collect_wakeups(&mut self) {
        self.parking.collect();
    }

    /// Whether the parked request `request` (on `handle`, if the transport knows it) should
    /// be retried now: its token fired, its deadline passed, it is polled, or the server
    /// holds nothing for it.
    pub fn is_due(&self, handle: Option<usize>, request: Id) -> bool {
        let now = self.driver.now_ns();
        let mut found = false;
        for ((h, id), c) in &self.parking.calls {
            if *id != request || handle.is_some_and(|want| want != *h) {
                continue;
            }
            found = true;
            if c.woken || c.serial == 0 || c.deadline.is_some_and(|d| d <= now) {
                return true;
            }
        }
        !found
    }

    /// Forget a parked request (the event loop got a cancellation for it). Committed work it
    /// waited for (a synchronous bind) still runs; only the answer is dropped.
    pub fn cancel(&mut self, request: Id) {
        self.parking.retain(|(_, id)| *id != request);
    }

    /// Number of parked blocking calls.
    pub fn parked_count(&self) -> usize {
        self.parking.calls.len()
    }

    /// Whether some parked call has nothing that will wake it (it must be polled every
    /// [`POLL_NS`]).
    pub fn has_polled(&self) -> bool {
        self.parking.calls.values().any(|c| c.serial == 0)
    }

    /// The earliest deadline (driver clock, ns) among parked calls that have a timeout: the
    /// event loop arms its timer for it, so a wait that never becomes ready still gets ETIME.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.parking.calls.values().filter_map(|c| c.deadline).min()
    }

    /// When the transport must wake next (driver clock): the earliest deadline, or a poll
    /// [`POLL_NS`] from now while a parked call cannot be watched.
    pub fn next_wake_ns(&self) -> Option<u64> {
        let poll = self
            .has_polled()
            .then(|| self.driver.now_ns().saturating_add(POLL_NS));
        match (self.next_deadline_ns(), poll) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    /// Runs `check` under the parking protocol for request `ctx.id` on `handle`: on `NotYet`
    /// (before the deadline) the call is recorded and `watch` arms a wake token for it.
    pub(super) fn park_or_finish<T>(
        &mut self,
        handle: usize,
        ctx: &CallerCtx,
        deadline: impl FnOnce(u64) -> Option<u64>,
        check: impl FnOnce(&Self) -> R<Check<T>>,
        watch: impl FnOnce(&Self, WakeToken) -> bool,
    ) -> R<T> {
        let key = (handle, ctx.id);
        let now = self.driver.now_ns();
        let deadline = match self.parking.calls.get(&key) {
            Some(c) => c.deadline,
            None => deadline(now),
        };
        match check(self) {
            Ok(Check::NotYet) if deadline.is_none_or(|d| now < d) => {
                self.park(key, deadline, None, watch);
                Err(SchemeError::WouldBlock)
            }
            Ok(Check::NotYet) => {
                self.parking.remove(&key);
                Err(SchemeError::TimedOut)
            }
            Ok(Check::Done(v)) => {
                self.parking.remove(&key);
                Ok(v)
            }
            Err(e) => {
                self.parking.remove(&key);
                Err(e)
            }
        }
    }

    /// Records `key` as parked (keeping an existing record's deadline and pending work) and
    /// arms a token through `watch` unless one is armed and has not fired.
    fn park(
        &mut self,
        key: (usize, Id),
        deadline: Option<u64>,
        pending: Option<D::Pending>,
        watch: impl FnOnce(&Self, WakeToken) -> bool,
    ) {
        let entry = self.parking.calls.entry(key).or_insert(ParkedCall {
            deadline,
            serial: 0,
            woken: false,
            pending: None,
            behind: false,
            captured: None,
        });
        if pending.is_some() {
            entry.pending = pending;
        }
        if entry.serial != 0 && !entry.woken {
            return;
        }
        let token = self.parking.arm(key);
        if !watch(self, token) {
            self.parking.unarm(key);
        }
    }

    /// The first attempt of a call returned pending driver work: answer now if it already
    /// completed, else park the call on it.
    pub(super) fn park_pending(
        &mut self,
        handle: usize,
        ctx: &CallerCtx,
        pending: Option<D::Pending>,
    ) -> R<Reply> {
        let Some(pending) = pending else {
            return Ok(Reply::None);
        };
        if let Some(result) = self.driver.pending_state(&pending) {
            return result.map(|()| Reply::None).map_err(Into::into);
        }
        let p = pending.clone();
        self.park((handle, ctx.id), None, Some(pending), move |s, token| {
            s.driver.watch_pending(&p, token)
        });
        Err(SchemeError::WouldBlock)
    }

    /// A retry of a call parked on pending work: `Some(answer)` (the call is not run again),
    /// `None` if the request is not such a call.
    pub(super) fn retry_pending(&mut self, handle: usize, ctx: &CallerCtx) -> Option<R<Reply>> {
        let key = (handle, ctx.id);
        let pending = self.parking.calls.get(&key)?.pending.clone()?;
        Some(match self.driver.pending_state(&pending) {
            Some(result) => {
                self.parking.remove(&key);
                result.map(|()| Reply::None).map_err(Into::into)
            }
            None => {
                let p = pending.clone();
                self.park(key, None, None, move |s, token| {
                    s.driver.watch_pending(&p, token)
                });
                Err(SchemeError::WouldBlock)
            }
        })
    }

    /// Parks the EXEC `ctx.id` on `handle` until work of `client` in flight completes (it is
    /// then run again from the start, and parks again while there is still no room).
    pub(super) fn park_for_capacity(
        &mut self,
        handle: usize,
        client: crate::driver::ClientId,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let key = (handle, ctx.id);
        self.park(key, None, None, move |s, token| {
            s.driver.watch_in_flight(client, token)
        });
        self.parking.keep_captured(&key, ExecCapacity);
        Err(SchemeError::WouldBlock)
    }

    /// Whether an earlier request on `handle` is parked on pending driver work: a later one
    /// waits behind it (answers on one handle keep their order). The later request is parked
    /// without a token (polled), and retried after the earlier one in arrival order.
    pub(super) fn behind_pending(&mut self, handle: usize, ctx: &CallerCtx) -> bool {
        let blocked = self.parking.calls.iter().any(|((h, id), c)| {
            *h == handle && *id != ctx.id && (c.pending.is_some() || waits_for_capacity(c))
        });
        let key = (handle, ctx.id);
        if blocked {
            self.park(key, None, None, |_, _| false);
            if let Some(c) = self.parking.calls.get_mut(&key) {
                c.behind = true;
            }
        } else if self.parking.calls.get(&key).is_some_and(|c| c.behind) {
            // It waited behind work that completed: run it now as a first attempt.
            self.parking.remove(&key);
        }
        blocked
    }
}
