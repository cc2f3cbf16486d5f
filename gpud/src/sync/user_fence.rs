//! User (memory) fences: a 64-bit word in memory compared against a value.
//!
//! Owns: the compare ops, the masked check and the CPU wait. The word lives in GPU-visible
//! memory — a GPU VA for exec fences, client memory for bind fences — reached through the
//! small [`FenceMemory`] trait that the memory and scheme layers implement. A user fence has
//! no bounded completion time, so (unlike a dma-fence) a CPU wait:
//! - sleeps on a [`WaitQueue`] that the device interrupt handler notifies
//!   (`queue.notify_all()` after the GPU may have written fence memory), re-reading the word
//!   after each notification — it never spins;
//! - must not hold any lock: in debug builds it panics if the caller holds a checked lock.
//!
//! Must not: turn a user fence into a dma-fence, or hold locks while reading memory.

use super::lockdep;
use super::wait_queue::WaitQueue;
use std::fmt;
use std::time::Instant;
use thiserror::Error;

/// Reads user-fence words. Implementations decide what an address means.
pub trait FenceMemory {
    /// The address type (e.g. `GpuVa` for exec fences, `CpuVa` for bind fences).
    type Addr: Copy + fmt::Debug;

    /// Reads the 64-bit word at `addr`; `None` when it is not mapped/readable.
    fn read_u64(&self, addr: Self::Addr) -> Option<u64>;
}

/// How the word read is compared with the fence value (both masked first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `word == value`
    Eq,
    /// `word != value`
    Neq,
    /// `word > value`
    Gt,
    /// `word >= value`
    Gte,
    /// `word < value`
    Lt,
    /// `word <= value`
    Lte,
}

impl CompareOp {
    /// Applies the comparison.
    pub fn holds(self, word: u64, value: u64) -> bool {
        match self {
            CompareOp::Eq => word == value,
            CompareOp::Neq => word != value,
            CompareOp::Gt => word > value,
            CompareOp::Gte => word >= value,
            CompareOp::Lt => word < value,
            CompareOp::Lte => word <= value,
        }
    }
}

/// Errors of user-fence checks and waits, carrying the fence's address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UserFenceError<A: fmt::Debug> {
    /// The fence word could not be read.
    #[error("user fence word at {addr:?} is not readable")]
    Unreadable { addr: A },
    /// The deadline passed with the condition still false.
    #[error("user fence at {addr:?} not reached: last read {last_read:#x}")]
    Timeout { addr: A, last_read: u64 },
}

/// A user fence: `(word(addr) & mask) op (value & mask)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserFence<A> {
    /// Where the word lives.
    pub addr: A,
    /// The value compared against.
    pub value: u64,
    /// Bits that take part in the comparison.
    pub mask: u64,
    /// The comparison.
    pub op: CompareOp,
}

impl<A: Copy + fmt::Debug> UserFence<A> {
    /// A fence comparing all 64 bits.
    pub fn new(addr: A, op: CompareOp, value: u64) -> Self {
        Self {
            addr,
            value,
            mask: u64::MAX,
            op,
        }
    }

    /// Whether `word` satisfies the fence.
    pub fn passes(&self, word: u64) -> bool {
        self.op.holds(word & self.mask, self.value & self.mask)
    }

    /// Reads the word once; `Ok(Some(word))` when the condition holds.
    pub fn check<M>(&self, memory: &M) -> Result<Option<u64>, UserFenceError<A>>
    where
        M: FenceMemory<Addr = A> + ?Sized,
    {
        let word = memory
            .read_u64(self.addr)
            .ok_or(UserFenceError::Unreadable { addr: self.addr })?;
        Ok(self.passes(word).then_some(word))
    }

