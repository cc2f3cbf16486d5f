//! Synchronization primitives: fences, fence arrays and chains, syncobjs, reservation
//! objects, ww-mutex multi-object locking, user (memory) fences and the lock-order checker.
//!
//! See `docs/sync.md` for the semantics and `docs/locking.md` for the lock order. Every
//! mutex, condition variable and atomic of the model-checked parts comes from [`shim`], so
//! `RUSTFLAGS="--cfg loom"` builds check them with loom.

pub mod array;
pub mod chain;
pub mod fence;
pub mod lockdep;
mod shim;
pub mod wait_queue;

pub use array::{fence_array, ArrayError, ArrayMode};
pub use chain::{ChainError, ChainNode};
pub use fence::{
    wait_all, wait_any, CallbackAdded, CallbackId, Fence, FenceCallback, FenceContext, FenceError,
    FenceFault, FenceKind, FenceStatus, Outcome,
};
pub use lockdep::{LockClass, OrderedMutex, OrderedRwLock};
pub use shim::deadline_after;
pub use wait_queue::{WaitQueue, Wake};
