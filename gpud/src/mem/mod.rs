//! Memory: buffer objects, the VRAM allocator, system memory, placement and eviction.
//!
//! Files: [`vram`] (the buddy allocator), [`copy`] (the copy-engine seam and the kernel
//! context's linear map), [`bo`] (buffer objects: placement, backing, pinning, CPU access),
//! [`pools`] (the memories backings come from, each backing's own shared-memory object),
//! [`manager`] (allocation with eviction, validation), [`mappings`] (the seam to every GPU mapping
//! of a BO, zapped before its memory moves), [`shm`] (the host's shared-memory
//! windows and per-backing memfds), [`window`] (where gpud's own address space shows system
//! memory and VRAM), [`svm`] (VRAM for SVM ranges and the seam through which VRAM pressure evicts them), [`cpu_map`] (in-process CPU mappings of BOs through that window, each
//! pinning its BO until unmapped: Redox `mmap_prep` / `munmap`). See `docs/memory.md`.

pub mod bo;
pub mod copy;
pub mod cpu_map;
pub mod manager;
pub mod mappings;
pub mod pools;
#[allow(unsafe_code)] // mmap of the shared-memory windows and word-atomic access to them
pub mod shm;
pub mod svm;
pub mod vram;
pub mod window;

#[cfg(test)]
mod cpu_map_tests;
#[cfg(test)]
mod evict_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod tests;
