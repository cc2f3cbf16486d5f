//! Memory: buffer objects, the VRAM allocator, system memory, placement and eviction.
//!
//! Today: the VRAM buddy allocator ([`vram`]). Buffer objects, system-memory pools and
//! eviction arrive with the memory issue.

pub mod vram;
