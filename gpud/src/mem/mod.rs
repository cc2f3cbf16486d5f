//! Memory: buffer objects, the VRAM allocator, system memory, placement and eviction.
//!
//! Files: [`vram`] (the buddy allocator), [`copy`] (the copy-engine seam and the kernel
//! context's linear map), [`bo`] (buffer objects: placement, backing, pinning, CPU access),
//! [`manager`] (allocation with eviction, validation), [`shm`] (the host's shared-memory
//! system pool). See `docs/memory.md`.

pub mod bo;
pub mod copy;
pub mod manager;
#[allow(unsafe_code)] // mmap of the shared-memory pool and word-atomic access to it
pub mod shm;
pub mod vram;

#[cfg(test)]
mod evict_tests;
#[cfg(test)]
mod tests;
