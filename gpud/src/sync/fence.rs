//! The fence (dma-fence semantics): a one-shot completion event of a context + 64-bit seqno.
//!
//! Owns: fence contexts, the pending → signalled (ok or failed) transition, the error that may
//! be set only before signalling, signal callbacks, blocking waits on one fence or on many
//! (all / any). Invariants a newcomer must keep:
//! - a fence signals exactly once; after that its status never changes;
//! - seqnos are ordered only within one context;
//! - callbacks run exactly once, on the signalling thread, *outside* the fence's lock, so a
//!   callback may signal other fences, take locks or touch this fence again;
//! - a waiter blocked in [`Fence::wait`] is woken by a signal from any thread (the device
//!   interrupt thread included) without polling.
//!
//! Must not: know what signals it (jobs, binds, the interrupt handler) or wait on
//! user/memory fences.

use super::cond::CountedCondvar;
use super::shim::{self, AtomicBool, Mutex, Ordering};
use super::wait_queue::WaitQueue;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use thiserror::Error;

/// A fence timeline: seqnos are comparable only between fences of the same context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceContext(u64);

/// Context 0 is reserved for already-signalled stub fences.
const STUB_CONTEXT: FenceContext = FenceContext(0);

// Contexts are process-wide ids, not synchronisation state, so this counter is not routed
// through the model-checking shim.
static NEXT_CONTEXT: StdAtomicU64 = StdAtomicU64::new(1);

impl FenceContext {
    /// A fresh context, never returned before.
    pub fn alloc() -> Self {
        Self(NEXT_CONTEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// The raw context number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Why a fence completed with an error (set with [`Fence::set_error`] before signalling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FenceFault {
    /// The work was cancelled before it ran (queue destroyed, unwind).
    #[error("work was cancelled")]
    Canceled,
    /// The job exceeded its time limit and was killed.
    #[error("job timed out on the device")]
    JobTimeout,
    /// The device was reset or lost while the work was pending.
    #[error("device lost")]
    DeviceLost,
    /// A driver-specific failure code.
    #[error("work failed with code {0}")]
    Failed(u32),
}

/// A fence's state as seen by [`Fence::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStatus {
    /// Not signalled yet.
    Pending,
    /// Signalled without error.
    Signalled,
    /// Signalled with an error.
    Failed(FenceFault),
}

/// The result of a completed wait: how the fence finished.
pub type Outcome = Result<(), FenceFault>;

/// Errors of fence operations; they carry the fence they concern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FenceError {
    /// Signal or set-error on a fence that already signalled.
    #[error("fence {context}:{seqno} is already signalled")]
    AlreadySignalled { context: u64, seqno: u64 },
    /// The deadline passed before the awaited fences signalled.
    #[error("timed out with {pending} fence(s) still pending")]
    Timeout { pending: usize },
    /// "Wait for any" on an empty set can never complete.
    #[error("wait for any of zero fences")]
    EmptyWait,
}

/// What a fence is made of; containers must not be added to reservation objects.
#[derive(Debug, Clone)]
pub enum FenceKind {
    /// A fence signalled directly by its producer.
    Plain,
    /// An all-of / any-of combination of these members (see `array.rs`).
    Array(Vec<Arc<Fence>>),
    /// A timeline point of a fence chain (see `chain.rs`).
    Chain,
}

/// A callback run once when the fence signals.
pub type FenceCallback = Box<dyn FnOnce(&Fence) + Send>;

/// Handle of a registered callback, for [`Fence::remove_callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackId(u64);

/// Result of [`Fence::add_callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAdded {
    /// Registered; it will run when the fence signals.
    Registered(CallbackId),
    /// The fence had already signalled; the callback was dropped without running.
    AlreadySignalled,
}

struct State {
    status: FenceStatus,
    error: Option<FenceFault>,
    callbacks: Vec<(CallbackId, FenceCallback)>,
    next_callback: u64,
    deadline: Option<Instant>,
}

impl State {
    fn push_callback(&mut self, callback: FenceCallback) -> CallbackId {
        let id = CallbackId(self.next_callback);
        self.next_callback += 1;
        self.callbacks.push((id, callback));
        id
    }
}

