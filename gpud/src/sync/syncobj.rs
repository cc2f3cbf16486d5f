//! Syncobjs (drm_syncobj): a container of a (possibly absent) fence, binary or timeline.
//!
//! Owns: the current content (nothing, a fence, or the head of a fence chain), host waits on
//! one or many syncobjs (all / any, wait-for-submit, wait-available), timeline points,
//! transfers, reset and the readiness hooks the scheme turns into fevents. Rules:
//! - binary: signalling replaces the fence; a wait uses the fence current when it looks;
//! - timeline: each point is a chain node; point 0 on a timeline operation means "the
//!   current fence" (binary emulation); a requested point that signalled and was collected
//!   is satisfied by a signalled stub; adding a non-increasing point is allowed;
//! - a wait on an empty syncobj or an unsubmitted point fails with [`SyncobjError::NoFence`]
//!   / [`SyncobjError::PointNotSubmitted`] unless it waits for submit (or availability).
//!
//! Waiters never poll: they register a wait queue with every syncobj they watch (woken on
//! content changes) and a callback on every fence they resolve (woken on signal), and
//! follow the wait queue's generation protocol, so no change can be missed.
//! Must not: call hooks or fence callbacks while holding the content lock.

use super::chain::{ChainError, ChainNode};
use super::fence::{CallbackAdded, CallbackId, Fence};
use super::shim::{self, Mutex};
use super::wait_queue::WaitQueue;
use std::sync::{Arc, Weak};
use std::time::Instant;
use thiserror::Error;

bitflags::bitflags! {
    /// Host-wait options.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WaitFlags: u32 {
        /// Wait all (instead of any) of the syncobjs.
        const ALL = 1 << 0;
        /// An absent fence / point is waited for instead of being an error.
        const FOR_SUBMIT = 1 << 1;
        /// Return once the fence / point exists, without waiting for it to signal.
        const AVAILABLE = 1 << 2;
    }
}

/// Errors of syncobj operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncobjError {
    /// The syncobj holds no fence.
    #[error("syncobj has no fence (wanted point {point})")]
    NoFence { point: u64 },
    /// The timeline has no point this late (or is binary and a point > 0 was asked).
    #[error("timeline point {point} not submitted (last submitted {last_submitted})")]
    PointNotSubmitted { point: u64, last_submitted: u64 },
    /// The deadline passed first.
    #[error("timed out with {pending} syncobj(s) not ready")]
    Timeout { pending: usize },
    /// A wait on zero syncobjs.
    #[error("wait on an empty syncobj list")]
    EmptyWait,
}

/// What the syncobj holds.
#[derive(Debug, Clone)]
enum Head {
    Fence(Arc<Fence>),
    Chain(Arc<ChainNode>),
}

impl Head {
    fn fence(&self) -> &Arc<Fence> {
        match self {
            Head::Fence(fence) => fence,
            Head::Chain(node) => node.fence(),
        }
    }
}

/// Handle of a readiness hook, for [`Syncobj::remove_ready_hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookId(u64);

/// Called when the syncobj may have become ready; re-check with [`Syncobj::is_signalled`].
pub type ReadyHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Hooks {
    list: Vec<(HookId, ReadyHook)>,
    next: u64,
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    /// Timeline nodes the head keeps linked, an upper bound: collection elsewhere only
    /// lowers the real number ([`Syncobj::timeline_points`] recounts).
    points: usize,
    listeners: Vec<(u64, Arc<WaitQueue>)>,
    next_listener: u64,
}

/// A syncobj. Share it as `Arc<Syncobj>`.
#[derive(Default)]
pub struct Syncobj {
    state: Mutex<State>,
    /// Separate from `state` so fence callbacks can reach it through a weak reference.
    hooks: Arc<Mutex<Hooks>>,
}

impl std::fmt::Debug for Syncobj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncobj")
            .field("head", &shim::lock(&self.state).head)
            .finish()
    }
}

impl Syncobj {
    /// An empty syncobj.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A syncobj holding an already-signalled fence (CREATE_SIGNALED).
    pub fn new_signalled() -> Arc<Self> {
        let syncobj = Self::new();
        syncobj.replace_fence(Some(Fence::signalled_stub()));
        syncobj
    }

