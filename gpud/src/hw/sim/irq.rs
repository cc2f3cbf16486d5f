//! Interrupts from simgpu: an MSI-X message latch the platform registers as the device's
//! interrupt sink, and the [`Interrupts`] implementation over it and the status registers.
//!
//! Two wirings ([`MsixWiring`]): in process, every cause has its own MSI-X vector whose
//! message data is the vector number, and the latch is the device's interrupt sink; on a
//! platform with one CPU vector (Redox: MSI-X, MSI or INTx), the platform programs the
//! messages, and its IRQ hook reads INT_STATUS and [`IrqLatch::mark`]s the causes.
//!
//! Owns: remembering which causes fired (by epoch, so waiters never miss a wake-up) and
//! waking waiters. Must not: do interrupt work in the sink or in `mark`; both only record
//! and wake.

use crate::hw::regs::{self, IrqCauses};
use crate::hw::{HwError, Interrupts, IrqWatcher, Mmio};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Vectors the latch tracks (one per cause bit).
const VECTORS: usize = 32;

#[derive(Debug, Default)]
struct LatchState {
    /// Interrupts delivered so far.
    epoch: u64,
    /// Epoch at which each vector last fired (0 = never).
    last: [u64; VECTORS],
    /// Threads waiting for each vector: a delivery wakes the waiters only if one of them
    /// waits for it (a thread woken for a cause it does not wait for would only go back to
    /// sleep: a wasted hand-off per interrupt).
    waiting: [u32; VECTORS],
}

impl LatchState {
    /// Whether a waiter waits for one of `causes`.
    fn wanted(&self, causes: IrqCauses) -> bool {
        self.waiting
            .iter()
            .enumerate()
            .any(|(v, &n)| n > 0 && causes.bits() & (1 << v) != 0)
    }

    /// Counts a waiter in (`enter`) or out for each vector of `causes`.
    fn count(&mut self, causes: IrqCauses, enter: bool) {
        for (v, n) in self.waiting.iter_mut().enumerate() {
            if causes.bits() & (1 << v) != 0 {
                *n = if enter { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }
}

/// Callbacks run on delivery, each with the causes it watches.
#[derive(Default)]
struct Watchers(Vec<(IrqCauses, IrqWatcher)>);

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(c, _)| c))
            .finish()
    }
}

/// Records MSI-X messages. The driver programs each vector's message data to the vector
/// number, so the latch knows the cause from the message alone, as with real MSI.
#[derive(Debug, Default)]
pub struct IrqLatch {
    state: Mutex<LatchState>,
    wake: Condvar,
    /// Called after recording, outside the state lock (see [`IrqLatch::watch`]).
    watchers: Mutex<Watchers>,
}

impl simgpu::InterruptSink for IrqLatch {
    fn interrupt(&self, _vector: u16, data: u32) {
        let mut s = self.state.lock();
        s.epoch += 1;
        let epoch = s.epoch;
        if let Some(slot) = usize::try_from(data).ok().and_then(|i| s.last.get_mut(i)) {
            *slot = epoch;
        }
        let fired = IrqCauses::from_bits_truncate(1u32.checked_shl(data).unwrap_or(0));
        let wanted = s.wanted(fired);
        drop(s);
        if wanted {
            self.wake.notify_all();
        }
        self.notify_watchers(fired);
    }
}

impl IrqLatch {
    /// Records that `causes` fired (one delivery), as the platform's IRQ hook learned from
    /// INT_STATUS. Nothing happens for an empty set.
    pub fn mark(&self, causes: IrqCauses) {
        if causes.is_empty() {
            return;
        }
        let mut s = self.state.lock();
        s.epoch += 1;
        let epoch = s.epoch;
        for (v, slot) in s.last.iter_mut().enumerate() {
            if causes.bits() & (1 << v) != 0 {
                *slot = epoch;
            }
        }
        let wanted = s.wanted(causes);
        drop(s);
        if wanted {
            self.wake.notify_all();
        }
        self.notify_watchers(causes);
    }

    /// Calls `watcher` with the fired causes whenever one of `causes` is delivered, on the
    /// delivering thread (the device's, or the platform's IRQ hook), after it is recorded.
    pub fn watch(&self, causes: IrqCauses, watcher: IrqWatcher) {
        self.watchers.lock().0.push((causes, watcher));
    }