/// A dma-fence-like completion event. Always shared as `Arc<Fence>`.
pub struct Fence {
    /// Lets `complete(&self)` hand an owned reference to deferred callbacks.
    me: Weak<Fence>,
    context: FenceContext,
    seqno: u64,
    kind: FenceKind,
    /// Mirrors `status != Pending` for lock-free polling.
    done: AtomicBool,
    state: Mutex<State>,
    cond: CountedCondvar,
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("context", &self.context.0)
            .field("seqno", &self.seqno)
            .field("status", &self.status())
            .finish()
    }
}

impl Fence {
    /// A pending fence of `context` with `seqno`.
    pub fn new(context: FenceContext, seqno: u64) -> Arc<Self> {
        Self::with_kind(context, seqno, FenceKind::Plain)
    }

    pub(crate) fn with_kind(context: FenceContext, seqno: u64, kind: FenceKind) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            context,
            seqno,
            kind,
            done: AtomicBool::new(false),
            state: Mutex::new(State {
                status: FenceStatus::Pending,
                error: None,
                callbacks: Vec::new(),
                next_callback: 0,
                deadline: None,
            }),
            cond: CountedCondvar::new(),
        })
    }

    /// An already-signalled fence (stands in for work that completed and was forgotten).
    pub fn signalled_stub() -> Arc<Self> {
        let fence = Self::new(STUB_CONTEXT, 0);
        // A fence created on the line above cannot have signalled yet, so this succeeds.
        let _ = fence.signal();
        fence
    }

    /// The fence's context.
    pub fn context(&self) -> FenceContext {
        self.context
    }

    /// The fence's seqno within its context.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// What the fence is made of.
    pub fn kind(&self) -> &FenceKind {
        &self.kind
    }

    /// Whether this is an array or chain (which reservation objects refuse).
    pub fn is_container(&self) -> bool {
        !matches!(self.kind, FenceKind::Plain)
    }

    /// `Some(true)` if `self` comes after `other` on the same context; `None` across contexts.
    pub fn is_later(&self, other: &Fence) -> Option<bool> {
        (self.context == other.context).then_some(self.seqno > other.seqno)
    }

    /// Same fence, or later on the same context; `None` across contexts.
    pub fn is_later_or_same(&self, other: &Fence) -> Option<bool> {
        if std::ptr::eq(self, other) {
            return Some(true);
        }
        (self.context == other.context).then_some(self.seqno >= other.seqno)
    }

    /// Whether the fence has signalled (ok or failed). Lock-free.
    pub fn is_signalled(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Pending, signalled, or failed with the error set before signalling.
    pub fn status(&self) -> FenceStatus {
        shim::lock(&self.state).status
    }

    /// Records `fault` as the outcome of the (still pending) fence.
    pub fn set_error(&self, fault: FenceFault) -> Result<(), FenceError> {
        let mut state = shim::lock(&self.state);
        if state.status != FenceStatus::Pending {
            return Err(self.already_signalled());
        }
        state.error = Some(fault);
        Ok(())
    }

    /// Records `fault` unless an error is already recorded (first error wins).
    pub(crate) fn set_error_once(&self, fault: FenceFault) -> Result<(), FenceError> {
        let mut state = shim::lock(&self.state);
        if state.status != FenceStatus::Pending {
            return Err(self.already_signalled());
        }
        state.error.get_or_insert(fault);
        Ok(())
    }

    /// Signals the fence: wakes every waiter and runs every callback, exactly once.
    pub fn signal(&self) -> Result<(), FenceError> {
        self.complete(None)
    }

    /// Sets `fault` (when given) and signals in one step; used to propagate errors.
    pub(crate) fn complete(&self, fault: Option<FenceFault>) -> Result<(), FenceError> {
        let callbacks = {
            let mut state = shim::lock(&self.state);
            if state.status != FenceStatus::Pending {
                return Err(self.already_signalled());
            }
            state.status = match fault.or(state.error) {
                Some(fault) => FenceStatus::Failed(fault),
                None => FenceStatus::Signalled,
            };
            self.done.store(true, Ordering::Release);
            std::mem::take(&mut state.callbacks)
        };
        self.cond.notify_all();
        match self.me.upgrade() {
            Some(me) => run_callbacks(me, callbacks),
            // Unreachable: fences are only built inside an `Arc`, which `&self` keeps alive.
            // Running in place is the safe fallback.
            None => callbacks.into_iter().for_each(|(_, cb)| cb(self)),
        }
        Ok(())
    }

    fn already_signalled(&self) -> FenceError {
        FenceError::AlreadySignalled {
            context: self.context.0,
            seqno: self.seqno,
        }
    }

    /// Registers `callback` to run when the fence signals, unless it already has.
    pub fn add_callback(&self, callback: FenceCallback) -> CallbackAdded {
        let mut state = shim::lock(&self.state);
        if state.status != FenceStatus::Pending {
            return CallbackAdded::AlreadySignalled;
        }
        CallbackAdded::Registered(state.push_callback(callback))
    }

    /// Runs `callback` when the fence signals, or right now (on this thread) if it has.
    ///
    /// Returns the registration when the callback was queued, `None` when it already ran.
    pub fn on_signal(&self, callback: impl FnOnce(&Fence) + Send + 'static) -> Option<CallbackId> {
        let mut state = shim::lock(&self.state);
        if state.status == FenceStatus::Pending {
            return Some(state.push_callback(Box::new(callback)));
        }
        drop(state);
        callback(self);
        None
    }

    /// Unregisters a callback; `false` if it already ran (or is running) or never existed.
    pub fn remove_callback(&self, id: CallbackId) -> bool {
        let mut state = shim::lock(&self.state);
        let before = state.callbacks.len();
        state.callbacks.retain(|(cb, _)| *cb != id);
        state.callbacks.len() != before
    }

    /// Tells the signaller the fence is needed by `deadline`; the earliest hint wins.
    pub fn set_deadline(&self, deadline: Instant) {
        let mut state = shim::lock(&self.state);
        state.deadline = Some(state.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// The earliest deadline hint set so far.
    pub fn deadline(&self) -> Option<Instant> {
        shim::lock(&self.state).deadline
    }

    /// Blocks until the fence signals or `timeout` passes (`None`: forever).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Outcome, FenceError> {
        self.wait_until(timeout.and_then(shim::deadline_after))
    }

    /// Blocks until the fence signals or the clock reaches `deadline` (`None`: forever).
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<Outcome, FenceError> {
        let mut state = shim::lock(&self.state);
        loop {
            match state.status {
                FenceStatus::Signalled => return Ok(Ok(())),
                FenceStatus::Failed(fault) => return Ok(Err(fault)),
                FenceStatus::Pending => {}
            }
            let (next, timed_out) = self.cond.wait_until(state, deadline);
            state = next;
            if timed_out && state.status == FenceStatus::Pending {
                return Err(FenceError::Timeout { pending: 1 });
            }
        }
    }
}

/// Callbacks waiting to run on this thread: `Some` while a signal is running callbacks.
type Deferred = Option<VecDeque<(Arc<Fence>, Vec<(CallbackId, FenceCallback)>)>>;

#[cfg(not(loom))]
std::thread_local! {
    /// Callbacks of fences signalled from inside a callback on this thread. The outermost
    /// signal runs them in a loop instead of nesting, so a long fence chain whose oldest
    /// point signals last completes iteratively instead of recursing once per link.
    static DEFERRED: RefCell<Deferred> = const { RefCell::new(None) };
}

// Loom runs its model threads on one OS thread, so the per-thread queue must be loom's.
#[cfg(loom)]
loom::thread_local! {
    static DEFERRED: RefCell<Deferred> = RefCell::new(None);
}

/// Resets the deferral state even if a callback panics (queued callbacks are dropped).
struct DrainGuard;

impl Drop for DrainGuard {
    fn drop(&mut self) {
        DEFERRED.with(|d| d.borrow_mut().take());
    }
}

/// Runs `callbacks` of `fence` now, or queues them if this thread is already running
/// callbacks further up the stack.
fn run_callbacks(fence: Arc<Fence>, callbacks: Vec<(CallbackId, FenceCallback)>) {
    let mut batch = Some((fence, callbacks));
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut() {
            Some(queue) => queue.extend(batch.take()),
            None => *d = Some(VecDeque::new()),
        }
    });
    let Some(mut next) = batch else {
        return; // queued for the outer frame
    };
    let _guard = DrainGuard;
    loop {
        let (fence, callbacks) = next;
        for (_, callback) in callbacks {
            callback(&fence);
        }
        match DEFERRED.with(|d| d.borrow_mut().as_mut().and_then(VecDeque::pop_front)) {
            Some(more) => next = more,
            None => break,
        }
    }
}

