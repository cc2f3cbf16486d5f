//! CPU memory for the userptr and SVM tests: fresh anonymous mappings of the test process.
//!
//! Owns: the `mmap`/`munmap` calls those tests share. Must not: touch memory the test did
//! not map through these functions.

use rustix::mm::{MapFlags, ProtFlags};

const PAGE: u64 = 4096;

/// `len` bytes of fresh private anonymous memory (the test unmaps it or leaves it to exit).
pub fn anon(len: u64) -> u64 {
    anon_aligned(len, PAGE)
}

/// `len` bytes of fresh private anonymous memory aligned to `align` (a power of two ≥ 4 KiB;
/// the rest of a larger mapping is unmapped again).
pub fn anon_aligned(len: u64, align: u64) -> u64 {
    let span = len + align - PAGE;
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a fresh mapping at an address the kernel picks; nothing else refers to it.
    let p = unsafe {
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), span as usize, prot, MapFlags::PRIVATE)
    }
    .expect("mmap") as u64;
    let start = (p + align - 1) & !(align - 1);
    if start > p {
        unmap(p, start - p);
    }
    if p + span > start + len {
        unmap(start + len, p + span - start - len);
    }
    start
}

/// Unmaps `[addr, addr + len)`.
pub fn unmap(addr: u64, len: u64) {
    // SAFETY: test memory mapped by this process for the test, referenced by nothing else.
    unsafe { rustix::mm::munmap(addr as *mut _, len as usize) }.expect("munmap");
}
