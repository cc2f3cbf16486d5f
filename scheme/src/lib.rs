//! The `gpu` scheme.
//!
//! Owns: the versioned uAPI request/reply types and their validating decoder (`uapi`), the
//! mapping of every error to errno (`errno`, the only place where that happens), the driver
//! trait gpud implements (`driver`), the `SchemeSync` server generic over it (`server`), a
//! fake driver for tests (`testing`), the dispatch of transport requests through
//! redox-scheme's own decoder (`dispatch`), and the Linux host transport (`host`).
//! `unsafe` is denied except in `dispatch` (SQE construction) and `host::shm` (mmap). `wake`
//! lets the threads that complete GPU work wake the request loop.

#![deny(unsafe_code)]

pub mod dispatch;
pub mod driver;
pub mod errno;
#[cfg(target_os = "linux")]
pub mod host;
pub mod server;
pub mod testing;
pub mod uapi;
pub mod wake;

pub use server::{GpuScheme, Limits};

/// The scheme name gpud registers.
pub const SCHEME_NAME: &str = "gpu";

/// The scheme crate's view of a request the kernel sends; re-exported so dependents use the
/// same redox-scheme version.
pub use redox_scheme::CallerCtx;