/// Blocks until every fence signalled or `deadline` passes.
pub fn wait_all(fences: &[Arc<Fence>], deadline: Option<Instant>) -> Result<(), FenceError> {
    for (i, fence) in fences.iter().enumerate() {
        if let Err(FenceError::Timeout { .. }) = fence.wait_until(deadline) {
            let pending = fences[i..].iter().filter(|f| !f.is_signalled()).count();
            return Err(FenceError::Timeout { pending });
        }
    }
    Ok(())
}

/// Blocks until any fence signalled; returns the lowest index among the signalled ones.
pub fn wait_any(fences: &[Arc<Fence>], deadline: Option<Instant>) -> Result<usize, FenceError> {
    if fences.is_empty() {
        return Err(FenceError::EmptyWait);
    }
    let first = || fences.iter().position(|f| f.is_signalled());
    if let Some(index) = first() {
        return Ok(index);
    }
    let queue = Arc::new(WaitQueue::new());
    let registered: Vec<_> = fences
        .iter()
        .map(|fence| {
            let queue = queue.clone();
            fence.add_callback(Box::new(move |_| queue.notify_all()))
        })
        .collect();
    let result = queue.wait_for(deadline, first);
    for (fence, added) in fences.iter().zip(registered) {
        if let CallbackAdded::Registered(id) = added {
            fence.remove_callback(id);
        }
    }
    result.ok_or(FenceError::Timeout {
        pending: fences.len(),
    })
}

