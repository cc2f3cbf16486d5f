//! The device interrupt thread: waits for interrupt messages and hands each cause to the
//! handlers registered for it.
//!
//! Owns: the IRQ thread, the handler table, acknowledging the causes that have handlers.
//! Must not: do the handlers' work itself, or acknowledge causes nobody registered for
//! (RESET_DONE is awaited synchronously by `EngineControl::reset`, which reads the latched
//! status; acknowledging it here would make that wait miss it). Exec registers the USER
//! causes and CTX_ERROR; bind and SVM code register FAULT and TLB_INV_DONE the same way.

use crate::hw::{Interrupts, IrqCauses};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A handler; called on the IRQ thread with the causes of its registration that fired.
/// Handlers must not block for long: every other cause waits behind them.
pub type IrqHandler = Arc<dyn Fn(IrqCauses) + Send + Sync>;

/// How long the thread sleeps before re-checking its stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

struct Shared {
    irq: Arc<dyn Interrupts>,
    handlers: Mutex<Vec<(IrqCauses, IrqHandler)>>,
    stop: AtomicBool,
}

/// The interrupt dispatch thread.
pub struct IrqDispatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl IrqDispatcher {
    /// Starts the IRQ thread on `irq` with no handlers.
    pub fn start(irq: Arc<dyn Interrupts>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            irq,
            handlers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        // Messages from now on are dispatched, even if the thread starts late.
        let since = shared.irq.epoch();
        let thread = std::thread::Builder::new()
            .name("gpud-irq".into())
            .spawn(move || run(&s, since))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Calls `handler` whenever one of `causes` fires. Registration is permanent.
    pub fn register(&self, causes: IrqCauses, handler: IrqHandler) {
        self.shared.handlers.lock().push((causes, handler));
    }

    /// Like [`IrqDispatcher::register`], but where the platform can, `handler` runs right
    /// where the interrupt is delivered (no hand-off to the IRQ thread: one thread wake-up
    /// less per interrupt), after the causes are acknowledged. For handlers that only wake
    /// someone (`Interrupts::watch`); elsewhere it is an ordinary registration.
    pub fn watch(&self, causes: IrqCauses, handler: IrqHandler) {
        let irq = self.shared.irq.clone();
        let h = handler.clone();
        let watcher = Arc::new(move |fired: IrqCauses| {
            irq.ack(fired);
            h(fired);
        });
        if !self.shared.irq.watch(causes, watcher) {
            self.register(causes, handler);
        }
    }

    /// Stops and joins the thread (also done on drop).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // A handler that panicked already reported it; nothing more to do here.
            let _ = t.join();
        }
    }
}

