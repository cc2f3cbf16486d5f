//! gpud as the pager of client memory: the memory-manager seam ([`mm`]), its scripted fake
//! for tests ([`fake`]), and the per-client registration the bind engine looks up.
//!
//! Files: [`mm`] (the platform trait [`ClientMm`], events, pinned pages), [`client`] (a
//! client's registered address space and the fan-out of its events to its VMs), [`fake`]
//! (the scripted [`fake::FakeMm`]), [`range`] (SVM ranges and notifiers, drm_gpusvm's
//! data), `uffd.rs` (the Linux host implementation over
//! userfaultfd).
//! See `docs/svm.md`.
//!
//! Owns: the seam's vocabulary. Must not: know VMs or page tables (the notifier path that
//! turns events into zaps lives with the VM, in `bind`), or wire formats.

pub mod client;
pub mod fake;
pub mod mm;
pub mod range;
#[cfg(target_os = "linux")]
pub mod uffd;

pub use client::{ClientPager, MmTarget};
pub use mm::{
    ClientMm, CpuRange, MmCaps, MmError, MmEvent, MmListener, PinnedPages, Revoke, Supply,
};