    fn notify_watchers(&self, fired: IrqCauses) {
        if fired.is_empty() {
            return;
        }
        let mine: Vec<(IrqCauses, IrqWatcher)> = self
            .watchers
            .lock()
            .0
            .iter()
            .filter(|(c, _)| c.intersects(fired))
            .map(|(c, w)| (*c & fired, w.clone()))
            .collect();
        for (c, w) in mine {
            w(c);
        }
    }

    /// Interrupts delivered so far.
    pub fn epoch(&self) -> u64 {
        self.state.lock().epoch
    }

    fn fired_since(s: &LatchState, since: u64, causes: IrqCauses) -> IrqCauses {
        let mut out = IrqCauses::empty();
        for (v, &at) in s.last.iter().enumerate() {
            let bit = IrqCauses::from_bits_truncate(1 << v);
            if at > since && causes.contains(bit) {
                out |= bit;
            }
        }
        out
    }

    /// Waits for a vector of `causes` delivered after `since`.
    pub fn wait(
        &self,
        since: u64,
        causes: IrqCauses,
        timeout: Duration,
    ) -> Result<IrqCauses, HwError> {
        let start = Instant::now();
        let mut s = self.state.lock();
        loop {
            let fired = Self::fired_since(&s, since, causes);
            if !fired.is_empty() {
                return Ok(fired);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(HwError::Timeout {
                    what: "interrupt",
                    waited,
                });
            }
            s.count(causes, true);
            self.wake.wait_for(&mut s, timeout - waited);
            s.count(causes, false);
        }
    }
}

/// Who programs the MSI-X table and how causes reach the latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixWiring {
    /// In process: entry n's data is n, the latch is the interrupt sink.
    PerCauseVectors,
    /// The platform owns the table (or uses MSI/INTx) and marks causes from INT_STATUS; the
    /// hardware layer must not touch the table.
    Platform,
}

/// MSI-X vectors the device uses: one per cause bit.
pub const VECTORS_USED: u32 = IrqCauses::all().bits().count_ones();

/// [`Interrupts`] for simgpu: the latch plus INT_MASK/INT_STATUS over MMIO.
pub struct SimInterrupts {
    latch: Arc<IrqLatch>,
    mmio: Arc<dyn Mmio>,
}

impl SimInterrupts {
    /// Programs the MSI-X table (data = vector number, unmasked) and enables nothing yet.
    pub fn new(latch: Arc<IrqLatch>, mmio: Arc<dyn Mmio>) -> Self {
        Self::wired(latch, mmio, MsixWiring::PerCauseVectors)
    }

    /// Like [`SimInterrupts::new`], but with [`MsixWiring::Platform`] the MSI-X table is left
    /// as the platform programmed it.
    pub fn wired(latch: Arc<IrqLatch>, mmio: Arc<dyn Mmio>, wiring: MsixWiring) -> Self {
        if wiring == MsixWiring::PerCauseVectors {
            for v in 0..VECTORS_USED {
                let entry = regs::MSIX_TABLE + v * regs::MSIX_ENTRY_SIZE;
                mmio.write32(entry + regs::MSIX_DATA, v);
                mmio.write32(entry + regs::MSIX_CTRL, 0);
            }
        }
        Self { latch, mmio }
    }
}

impl Interrupts for SimInterrupts {
    fn enable(&self, causes: IrqCauses) {
        let cur = self.mmio.read32(regs::INT_MASK);
        self.mmio.write32(regs::INT_MASK, cur | causes.bits());
    }

    fn epoch(&self) -> u64 {
        self.latch.epoch()
    }

    fn wait(&self, since: u64, causes: IrqCauses, timeout: Duration) -> Result<IrqCauses, HwError> {
        self.latch.wait(since, causes, timeout)
    }

    fn status(&self) -> IrqCauses {
        IrqCauses::from_bits_truncate(self.mmio.read32(regs::INT_STATUS))
    }

    fn ack(&self, causes: IrqCauses) {
        self.mmio.write32(regs::INT_STATUS, causes.bits());
    }

    fn watch(&self, causes: IrqCauses, watcher: IrqWatcher) -> bool {
        self.latch.watch(causes, watcher);
        true
    }
}
