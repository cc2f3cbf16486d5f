//! Interrupts from simgpu: an MSI-X message latch the platform registers as the device's
//! interrupt sink, and the [`Interrupts`] implementation over it and the status registers.
//!
//! Owns: remembering which vectors fired (by epoch, so waiters never miss a wake-up) and
//! waking waiters. Must not: do interrupt work in the sink; the sink runs on the device's
//! thread and only records and wakes.

use crate::hw::regs::{self, IrqCauses};
use crate::hw::{HwError, Interrupts, Mmio};
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
}

/// Records MSI-X messages. The driver programs each vector's message data to the vector
/// number, so the latch knows the cause from the message alone, as with real MSI.
#[derive(Debug, Default)]
pub struct IrqLatch {
    state: Mutex<LatchState>,
    wake: Condvar,
}

impl simgpu::InterruptSink for IrqLatch {
    fn interrupt(&self, _vector: u16, data: u32) {
        let mut s = self.state.lock();
        s.epoch += 1;
        let epoch = s.epoch;
        if let Some(slot) = usize::try_from(data).ok().and_then(|i| s.last.get_mut(i)) {
            *slot = epoch;
        }
        drop(s);
        self.wake.notify_all();
    }
}

impl IrqLatch {
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
            self.wake.wait_for(&mut s, timeout - waited);
        }
    }
}

/// [`Interrupts`] for simgpu: the latch plus INT_MASK/INT_STATUS over MMIO.
pub struct SimInterrupts {
    latch: Arc<IrqLatch>,
    mmio: Arc<dyn Mmio>,
}

impl SimInterrupts {
    /// Programs the MSI-X table (data = vector number, unmasked) and enables nothing yet.
    pub fn new(latch: Arc<IrqLatch>, mmio: Arc<dyn Mmio>) -> Self {
        for v in 0..IrqCauses::all().bits().count_ones() {
            let entry = regs::MSIX_TABLE + v * regs::MSIX_ENTRY_SIZE;
            mmio.write32(entry + regs::MSIX_DATA, v);
            mmio.write32(entry + regs::MSIX_CTRL, 0);
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
}