    /// Sleeps on `queue` until the condition holds or `deadline` passes (`None`: forever);
    /// returns the word that satisfied it. Must be called holding no lock.
    pub fn wait<M>(
        &self,
        memory: &M,
        queue: &WaitQueue,
        deadline: Option<Instant>,
    ) -> Result<u64, UserFenceError<A>>
    where
        M: FenceMemory<Addr = A> + ?Sized,
    {
        lockdep::assert_no_locks_held("user fence wait");
        let mut last_read = 0;
        let outcome = queue.wait_for(deadline, || match memory.read_u64(self.addr) {
            None => Some(Err(UserFenceError::Unreadable { addr: self.addr })),
            Some(word) if self.passes(word) => Some(Ok(word)),
            Some(word) => {
                last_read = word;
                None
            }
        });
        outcome.unwrap_or(Err(UserFenceError::Timeout {
            addr: self.addr,
            last_read,
        }))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::lockdep::{LockClass, OrderedRwLock};
    use crate::types::GpuVa;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Fake GPU memory: a word map plus a count of reads.
    #[derive(Default)]
    struct FakeMemory {
        words: Mutex<HashMap<u64, u64>>,
        reads: AtomicUsize,
    }

    impl FakeMemory {
        fn write(&self, addr: GpuVa, value: u64) {
            self.words.lock().unwrap().insert(addr.get(), value);
        }
    }

    impl FenceMemory for FakeMemory {
        type Addr = GpuVa;
        fn read_u64(&self, addr: GpuVa) -> Option<u64> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.words.lock().unwrap().get(&addr.get()).copied()
        }
    }

    const ADDR: GpuVa = GpuVa(0x1000);

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(3))
    }

    #[test]
    fn user_fence_compare_ops_apply_the_mask_to_both_sides() {
        let cases = [
            (CompareOp::Eq, 5, 5, true),
            (CompareOp::Eq, 5, 6, false),
            (CompareOp::Neq, 5, 6, true),
            (CompareOp::Gt, 6, 5, true),
            (CompareOp::Gt, 5, 5, false),
            (CompareOp::Gte, 5, 5, true),
            (CompareOp::Lt, 4, 5, true),
            (CompareOp::Lt, 5, 5, false),
            (CompareOp::Lte, 5, 5, true),
            (CompareOp::Lte, 6, 5, false),
        ];
        for (op, word, value, want) in cases {
            assert_eq!(UserFence::new(ADDR, op, value).passes(word), want, "{op:?}");
        }
        let masked = UserFence {
            addr: ADDR,
            value: 0xFFFF_0001,
            mask: 0xFF,
            op: CompareOp::Eq,
        };
        assert!(masked.passes(0xAB01), "high bits ignored on both sides");
        assert!(!masked.passes(0x02));
    }

    #[test]
    fn user_fence_wait_is_woken_by_the_device_notify() {
        let memory = Arc::new(FakeMemory::default());
        let queue = Arc::new(WaitQueue::new());
        memory.write(ADDR, 0);
        let device = {
            let (memory, queue) = (memory.clone(), queue.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                memory.write(ADDR, 42);
                queue.notify_all(); // what the interrupt handler does
            })
        };
        let fence = UserFence::new(ADDR, CompareOp::Gte, 42);
        assert_eq!(fence.wait(&*memory, &queue, None), Ok(42));
        device.join().unwrap();
    }

    #[test]
    fn user_fence_wait_sleeps_instead_of_polling() {
        let memory = FakeMemory::default();
        memory.write(ADDR, 1);
        let queue = WaitQueue::new();
        let fence = UserFence::new(ADDR, CompareOp::Eq, 2);
        assert_eq!(
            fence.wait(&memory, &queue, soon()),
            Err(UserFenceError::Timeout {
                addr: ADDR,
                last_read: 1
            })
        );
        // One read before sleeping and one after the timeout: no spinning in between.
        assert_eq!(memory.reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn user_fence_unreadable_word_is_an_error() {
        let memory = FakeMemory::default();
        let fence = UserFence::new(ADDR, CompareOp::Eq, 0);
        assert_eq!(
            fence.check(&memory),
            Err(UserFenceError::Unreadable { addr: ADDR })
        );
        assert_eq!(
            fence.wait(&memory, &WaitQueue::new(), None),
            Err(UserFenceError::Unreadable { addr: ADDR })
        );
        memory.write(ADDR, 0);
        assert_eq!(fence.check(&memory), Ok(Some(0)));
    }

    #[test]
    fn user_fence_wait_while_holding_a_lock_fails_loudly() {
        let memory = FakeMemory::default();
        memory.write(ADDR, 7);
        let vm_lock = OrderedRwLock::new(LockClass::VmLock, ());
        let fence = UserFence::new(ADDR, CompareOp::Eq, 7);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = vm_lock.read();
            let _ = fence.wait(&memory, &WaitQueue::new(), None);
        }));
        assert!(result.is_err());
        assert_eq!(fence.wait(&memory, &WaitQueue::new(), None), Ok(7));
    }
}