    /// The current fence (a timeline's head point), if any.
    pub fn fence(&self) -> Option<Arc<Fence>> {
        shim::lock(&self.state)
            .head
            .as_ref()
            .map(|h| h.fence().clone())
    }

    /// Whether the current fence exists and has signalled.
    pub fn is_signalled(&self) -> bool {
        self.fence().is_some_and(|f| f.is_signalled())
    }

    /// Binary signal: replaces the content with `fence` (`None` resets).
    pub fn replace_fence(&self, fence: Option<Arc<Fence>>) {
        self.install(fence.map(Head::Fence));
    }

    /// Empties the syncobj.
    pub fn reset(&self) {
        self.install(None);
    }

    /// Timeline signal: appends `point` carrying `fence`; point 0 replaces (binary).
    pub fn add_point(&self, point: u64, fence: Arc<Fence>) {
        if point == 0 {
            return self.replace_fence(Some(fence));
        }
        let mut state = shim::lock(&self.state);
        let prev = match state.head.take() {
            None => None,
            Some(Head::Chain(node)) => Some(node),
            // A binary fence becomes the chain's first link so the point also waits for it.
            Some(Head::Fence(fence)) => Some(ChainNode::new(None, fence, 0)),
        };
        let node = ChainNode::new(prev, fence, point);
        // A signalled predecessor is collected at once: a timeline whose points all signalled
        // keeps one node, however many points were added (each would otherwise stay linked
        // until a walk collected it).
        let points = if node.prev().is_some() {
            state.points + 1
        } else {
            1
        };
        let listeners = Self::set_head(&mut state, Some(Head::Chain(node)));
        state.points = points;
        drop(state);
        self.after_change(listeners);
    }

    fn install(&self, head: Option<Head>) {
        let mut state = shim::lock(&self.state);
        let listeners = Self::set_head(&mut state, head);
        drop(state);
        self.after_change(listeners);
    }

    /// Sets the head; returns what must run once the content lock is released.
    fn set_head(
        state: &mut State,
        head: Option<Head>,
    ) -> (Vec<Arc<WaitQueue>>, Option<Arc<Fence>>) {
        let fence = head.as_ref().map(|h| h.fence().clone());
        state.points = match &head {
            Some(Head::Chain(_)) => 1,
            _ => 0,
        };
        state.head = head;
        let listeners = state.listeners.iter().map(|(_, q)| q.clone()).collect();
        (listeners, fence)
    }

    fn after_change(&self, (listeners, fence): (Vec<Arc<WaitQueue>>, Option<Arc<Fence>>)) {
        for queue in listeners {
            queue.notify_all();
        }
        if let Some(fence) = fence {
            let hooks = Arc::downgrade(&self.hooks);
            fence.on_signal(move |_| run_hooks(&hooks));
        }
    }

    /// Resolves `point` (0: the current fence) to the fence a waiter should wait for.
    pub fn find_fence(&self, point: u64) -> Result<Arc<Fence>, SyncobjError> {
        let head = shim::lock(&self.state).head.clone();
        match (head, point) {
            (None, _) => Err(SyncobjError::NoFence { point }),
            (Some(head), 0) => Ok(head.fence().clone()),
            (Some(Head::Fence(_)), _) => Err(SyncobjError::PointNotSubmitted {
                point,
                last_submitted: 0,
            }),
            (Some(Head::Chain(node)), _) => match node.find_point(point) {
                Ok(Some(node)) => Ok(node.fence().clone()),
                Ok(None) => Ok(Fence::signalled_stub()),
                Err(ChainError::NotSubmitted {
                    point,
                    last_submitted,
                }) => Err(SyncobjError::PointNotSubmitted {
                    point,
                    last_submitted,
                }),
            },
        }
    }

    /// The latest timeline point known signalled (0 for binary or empty syncobjs).
    pub fn last_signalled_point(&self) -> u64 {
        match shim::lock(&self.state).head.clone() {
            Some(Head::Chain(node)) => node.last_signalled_point(),
            _ => 0,
        }
    }

