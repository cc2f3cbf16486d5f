//! Blocking calls that never block the server, and syncobj readiness events.
//!
//! Owns: WAIT_USER_FENCE and SYNCOBJ_WAIT (a non-blocking check; if unsatisfied, EWOULDBLOCK so
//! the event loop parks the request and retries it on the next event, with the deadline kept
//! here so a timeout yields ETIME), cancellation of parked waits, `fevent` subscriptions and the
//! list of handles that became readable. Must not: sleep, spin, or hold parked state for closed
//! handles (`close_handle` drops it).

use redox_scheme::{CallerCtx, Id};
use syscall::flag::EventFlags;

use super::handles::Handle;
use super::GpuScheme;
use crate::driver::{ClientId, DriverError, GpuDriver, PointState};
use crate::errno::SchemeError;
use crate::uapi::flags::SyncobjWaitFlags;
use crate::uapi::request::*;

type R<T> = Result<T, SchemeError>;

/// Outcome of one non-blocking check.
enum Check<T> {
    Done(T),
    NotYet,
}

impl<D: GpuDriver> GpuScheme<D> {
    /// Forget a parked request (the event loop got a cancellation for it).
    pub fn cancel(&mut self, request: Id) {
        self.parked.retain(|(_, id), _| *id != request);
    }

    /// Number of parked blocking calls.
    pub fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// The earliest deadline (driver clock, ns) among parked calls that have a timeout: the
    /// event loop arms its timer for it, so a wait that never becomes ready still gets ETIME.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.parked.values().flatten().copied().min()
    }

    /// Handles whose subscribed readiness appeared since the last call: the event loop posts
    /// `Response::post_fevent(id, flags)` for each. Edge-triggered; clients re-check anyway.
    pub fn ready_events(&mut self) -> Vec<(usize, EventFlags)> {
        let mut out = Vec::new();
        for (id, handle) in self.handles.iter_mut() {
            let Handle::Syncobj(d) = handle else { continue };
            if !d.subscribed.contains(EventFlags::EVENT_READ) {
                continue;
            }
            let ready = self.driver.syncobj_state(&d.object, 0) == PointState::Signaled;
            if ready && !d.reported {
                out.push((*id, EventFlags::EVENT_READ));
            }
            d.reported = ready;
        }
        out
    }

    /// `fevent`: record the subscription and report what is ready now.
    pub(super) fn subscribe(&mut self, id: usize, flags: EventFlags) -> R<EventFlags> {
        match self.handles.get_mut(&id) {
            Some(Handle::Syncobj(d)) => {
                d.subscribed = flags;
                let ready = self.driver.syncobj_state(&d.object, 0) == PointState::Signaled;
                d.reported = ready;
                Ok(if ready {
                    flags & EventFlags::EVENT_READ
                } else {
                    EventFlags::empty()
                })
            }
            Some(Handle::Device { .. } | Handle::Root | Handle::Bo(_) | Handle::Vm(_)) => {
                Ok(EventFlags::empty())
            }
            None => Err(SchemeError::BadHandle(id)),
        }
    }

    fn count_wait(&mut self, handle: usize) {
        if let Some(Handle::Device { client, .. }) = self.handles.get(&handle) {
            let client = *client;
            if let Some(c) = self.clients.get_mut(&client) {
                c.counters.waits += 1;
            }
        }
    }

    /// Run `check` under the parking protocol for request `ctx.id` on `handle`.
    fn park_or_finish<T>(
        &mut self,
        handle: usize,
        ctx: &CallerCtx,
        timeout: Timeout,
        check: impl FnOnce(&Self) -> R<Check<T>>,
    ) -> R<T> {
        let key = (handle, ctx.id);
        let now = self.driver.now_ns();
        if !self.parked.contains_key(&key) {
            self.count_wait(handle);
        }
        let deadline = match self.parked.get(&key) {
            Some(d) => *d,
            None => match timeout {
                Timeout::Forever => None,
                Timeout::Poll => Some(now),
                Timeout::Relative(ns) => Some(now.saturating_add(ns)),
                Timeout::Absolute(t) => Some(t),
            },
        };
        let result = check(self);
        match result {
            Ok(Check::NotYet) if deadline.is_none_or(|d| now < d) => {
                self.parked.insert(key, deadline);
                Err(SchemeError::WouldBlock)
            }
            Ok(Check::NotYet) => {
                self.parked.remove(&key);
                Err(SchemeError::TimedOut)
            }
            Ok(Check::Done(v)) => {
                self.parked.remove(&key);
                Ok(v)
            }
            Err(e) => {
                self.parked.remove(&key);
                Err(e)
            }
        }
    }

    pub(super) fn wait_user_fence(
        &mut self,
        handle: usize,
        client: ClientId,
        req: WaitUserFenceRequest,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let c = self.client_mut(client)?;
        let vm = c.vm(req.vm)?.vm.clone();
        let queue = match req.queue {
            Some(q) => Some(c.queue(q)?.queue.clone()),
            None => None,
        };
        self.park_or_finish(handle, ctx, req.timeout, |s| {
            let current = s.driver.user_fence_value(&vm, queue.as_ref(), req.addr)?;
            Ok(match req.op.holds(current, req.value, req.mask) {
                true => Check::Done(Reply::None),
                false => Check::NotYet,
            })
        })
    }

    pub(super) fn syncobj_wait(
        &mut self,
        handle: usize,
        client: ClientId,
        req: SyncobjWaitRequest,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let c = self.client_mut(client)?;
        let objs = req
            .points
            .iter()
            .map(|p| Ok((c.syncobj(p.syncobj)?.clone(), p.point)))
            .collect::<R<Vec<_>>>()?;
        let all = req.flags.contains(SyncobjWaitFlags::WAIT_ALL);
        let for_submit = req.flags.contains(SyncobjWaitFlags::WAIT_FOR_SUBMIT);
        self.park_or_finish(handle, ctx, req.timeout, |s| {
            let mut first = None;
            let mut pending = false;
            for (i, (obj, point)) in objs.iter().enumerate() {
                match s.driver.syncobj_state(obj, *point) {
                    PointState::Signaled => first = first.or(Some(i)),
                    PointState::Pending => pending = true,
                    PointState::NoFence if for_submit => pending = true,
                    PointState::NoFence => {
                        return Err(DriverError::NoFence { point: *point }.into())
                    }
                }
            }
            let done = if all { !pending } else { first.is_some() };
            let index = u32::try_from(first.unwrap_or(0)).unwrap_or(0);
            Ok(if done {
                Check::Done(Reply::FirstSignaled(index))
            } else {
                Check::NotYet
            })
        })
    }
}
