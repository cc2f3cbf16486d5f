//! Exec tests at the driver API level, on simgpu in thread mode with a fake clock (so no
//! timeout fires unless a test moves the clock).

mod basic;
mod busy;
mod hang;
mod harness;
mod intel;
mod lr;
mod oracle;
mod sched;
mod stress;
mod vm_hook;