    /// Timeline nodes this syncobj keeps alive (0 for binary or empty syncobjs): what a
    /// client is charged for. `exact` recounts (a walk that collects signalled links, linear
    /// in the points still pending); otherwise an upper bound in constant time.
    pub fn timeline_points(&self, exact: bool) -> usize {
        if !exact {
            return shim::lock(&self.state).points;
        }
        // The walk takes link and fence locks: not under the content lock.
        let head = shim::lock(&self.state).head.clone();
        let Some(Head::Chain(node)) = head else {
            return 0;
        };
        let len = node.collect_len();
        let mut state = shim::lock(&self.state);
        if matches!(&state.head, Some(Head::Chain(h)) if Arc::ptr_eq(h, &node)) {
            state.points = len;
        }
        state.points
    }

    /// The latest timeline point submitted (0 for binary or empty syncobjs).
    pub fn last_submitted_point(&self) -> u64 {
        match &shim::lock(&self.state).head {
            Some(Head::Chain(node)) => node.seqno(),
            _ => 0,
        }
    }

    /// Copies `src`'s point `src_point` into `dst`'s point `dst_point` (0: binary content).
    pub fn transfer(
        src: &Syncobj,
        src_point: u64,
        dst: &Syncobj,
        dst_point: u64,
    ) -> Result<(), SyncobjError> {
        let fence = src.find_fence(src_point)?;
        dst.add_point(dst_point, fence);
        Ok(())
    }

    /// Registers `hook`, called whenever the current fence signals (and at once if it has).
    pub fn add_ready_hook(&self, hook: ReadyHook) -> HookId {
        let id = {
            let mut hooks = shim::lock(&self.hooks);
            let id = HookId(hooks.next);
            hooks.next += 1;
            hooks.list.push((id, hook.clone()));
            id
        };
        if self.is_signalled() {
            hook();
        }
        id
    }

    /// Unregisters a hook; `false` if unknown.
    pub fn remove_ready_hook(&self, id: HookId) -> bool {
        let mut hooks = shim::lock(&self.hooks);
        let before = hooks.list.len();
        hooks.list.retain(|(h, _)| *h != id);
        hooks.list.len() != before
    }

    fn listen(&self, queue: &Arc<WaitQueue>) -> u64 {
        let mut state = shim::lock(&self.state);
        let id = state.next_listener;
        state.next_listener += 1;
        state.listeners.push((id, queue.clone()));
        id
    }

    fn unlisten(&self, id: u64) {
        shim::lock(&self.state).listeners.retain(|(l, _)| *l != id);
    }

    /// Waits for one syncobj point per `flags` until `deadline` (`None`: forever).
    pub fn wait(
        &self,
        point: u64,
        flags: WaitFlags,
        deadline: Option<Instant>,
    ) -> Result<(), SyncobjError> {
        wait_many(&[(self, point)], flags | WaitFlags::ALL, deadline).map(|_| ())
    }
}

fn run_hooks(hooks: &Weak<Mutex<Hooks>>) {
    let Some(hooks) = hooks.upgrade() else {
        return;
    };
    let list: Vec<ReadyHook> = shim::lock(&hooks)
        .list
        .iter()
        .map(|(_, h)| h.clone())
        .collect();
    for hook in list {
        hook();
    }
}

/// Per-entry bookkeeping of a multi-wait: the fence resolved last and its callback.
struct Watched {
    fence: Arc<Fence>,
    callback: Option<CallbackId>,
}

/// Waits on `(syncobj, point)` pairs: all of them with [`WaitFlags::ALL`], else any (the
/// lowest ready index is returned; with `ALL` the result is 0).
pub fn wait_many(
    entries: &[(&Syncobj, u64)],
    flags: WaitFlags,
    deadline: Option<Instant>,
) -> Result<usize, SyncobjError> {
    if entries.is_empty() {
        return Err(SyncobjError::EmptyWait);
    }
    let queue = Arc::new(WaitQueue::new());
    let listeners: Vec<u64> = entries.iter().map(|(s, _)| s.listen(&queue)).collect();
    let mut watched: Vec<Option<Watched>> = entries.iter().map(|_| None).collect();
    let mut pending = entries.len();
    let result = queue.wait_for(deadline, || {
        let (outcome, still) = evaluate(entries, flags, &queue, &mut watched);
        pending = still;
        outcome
    });
    for ((syncobj, _), id) in entries.iter().zip(listeners) {
        syncobj.unlisten(id);
    }
    for w in watched.into_iter().flatten() {
        if let Some(id) = w.callback {
            w.fence.remove_callback(id);
        }
    }
    result.unwrap_or(Err(SyncobjError::Timeout { pending }))
}

