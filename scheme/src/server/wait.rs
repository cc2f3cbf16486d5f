//! Blocking calls that never block the server, and syncobj readiness events.
//!
//! Owns: WAIT_USER_FENCE and SYNCOBJ_WAIT (a non-blocking check; if unsatisfied, EWOULDBLOCK so
//! the event loop parks the request — `park.rs` — with the deadline kept so a timeout yields
//! ETIME, and a wake token on the fences it waits for), `fevent` subscriptions and the list of
//! handles that became readable. Must not: sleep, spin, or hold parked state for closed
//! handles (`close_handle` drops it).

use redox_scheme::CallerCtx;
use syscall::flag::EventFlags;

use super::handles::Handle;
use super::park::Check;
use super::GpuScheme;
use crate::driver::{ClientId, DriverError, GpuDriver, PointState};
use crate::errno::SchemeError;
use crate::uapi::flags::SyncobjWaitFlags;
use crate::uapi::request::*;

type R<T> = Result<T, SchemeError>;

impl<D: GpuDriver> GpuScheme<D> {
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

    /// The deadline of a new wait with `timeout`, counting the wait.
    fn wait_deadline(
        &mut self,
        handle: usize,
        ctx: &CallerCtx,
        timeout: Timeout,
    ) -> impl FnOnce(u64) -> Option<u64> {
        if !self.parking.calls.contains_key(&(handle, ctx.id)) {
            self.count_wait(handle);
        }
        move |now: u64| match timeout {
            Timeout::Forever => None,
            Timeout::Poll => Some(now),
            Timeout::Relative(ns) => Some(now.saturating_add(ns)),
            Timeout::Absolute(t) => Some(t),
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
        let deadline = self.wait_deadline(handle, ctx, req.timeout);
        let check = |s: &Self| {
            let current = s.driver.user_fence_value(&vm, queue.as_ref(), req.addr)?;
            Ok(match req.op.holds(current, req.value, req.mask) {
                true => Check::Done(Reply::None),
                false => Check::NotYet,
            })
        };
        let watch = |s: &Self, token| s.driver.watch_user_fence(&vm, token);
        self.park_or_finish(handle, ctx, deadline, check, watch)
    }

    pub(super) fn syncobj_wait(
        &mut self,
        handle: usize,
        client: ClientId,
        req: SyncobjWaitRequest,
        ctx: &CallerCtx,
    ) -> R<Reply> {
        let c = self.client_mut(client)?;
        let named = req
            .points
            .iter()
            .map(|p| Ok((c.syncobj(p.syncobj)?.clone(), p.point)))
            .collect::<R<Vec<_>>>()?;
        // As DRM's waiters: an entry waits on the first fence it found, not on what the
        // syncobj holds later (a SYNCOBJ_RESET or a new signal does not change that wait).
        let key = (handle, ctx.id);
        let mut captured: Vec<Option<D::Syncobj>> = self
            .parking
            .take_captured(&key)
            .filter(|c: &Vec<_>| c.len() == named.len())
            .unwrap_or_else(|| vec![None; named.len()]);
        for ((obj, point), snap) in named.iter().zip(captured.iter_mut()) {
            if snap.is_none() {
                *snap = self.driver.syncobj_snapshot(obj, *point);
            }
        }
        let objs: Vec<(D::Syncobj, u64)> = named
            .into_iter()
            .zip(captured.iter())
            .map(|((obj, point), snap)| match snap {
                Some(s) => (s.clone(), 0),
                None => (obj, point),
            })
            .collect();
        let all = req.flags.contains(SyncobjWaitFlags::WAIT_ALL);
        let for_submit = req.flags.contains(SyncobjWaitFlags::WAIT_FOR_SUBMIT);
        let deadline = self.wait_deadline(handle, ctx, req.timeout);
        let check = |s: &Self| {
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
        };
        // Every point that has a fence is watched; one without (WAIT_FOR_SUBMIT before the
        // submission) cannot be, so the call is then polled.
        let watch = |s: &Self, token: crate::wake::WakeToken| {
            let mut all_watched = true;
            for (obj, point) in &objs {
                all_watched &= s.driver.watch_syncobj(obj, *point, token.clone());
            }
            all_watched
        };
        let result = self.park_or_finish(handle, ctx, deadline, check, watch);
        self.parking.keep_captured(&key, captured);
        result
    }
}