#[cfg(all(test, not(loom)))]
#[path = "tests/fence.rs"]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;

    #[test]
    fn loom_fence_signal_vs_add_callback_runs_exactly_once() {
        loom::model(|| {
            let fence = Fence::new(FenceContext::alloc(), 1);
            let runs = Arc::new(AtomicUsize::new(0));
            let signaller = {
                let fence = fence.clone();
                loom::thread::spawn(move || fence.signal().map_err(|_| ()))
            };
            let counter = runs.clone();
            let added = fence.add_callback(Box::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }));
            assert_eq!(signaller.join().unwrap(), Ok(()));
            let expected = match added {
                CallbackAdded::Registered(_) => 1,
                CallbackAdded::AlreadySignalled => 0,
            };
            assert_eq!(runs.load(Ordering::SeqCst), expected);
        });
    }

    #[test]
    fn loom_fence_signal_vs_wait_wakes_the_waiter() {
        loom::model(|| {
            let fence = Fence::new(FenceContext::alloc(), 1);
            fence.set_error(FenceFault::Canceled).unwrap();
            let signaller = {
                let fence = fence.clone();
                loom::thread::spawn(move || fence.signal().map_err(|_| ()))
            };
            assert_eq!(fence.wait(None), Ok(Err(FenceFault::Canceled)));
            assert!(fence.is_signalled());
            assert_eq!(signaller.join().unwrap(), Ok(()));
        });
    }

    #[test]
    fn loom_fence_wait_any_vs_signal_returns_the_signalled_index() {
        loom::model(|| {
            let fences = vec![
                Fence::new(FenceContext::alloc(), 1),
                Fence::new(FenceContext::alloc(), 1),
            ];
            let signaller = {
                let fence = fences[1].clone();
                loom::thread::spawn(move || fence.signal().map_err(|_| ()))
            };
            assert_eq!(wait_any(&fences, None), Ok(1));
            assert_eq!(signaller.join().unwrap(), Ok(()));
        });
    }

    #[test]
    fn loom_fence_double_signal_race_has_one_winner() {
        loom::model(|| {
            let fence = Fence::new(FenceContext::alloc(), 1);
            let other = {
                let fence = fence.clone();
                loom::thread::spawn(move || fence.signal().is_ok())
            };
            let mine = fence.signal().is_ok();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs);
        });
    }
}