/// One pass over the entries: `Some` when the wait is over, plus the count not yet ready.
fn evaluate(
    entries: &[(&Syncobj, u64)],
    flags: WaitFlags,
    queue: &Arc<WaitQueue>,
    watched: &mut [Option<Watched>],
) -> (Option<Result<usize, SyncobjError>>, usize) {
    let mut first_ready = None;
    let mut pending = 0;
    for (i, ((syncobj, point), slot)) in entries.iter().zip(watched.iter_mut()).enumerate() {
        let ready = match syncobj.find_fence(*point) {
            Err(SyncobjError::NoFence { .. } | SyncobjError::PointNotSubmitted { .. })
                if flags.intersects(WaitFlags::FOR_SUBMIT | WaitFlags::AVAILABLE) =>
            {
                false
            }
            Err(err) => return (Some(Err(err)), pending),
            Ok(_) if flags.contains(WaitFlags::AVAILABLE) => true,
            Ok(fence) => watch(slot, fence, queue),
        };
        if ready {
            first_ready.get_or_insert(i);
        } else {
            pending += 1;
        }
    }
    let done = if flags.contains(WaitFlags::ALL) {
        pending == 0
    } else {
        first_ready.is_some()
    };
    let index = if flags.contains(WaitFlags::ALL) {
        0
    } else {
        first_ready.unwrap_or(0)
    };
    (done.then_some(Ok(index)), pending)
}

/// Makes sure a signal of `fence` wakes `queue`; returns whether it already signalled.
fn watch(slot: &mut Option<Watched>, fence: Arc<Fence>, queue: &Arc<WaitQueue>) -> bool {
    if let Some(w) = slot {
        if Arc::ptr_eq(&w.fence, &fence) {
            return fence.is_signalled();
        }
        if let Some(id) = w.callback {
            w.fence.remove_callback(id);
        }
    }
    // Register before checking: a signal after registration runs the callback, one before
    // it makes `add_callback` report it — either way the wake cannot be lost.
    let waker = queue.clone();
    let added = fence.add_callback(Box::new(move |_| waker.notify_all()));
    let callback = match added {
        CallbackAdded::Registered(id) => Some(id),
        CallbackAdded::AlreadySignalled => None,
    };
    *slot = Some(Watched {
        fence: fence.clone(),
        callback,
    });
    callback.is_none() || fence.is_signalled()
}

#[cfg(all(test, not(loom)))]
#[path = "tests/syncobj.rs"]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::fence::FenceContext;

    #[test]
    fn loom_syncobj_replace_vs_wait_for_submit_never_misses_the_fence() {
        loom::model(|| {
            let syncobj = Syncobj::new();
            let fence = Fence::new(FenceContext::alloc(), 1);
            let producer = {
                let (syncobj, fence) = (syncobj.clone(), fence.clone());
                loom::thread::spawn(move || {
                    syncobj.replace_fence(Some(fence.clone()));
                    fence.signal().map_err(|_| ())
                })
            };
            assert_eq!(syncobj.wait(0, WaitFlags::FOR_SUBMIT, None), Ok(()));
            assert!(fence.is_signalled());
            assert_eq!(producer.join().unwrap(), Ok(()));
        });
    }

    #[test]
    fn loom_syncobj_replace_vs_wait_uses_a_fence_it_saw() {
        loom::model(|| {
            let syncobj = Syncobj::new();
            let old = Fence::new(FenceContext::alloc(), 1);
            old.signal().unwrap();
            syncobj.replace_fence(Some(old));
            let new = Fence::new(FenceContext::alloc(), 2);
            let replacer = {
                let (syncobj, new) = (syncobj.clone(), new.clone());
                loom::thread::spawn(move || {
                    syncobj.replace_fence(Some(new.clone()));
                    new.signal().map_err(|_| ())
                })
            };
            // Either the old (signalled) or the new fence satisfies the wait; never a hang.
            assert_eq!(syncobj.wait(0, WaitFlags::empty(), None), Ok(()));
            assert_eq!(replacer.join().unwrap(), Ok(()));
        });
    }
}