impl Drop for IrqDispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, mut since: u64) {
    // Causes that fired while no handler was registered for them: reported to the first
    // handler registered for them later. A round collects every cause (not only those of
    // its handlers) before `since` moves past it: the handler table is read before the
    // wait, so a round woken by one cause could otherwise step over another cause whose
    // handler was registered during the wait, and that message was lost (the first
    // FAULT after start-up, raised before the fault worker's handler was seen, then
    // stalled its queue forever).
    let mut unhandled = IrqCauses::empty();
    while !shared.stop.load(Ordering::Acquire) {
        let handlers = shared.handlers.lock().clone();
        let mask = handlers
            .iter()
            .fold(IrqCauses::empty(), |acc, (c, _)| acc | *c);
        if mask.is_empty() {
            std::thread::sleep(STOP_POLL);
            continue;
        }
        if !unhandled.intersects(mask) && shared.irq.wait(since, mask, STOP_POLL).is_err() {
            continue;
        }
        // Take the epoch first, then collect every cause that fired since the last round:
        // a message arriving in between is either in this round's set or after `since`.
        let now = shared.irq.epoch();
        let all = shared
            .irq
            .wait(since, IrqCauses::all(), Duration::ZERO)
            .unwrap_or(IrqCauses::empty())
            | unhandled;
        since = now;
        unhandled = all - mask;
        let fired = all & mask;
        shared.irq.ack(fired);
        for (causes, handler) in &handlers {
            let mine = fired & *causes;
            if !mine.is_empty() {
                handler(mine);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::HwError;
    use parking_lot::Condvar;
    use std::sync::atomic::AtomicU64;

    /// A latch-like fake: `raise` records a cause at a new epoch.
    #[derive(Default)]
    struct FakeIrq {
        state: Mutex<(u64, Vec<(u64, IrqCauses)>)>,
        cond: Condvar,
        acked: AtomicU64,
    }

    impl FakeIrq {
        fn raise(&self, c: IrqCauses) {
            let mut s = self.state.lock();
            s.0 += 1;
            let e = s.0;
            s.1.push((e, c));
            self.cond.notify_all();
        }
    }

    impl Interrupts for FakeIrq {
        fn enable(&self, _: IrqCauses) {}
        fn epoch(&self) -> u64 {
            self.state.lock().0
        }
        fn wait(&self, since: u64, causes: IrqCauses, t: Duration) -> Result<IrqCauses, HwError> {
            let mut s = self.state.lock();
            loop {
                let fired =
                    s.1.iter()
                        .filter(|(e, _)| *e > since)
                        .fold(IrqCauses::empty(), |a, (_, c)| a | (*c & causes));
                if !fired.is_empty() {
                    return Ok(fired);
                }
                if self.cond.wait_for(&mut s, t).timed_out() {
                    return Err(HwError::Timeout {
                        what: "irq",
                        waited: t,
                    });
                }
            }
        }
        fn status(&self) -> IrqCauses {
            IrqCauses::empty()
        }
        fn ack(&self, c: IrqCauses) {
            self.acked.fetch_or(u64::from(c.bits()), Ordering::Relaxed);
        }
    }

    #[test]
    fn dispatch_calls_only_the_handlers_of_the_fired_cause_and_acks_only_those() {
        let irq = Arc::new(FakeIrq::default());
        let d = IrqDispatcher::start(irq.clone()).unwrap();
        let (user, fault) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let u = user.clone();
        d.register(
            IrqCauses::COPY_USER,
            Arc::new(move |_| {
                u.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let f = fault.clone();
        d.register(
            IrqCauses::FAULT,
            Arc::new(move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            }),
        );
        irq.raise(IrqCauses::COPY_USER);
        irq.raise(IrqCauses::RESET_DONE);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while user.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(d);
        assert!(user.load(Ordering::SeqCst) >= 1);
        assert_eq!(fault.load(Ordering::SeqCst), 0);
        let acked = IrqCauses::from_bits_truncate(irq.acked.load(Ordering::SeqCst) as u32);
        assert!(!acked.contains(IrqCauses::RESET_DONE));
        assert!(acked.contains(IrqCauses::COPY_USER));
    }

    fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A cause that fires before its handler is registered, while a round for another cause
    /// runs, still reaches that handler once it is registered. The device registers the
    /// fault worker after the dispatcher started: a FAULT raised in that window followed by
    /// a CTX_ERROR was stepped over, and the faulted queue waited forever for a reply.
    #[test]
    fn a_cause_fired_before_its_handler_is_registered_is_not_stepped_over() {
        let irq = Arc::new(FakeIrq::default());
        let d = IrqDispatcher::start(irq.clone()).unwrap();
        let (errors, faults) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let e = errors.clone();
        d.register(
            IrqCauses::CTX_ERROR,
            Arc::new(move |_| {
                e.fetch_add(1, Ordering::SeqCst);
            }),
        );
        irq.raise(IrqCauses::FAULT);
        irq.raise(IrqCauses::CTX_ERROR);
        // A round without a FAULT handler ran (and moved past both messages).
        until("the CTX_ERROR handler ran", || {
            errors.load(Ordering::SeqCst) > 0
        });
        let f = faults.clone();
        d.register(
            IrqCauses::FAULT,
            Arc::new(move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            }),
        );
        until(
            "the FAULT raised before its registration is dispatched",
            || faults.load(Ordering::SeqCst) > 0,
        );
        let acked = IrqCauses::from_bits_truncate(irq.acked.load(Ordering::SeqCst) as u32);
        assert!(acked.contains(IrqCauses::FAULT));
    }
}
