//! Synchronization primitives: fences, fence arrays and chains, syncobjs, reservation
//! objects, ww-mutex multi-object locking, user (memory) fences and the lock-order checker.
//!
//! See `docs/sync.md` for the semantics and `docs/locking.md` for the lock order. Every
//! mutex, condition variable and atomic of the model-checked parts comes from `shim.rs`, so
//! `RUSTFLAGS="--cfg loom"` builds check them with loom.

pub mod array;
pub mod chain;
mod cond;
pub mod exec;
pub mod fence;
pub mod lockdep;
pub mod resv;
mod shim;
pub mod syncobj;
pub mod user_fence;
pub mod wait_queue;
pub mod ww;

pub use array::{fence_array, ArrayError, ArrayMode};
pub use chain::{ChainError, ChainNode};
pub use exec::{Exec, ExecError, ExecFlags};
pub use fence::{
    wait_all, wait_any, CallbackAdded, CallbackId, Fence, FenceCallback, FenceContext, FenceError,
    FenceFault, FenceKind, FenceStatus, Outcome,
};
pub use lockdep::{LockClass, OrderedMutex, OrderedRwLock};
pub use resv::{Resv, ResvError, ResvId, Usage};
pub use shim::deadline_after;
pub use syncobj::{
    wait_many as syncobj_wait_many, HookId, ReadyHook, Syncobj, SyncobjError, WaitFlags,
};
pub use user_fence::{CompareOp, FenceMemory, UserFence, UserFenceError};
pub use wait_queue::{WaitQueue, Wake};
pub use ww::{AcquireCtx, Ticket, WwError, WwMutex};
