//! Connects the `gpu` scheme server to the Redox event loop.
//!
//! Owns: the [`DeviceEvents`] implementation for `gpu_scheme::GpuScheme`: IRQs go to the
//! driver, readiness changes of syncobj handles become fevents, cancelled parked waits are
//! forgotten by the server, the event queue's wake source becomes the server's wake hook (so
//! a fence callback wakes the loop and only the parked requests it concerns are retried),
//! and the earliest parked deadline arms the loop's timer. Must not: hold state of its own
//! beyond the IRQ hook; the server is the source of truth.

use std::time::Duration;

use gpu_scheme::driver::GpuDriver;
use gpu_scheme::server::GpuScheme;
use redox_scheme::Id;
use syscall::flag::EventFlags;

use super::event_loop::{DeviceEvents, IrqOutcome};

/// The event-loop hooks of a `GpuScheme<D>`; `irq` services the device on an interrupt.
pub struct SchemeEvents<F> {
    irq: F,
    parked_poll: Option<Duration>,
}

impl<F> SchemeEvents<F> {
    /// Hooks whose IRQ handler is `irq`.
    pub fn new(irq: F) -> Self {
        Self {
            irq,
            parked_poll: None,
        }
    }

    /// While a parked request has nothing that can wake it (the driver could not watch what
    /// it waits for, e.g. a WAIT_FOR_SUBMIT point with no fence yet), wakes the loop at least
    /// every `every` to retry it. Requests whose fences are watched are woken by the wake
    /// source instead and never polled.
    pub fn with_parked_poll(mut self, every: Duration) -> Self {
        self.parked_poll = Some(every);
        self
    }
}

impl<D, F> DeviceEvents<GpuScheme<D>> for SchemeEvents<F>
where
    D: GpuDriver,
    F: FnMut(&D) -> IrqOutcome,
{
    fn handle_irq(&mut self, scheme: &mut GpuScheme<D>) -> IrqOutcome {
        (self.irq)(scheme.driver())
    }

    fn take_fevents(&mut self, scheme: &mut GpuScheme<D>, out: &mut Vec<(usize, EventFlags)>) {
        out.extend(scheme.ready_events());
    }

    fn on_cancel(&mut self, scheme: &mut GpuScheme<D>, request: Id) {
        scheme.cancel(request);
    }

    fn next_deadline(&mut self, scheme: &mut GpuScheme<D>) -> Option<Duration> {
        let deadline = scheme.next_deadline_ns().map(|deadline| {
            let now = scheme.driver().now_ns();
            Duration::from_nanos(deadline.saturating_sub(now))
        });
        let poll = self.parked_poll.filter(|_| scheme.has_polled());
        match (deadline, poll) {
            (Some(d), Some(poll)) => Some(d.min(poll)),
            (d, poll) => d.or(poll),
        }
    }

    fn install_waker(&mut self, scheme: &mut GpuScheme<D>, hook: gpu_scheme::wake::WakeHook) {
        scheme.set_wake_hook(hook);
    }

    fn collect_wakeups(&mut self, scheme: &mut GpuScheme<D>) {
        scheme.collect_wakeups();
    }

    fn is_due(&mut self, scheme: &mut GpuScheme<D>, request: Id) -> bool {
        scheme.is_due(None, request)
    }
}

#[cfg(test)]
#[path = "scheme_events_tests.rs"]
mod tests;
