//! gpud: a user-mode GPU driver service.
//!
//! The daemon owns a GPU through OS capabilities and serves the `gpu` scheme. This crate is
//! its driver core; the binary in `main.rs` only picks a platform and runs it.
//!
//! Module map (see `docs/architecture.md`):
//! - [`types`]: newtype addresses and ids shared by every module.
//! - [`demo`]: the `gpud demo` command (the driver doing real work on simgpu).
//! - [`hw`]: the hardware abstraction and the simgpu backend; the only module that knows
//!   register and PTE layouts.
//! - [`sync`]: fences, fence chains, syncobjs, reservation objects, multi-object locking,
//!   user fences, the lock-order checker.
//! - [`vm`]: the GPU VA-space manager (split/merge planner, vm_bo bookkeeping).
//! - [`exec`]: exec queues, jobs, the scheduler, hang recovery, the kernel copy queue.
//! - [`mem`]: buffer objects, VRAM buddy allocator, system-memory pool, LRU eviction and
//!   validation through the copy engine, the kernel linear map.
//! - [`bind`]: the VM object and the VM_BIND engine; [`device`]: the driver core object.
//! - [`svm`]: gpud as the pager of client memory (the memory-manager seam, its fake).
//! - [`config`]: the daemon's settings (command line and settings file); [`logging`]: where
//!   its `tracing` output goes and how it is filtered.
//! - [`platform`]: the host daemon (`gpud serve`) and the Redox pcid launch (startup, event
//!   loop, syscall seams).

// `unsafe` is allowed only in the modules meant for it (platform syscalls, shared-memory
// mapping, test transmutes), each with `#[allow(unsafe_code)]` at its declaration.
#![deny(unsafe_code)]

pub mod bind;
pub mod config;
pub mod demo;
pub mod device;
pub mod driver;
pub mod exec;
pub mod hw;
pub mod logging;
pub mod mem;
pub mod platform;
pub mod svm;
pub mod sync;
pub mod types;
pub mod vm;
