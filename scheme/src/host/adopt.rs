//! The client side of userptr on the host: moving a range of this process's memory onto a
//! memfd at the same address, so that gpud, given the memfd, reaches the very pages the
//! process uses (a private anonymous page of another process cannot be shared).
//!
//! Owns: [`adopt`] (copy into a new sealed memfd, map it `MAP_SHARED|MAP_FIXED` over the range,
//! exclude it from fork). One of the host transport's `unsafe` modules. Must not: register
//! anything with gpud (libgpu does, with the memfd this returns).
//!
//! Consequences for the process (documented in `docs/libgpu.md`): the range becomes shared
//! memory readable and writable, and `MADV_DONTFORK`: a child created by `fork` does not
//! inherit it (as RDMA-registered memory), since a shared mapping would let parent and child
//! see each other's writes, which private memory never does.

#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{madvise, mmap, Advice, MapFlags, ProtFlags};

/// Page size the host transport requires.
pub const PAGE: u64 = 4096;

/// Moves `[start, start + len)` (page aligned, non-zero) of this process onto a new memfd at
/// the same address, contents preserved; returns the memfd (size `len`, sealed against
/// resizing, file offset 0 = `start`). `EINVAL` for an unaligned or empty range, `EFAULT`
/// when part of it is not readable memory (nothing is changed then).
///
/// # Safety
///
/// The range must be memory of this process that no other thread reads or writes for the
/// duration of the call (a write between the copy and the remap would be lost), and that
/// is private memory the caller owns: its previous mapping is replaced.
pub unsafe fn adopt(start: u64, len: u64) -> Result<OwnedFd, Errno> {
    if len == 0 || start % PAGE != 0 || len % PAGE != 0 || start.checked_add(len).is_none() {
        return Err(Errno::INVAL);
    }
    let size = usize::try_from(len).map_err(|_| Errno::INVAL)?;
    let fd = memfd_create(
        "gpu-userptr",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    ftruncate(&fd, len)?;
    // Copy through write(2): the kernel reads the range, so memory that is not mapped or
    // not readable fails with EFAULT instead of faulting this process.
    let mut done = 0usize;
    while done < size {
        let at = start as usize + done;
        // SAFETY: only the address is formed here; the kernel reads it (checking it), and the
        // caller guarantees nobody writes the range meanwhile.
        let chunk = unsafe { std::slice::from_raw_parts(at as *const u8, size - done) };
        match rustix::io::pwrite(&fd, chunk, done as u64) {
            Ok(0) => return Err(Errno::FAULT),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    let addr = start as usize as *mut std::ffi::c_void;
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: the caller owns the range and nobody accesses it during the call; MAP_FIXED
    // replaces its pages in one step with the memfd's, which hold the same bytes.
    unsafe { mmap(addr, size, prot, MapFlags::SHARED | MapFlags::FIXED, &fd, 0) }?;
    // SAFETY: advice on the mapping just made; it changes only what a fork inherits.
    unsafe { madvise(addr, size, Advice::LinuxDontFork) }?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn contents_survive_and_the_memfd_is_the_memory() {
        let len = 3 * PAGE as usize;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh private mapping, used only by this test, unmapped at the end.
        let p = unsafe { mmap_anonymous(len, prot) };
        let bytes = p.cast::<u8>();
        for i in 0..len {
            // SAFETY: inside the mapping just made.
            unsafe { bytes.add(i).write_volatile((i % 251) as u8) };
        }
        // SAFETY: this test's own mapping, no other thread.
        let fd = unsafe { adopt(p as u64, len as u64) }.expect("adopt");
        for i in 0..len {
            // SAFETY: still mapped (now the memfd).
            assert_eq!(unsafe { bytes.add(i).read_volatile() }, (i % 251) as u8);
        }
        // SAFETY: as above.
        unsafe { bytes.add(PAGE as usize).write_volatile(0xab) };
        let mut b = [0u8; 1];
        rustix::io::pread(fd.as_fd(), &mut b, PAGE).expect("pread");
        assert_eq!(b[0], 0xab, "the memfd is the memory the process uses");
        assert_eq!(
            ftruncate(&fd, 0),
            Err(Errno::PERM),
            "sealed against shrinking"
        );
        // SAFETY: this test's mapping.
        unsafe { rustix::mm::munmap(p, len) }.expect("munmap");
    }

    #[test]
    fn refuses_unaligned_and_unmapped() {
        // SAFETY: refused before touching anything.
        assert_eq!(unsafe { adopt(0x1001, PAGE) }.err(), Some(Errno::INVAL));
        // SAFETY: as above.
        assert_eq!(unsafe { adopt(0x1000, 0) }.err(), Some(Errno::INVAL));
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh mapping, unmapped at once: the range is then not mapped.
        let p = unsafe { mmap_anonymous(PAGE as usize, prot) };
        // SAFETY: as above.
        unsafe { rustix::mm::munmap(p, PAGE as usize) }.expect("munmap");
        // SAFETY: nothing is mapped there: the copy fails before any remap.
        assert_eq!(unsafe { adopt(p as u64, PAGE) }.err(), Some(Errno::FAULT));
    }

    /// # Safety
    /// Returns a fresh mapping the caller must unmap.
    unsafe fn mmap_anonymous(len: usize, prot: ProtFlags) -> *mut std::ffi::c_void {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, MapFlags::PRIVATE) }
            .expect("mmap")
    }
}
