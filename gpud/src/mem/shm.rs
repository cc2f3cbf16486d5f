//! The host's shared-memory windows: one address window per memory (system memory, VRAM)
//! mapped into the daemon, which the simulated device reaches by DMA, and the per-object
//! memfds that BO backings are made of, so a client that maps a BO reaches that BO only.
//!
//! Owns: [`ShmPool`] (the window: the pool's own memfd mapped shared, word-atomic access to it
//! as simgpu's [`PhysMemory`]), [`ShmObject`] (one backing's own memfd, sized exactly to the
//! backing, mapped `MAP_FIXED|MAP_SHARED` over its place(s) in the window — or, for userptr, a
//! *foreign* memfd a client handed over, bound with [`ShmPool::bind_foreign`]) and
//! [`MapBudget`] (how many such places the process may have). This is the one module of `mem` with
//! `unsafe`: the mappings and the atomic views of their words.
//! Must not: hand out Rust references or slices to the mapped bytes (the device and clients
//! write them concurrently, so every access is an atomic load or store), or hand out the pool's
//! own memfd: it holds page tables and every other driver-internal allocation.
//!
//! INVARIANT (isolation): every byte of a window is backed either by the pool's memfd (never
//! exported) or by exactly one live [`ShmObject`]'s memfd, at file offset = offset within the
//! object (plus the client's file offset, for a foreign object: the pages are the client's
//! own, which only that client's VMs map). Unbinding re-covers the range with the pool's memfd *before* the range can be
//! allocated again, so a client still holding an old object's mapping keeps that object's
//! (stale, private) pages and never sees memory reused for someone else.
//!
//! Redox gets its memory from the memory scheme instead; that backend implements the same
//! [`PhysMemory`] seam and its own per-BO grants.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::ftruncate;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use simgpu::{MemError, PhysMemory};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Page granularity of windows and objects (the host page size the daemon requires).
pub const SHM_PAGE: u64 = 4096;
/// Linux's default `vm.max_map_count`, used when the system value cannot be read.
const DEFAULT_MAX_MAP_COUNT: u64 = 65530;
/// Mappings left for everything else in the daemon (threads' stacks, libraries, heap).
const MAP_COUNT_RESERVE: u64 = 8192;

/// The pool could not be created.
#[derive(Debug, Error)]
pub enum ShmError {
    /// Zero or unaligned size.
    #[error("invalid pool size {size:#x}")]
    Size { size: u64 },
    /// The system refused memfd_create, ftruncate or mmap.
    #[error("{what} failed: {source}")]
    Os {
        what: &'static str,
        source: rustix::io::Errno,
    },
}

/// An object could not be bound into a window (an ENOMEM-class failure for the client).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShareError {
    /// Binding `pieces` more places would pass the process's mapping budget.
    #[error("{used} window pieces bound, {pieces} more would pass the limit of {limit}")]
    Limit { used: u64, pieces: u64, limit: u64 },
    /// A piece outside the window, unaligned, or no piece at all.
    #[error("piece {addr:#x}+{len:#x} is empty, unaligned or outside the window of {size:#x}")]
    Range { addr: u64, len: u64, size: u64 },
    /// The system refused a call (memfd_create, ftruncate, fcntl, mmap).
    #[error("{what} failed: {errno}")]
    Os {
        what: &'static str,
        errno: rustix::io::Errno,
    },
    /// A foreign descriptor the daemon may not map: not a sealable memfd, not sealed against
    /// shrinking (its holder could cut pages from under the window: SIGBUS in the daemon),
    /// or shorter than the range.
    #[error("foreign memory refused: {0}")]
    Foreign(&'static str),
}

/// A failed bind. `range_lost` is set when even restoring the pool's memory over the pieces
/// failed: the range is then in an unknown state and must never be allocated again.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{error}{}", if *.range_lost { " (range lost)" } else { "" })]
pub struct BindFailure {
    /// Why.
    pub error: ShareError,
    /// Whether the pieces could not be restored.
    pub range_lost: bool,
}

fn os(what: &'static str) -> impl Fn(rustix::io::Errno) -> ShareError {
    move |errno| ShareError::Os { what, errno }
}

/// One place of an object in a window: `[addr, addr + len)` of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Window offset (page aligned).
    pub addr: u64,
    /// Bytes (page multiple, non-zero).
    pub len: u64,
}

/// How many object pieces the process may have bound at once, over all its windows.
///
/// Each piece costs the daemon at most two kernel mappings (the piece, and the split of the
/// pool mapping it sits in), so the default is `(vm.max_map_count - 8192) / 2`: 28,669
/// pieces with Linux's default of 65,530.
#[derive(Debug)]
pub struct MapBudget {
    used: AtomicU64,
    limit: u64,
}

impl MapBudget {
    /// A budget of `limit` pieces.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit,
        })
    }

    /// The budget the system's `vm.max_map_count` allows (see the type's docs).
    pub fn from_system() -> Arc<Self> {
        let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_MAP_COUNT);
        Self::new(max.saturating_sub(MAP_COUNT_RESERVE) / 2)
    }

    /// Pieces bound now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn take(&self, pieces: u64) -> Result<(), ShareError> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(pieces).filter(|n| *n <= limit)
            })
            .map(drop)
            .map_err(|used| ShareError::Limit {
                used,
                pieces,
                limit,
            })
    }

    fn give(&self, pieces: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(pieces))
            });
    }
}

/// A memfd-backed physical-memory window.
pub struct ShmPool {
    /// The pool's own memory: covers every page no object is bound over. Never exported.
    fd: OwnedFd,
    base: *mut c_void,
    size: u64,
    budget: Arc<MapBudget>,
}

// SAFETY: the mapping is shared memory reached only through atomics; the raw pointer is
// just its address, valid until Drop, and never used to form references.
unsafe impl Send for ShmPool {}
// SAFETY: as above; concurrent atomic accesses from any thread are sound.
unsafe impl Sync for ShmPool {}

impl ShmPool {
    /// A zero-filled window of `size` bytes (a multiple of 4 KiB) with the system's mapping
    /// budget.
    pub fn new(name: &str, size: u64) -> Result<Self, ShmError> {
        Self::with_budget(name, size, MapBudget::from_system())
    }

    /// As [`ShmPool::new`], drawing object pieces from `budget` (shared by a process's
    /// windows).
    pub fn with_budget(name: &str, size: u64, budget: Arc<MapBudget>) -> Result<Self, ShmError> {
        let len = usize::try_from(size).map_err(|_| ShmError::Size { size })?;
        if size == 0 || size % SHM_PAGE != 0 {
            return Err(ShmError::Size { size });
        }
        let os = |what| move |source| ShmError::Os { what, source };
        let fd = memfd::create(name, false).map_err(os("memfd_create"))?;
        ftruncate(&fd, size).map_err(os("ftruncate"))?;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh shared mapping of our own memfd at an address the kernel picks;
        // it aliases no Rust object, and is unmapped exactly once in Drop.
        let base = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, &fd, 0) }
            .map_err(os("mmap"))?;
        Ok(Self {
            fd,
            base,
            size,
            budget,
        })
    }

    /// The mapping budget the window draws from.
    pub fn budget(&self) -> &Arc<MapBudget> {
        &self.budget
    }

    /// Binds a new object over `pieces`: one memfd of their total size (zero-filled, sealed
    /// against resizing so no holder can make the daemon's accesses fault), mapped piecewise
    /// at file offset = offset within the object. The caller owns the pieces (freshly
    /// allocated, no user yet) and must unbind before allocating them again.
    pub fn bind(self: &Arc<Self>, pieces: &[Piece]) -> Result<ShmObject, BindFailure> {
        let clean = |error| BindFailure {
            error,
            range_lost: false,
        };
        let size = self.check_pieces(pieces).map_err(clean)?;
        self.budget.take(pieces.len() as u64).map_err(clean)?;
        let fd = match new_object_fd(size) {
            Ok(fd) => fd,
            Err(e) => {
                self.budget.give(pieces.len() as u64);
                return Err(clean(e));
            }
        };
        self.bind_fd(pieces, fd, 0, size)
    }

    /// Binds a client's memfd over `pieces`, from file offset `offset` (userptr: the GPU then
    /// reaches the very page-cache pages the client maps). The memfd must be sealed against
    /// shrinking and cover `offset` + the pieces' total; the object keeps its own descriptor
    /// of it. Unbinding re-covers the pieces with the pool's memory, as for any object.
    pub fn bind_foreign(
        self: &Arc<Self>,
        pieces: &[Piece],
        fd: BorrowedFd<'_>,
        offset: u64,
    ) -> Result<ShmObject, BindFailure> {
        let clean = |error| BindFailure {
            error,
            range_lost: false,
        };
        let size = self.check_pieces(pieces).map_err(clean)?;
        if offset % SHM_PAGE != 0 {
            return Err(clean(ShareError::Foreign("unaligned file offset")));
        }
        check_foreign(fd, offset, size).map_err(clean)?;
        let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|e| clean(os("fcntl(F_DUPFD_CLOEXEC)")(e)))?;
        self.budget.take(pieces.len() as u64).map_err(clean)?;
        self.bind_fd(pieces, fd, offset, size)
    }

    /// Maps `fd` from file offset `first` over `pieces` (checked, budget taken); on failure
    /// the pieces mapped so far are re-covered and the budget given back.
    fn bind_fd(
        self: &Arc<Self>,
        pieces: &[Piece],
        fd: OwnedFd,
        first: u64,
        size: u64,
    ) -> Result<ShmObject, BindFailure> {
        let mut offset = first;
        for (i, p) in pieces.iter().enumerate() {
            if let Err(error) = self.map_over(p, &fd, offset) {
                let range_lost = self.cover(pieces.get(..i).unwrap_or_default()).is_err();
                if !range_lost {
                    self.budget.give(pieces.len() as u64);
                }
                return Err(BindFailure { error, range_lost });
            }
            offset += p.len;
        }
        for p in pieces {
            // The pool's pages under the object are unused until unbind: give them back
            // (they read as zero when the pool covers the range again). Only a saving.
            memfd::punch_hole(&self.fd, p.addr, p.len);
        }
        Ok(ShmObject {
            fd,
            size,
            pieces: pieces.to_vec(),
            pool: self.clone(),
            bound: true,
        })
    }

    /// Total size of `pieces` after checking each lies page-aligned inside the window.
    fn check_pieces(&self, pieces: &[Piece]) -> Result<u64, ShareError> {
        let mut total = 0u64;
        let bad = |p: &Piece| ShareError::Range {
            addr: p.addr,
            len: p.len,
            size: self.size,
        };
        for p in pieces {
            let end = p.addr.checked_add(p.len).ok_or_else(|| bad(p))?;
            if p.len == 0 || p.addr % SHM_PAGE != 0 || p.len % SHM_PAGE != 0 || end > self.size {
                return Err(bad(p));
            }
            total = total.checked_add(p.len).ok_or_else(|| bad(p))?;
        }
        if total == 0 {
            return Err(ShareError::Range {
                addr: 0,
                len: 0,
                size: self.size,
            });
        }
        Ok(total)
    }

    /// Maps `fd` at file offset `offset` over piece `p` of the window.
    fn map_over(&self, p: &Piece, fd: &OwnedFd, offset: u64) -> Result<(), ShareError> {
        // PANIC-free: the piece was checked inside the window, whose size fits in usize.
        let (at, len) = (p.addr as usize, p.len as usize);
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let flags = MapFlags::SHARED | MapFlags::FIXED;
        // SAFETY: the target lies inside our own window mapping (checked by `check_pieces`),
        // which no Rust reference points into: every access is atomic through raw pointers.
        // MAP_FIXED swaps the pages atomically, so the window is never unmapped; the caller
        // guarantees the piece has no user, so nobody observes the swap.
        unsafe {
            let addr = self.base.cast::<u8>().add(at).cast::<c_void>();
            mmap(addr, len, prot, flags, fd, offset)
        }
        .map(drop)
        .map_err(os("mmap"))
    }

    /// Restores the pool's own memory over `pieces`; tries every piece, reports the first
    /// failure.
    fn cover(&self, pieces: &[Piece]) -> Result<(), ShareError> {
        let mut first = Ok(());
        for p in pieces {
            if let Err(e) = self.map_over(p, &self.fd, p.addr) {
                first = first.and(Err(e));
            }
        }
        first
    }

    fn check(&self, addr: u64, len: u64, align: u64) -> Result<usize, MemError> {
        if addr.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(MemError::OutOfRange {
                addr,
                len,
                size: self.size,
            });
        }
        if align > 1 && addr % align != 0 {
            return Err(MemError::Misaligned { addr, align });
        }
        // PANIC-free: addr < size, and size fitted in usize at creation.
        Ok(addr as usize)
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        // SAFETY: `off` was bounds-checked against the live mapping; AtomicU8 has alignment
        // 1 and every access to the mapping is atomic, so this view races with nothing.
        unsafe { AtomicU8::from_ptr(self.base.cast::<u8>().add(off)) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: bounds- and 4-alignment-checked offset into the page-aligned mapping;
        // all accesses to the mapping are atomic.
        unsafe { AtomicU32::from_ptr(self.base.cast::<u8>().add(off).cast::<u32>()) }
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: bounds- and 8-alignment-checked offset into the page-aligned mapping;
        // all accesses to the mapping are atomic.
        unsafe { AtomicU64::from_ptr(self.base.cast::<u8>().add(off).cast::<u64>()) }
    }
}

/// Whether a client's `fd` may be mapped into a window for `[offset, offset + len)`: a
/// memfd (it has seals) sealed against shrinking, at least that long.
pub(crate) fn check_foreign(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), ShareError> {
    let sealed =
        memfd::shrink_sealed(fd).map_err(|_| ShareError::Foreign("not a sealable memfd"))?;
    if !sealed {
        return Err(ShareError::Foreign("memfd not sealed against shrinking"));
    }
    let size = rustix::fs::fstat(fd).map_err(os("fstat"))?.st_size;
    let end = offset
        .checked_add(len)
        .ok_or(ShareError::Foreign("range overflows"))?;
    if u64::try_from(size).map_or(true, |size| size < end) {
        return Err(ShareError::Foreign("memfd shorter than the range"));
    }
    Ok(())
}

/// A zero-filled memfd of `size` bytes, sealed so nobody can resize it: a holder that
/// shrank it would make the daemon's window accesses fault (SIGBUS).
fn new_object_fd(size: u64) -> Result<OwnedFd, ShareError> {
    let fd = memfd::create("gpud-bo", true).map_err(os("memfd_create"))?;
    ftruncate(&fd, size).map_err(os("ftruncate"))?;
    memfd::seal_size(&fd).map_err(os("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// The Linux-only calls of the host pool: memfds, their seals and hole punching.
#[cfg(target_os = "linux")]
mod memfd {
    use rustix::fd::{BorrowedFd, OwnedFd};
    use rustix::fs::{
        fallocate, fcntl_add_seals, memfd_create, FallocateFlags, MemfdFlags, SealFlags,
    };
    use rustix::io::Errno;

    /// A new close-on-exec memfd; `sealable` allows [`seal_size`] on it.
    pub(super) fn create(name: &str, sealable: bool) -> Result<OwnedFd, Errno> {
        let mut flags = MemfdFlags::CLOEXEC;
        if sealable {
            flags |= MemfdFlags::ALLOW_SEALING;
        }
        memfd_create(name, flags)
    }

    /// Seals the size (no shrink, no grow) and the seals themselves.
    pub(super) fn seal_size(fd: &OwnedFd) -> Result<(), Errno> {
        fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
    }

    /// Whether `fd` is sealed against shrinking (`EINVAL` for a file that is not a sealable
    /// memfd or shmem file).
    pub(super) fn shrink_sealed(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
        rustix::fs::fcntl_get_seals(fd).map(|s| s.contains(SealFlags::SHRINK))
    }

    /// Gives the pages of `[offset, offset + len)` back; they read as zero afterwards. Only a
    /// saving: a refusal changes nothing else.
    pub(super) fn punch_hole(fd: &OwnedFd, offset: u64, len: u64) {
        let fd: BorrowedFd<'_> = rustix::fd::AsFd::as_fd(fd);
        let _ = fallocate(
            fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
    }
}

/// Elsewhere (Redox) there are no memfds: the host pool is never built there (the driver's
/// system memory is the memory scheme's DMA pool), and these calls fail with `ENOSYS`.
#[cfg(not(target_os = "linux"))]
mod memfd {
    use rustix::fd::OwnedFd;
    use rustix::io::Errno;

    pub(super) fn create(_name: &str, _sealable: bool) -> Result<OwnedFd, Errno> {
        Err(Errno::NOSYS)
    }

    pub(super) fn seal_size(_fd: &OwnedFd) -> Result<(), Errno> {
        Err(Errno::NOSYS)
    }

    pub(super) fn shrink_sealed(_fd: rustix::fd::BorrowedFd<'_>) -> Result<bool, Errno> {
        Err(Errno::NOSYS)
    }

    pub(super) fn punch_hole(_fd: &OwnedFd, _offset: u64, _len: u64) {}
}

/// One backing's own memory: a memfd mapped over its pieces of a window. Dropping it (or
/// [`ShmObject::unbind`]) restores the pool's memory over the pieces; mappings that clients
/// made of the memfd keep its pages.
pub struct ShmObject {
    fd: OwnedFd,
    size: u64,
    pieces: Vec<Piece>,
    pool: Arc<ShmPool>,
    bound: bool,
}

impl std::fmt::Debug for ShmObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmObject")
            .field("size", &self.size)
            .field("pieces", &self.pieces)
            .finish()
    }
}

impl ShmObject {
    /// The memfd (offset 0 is the object's first byte; its size is exactly the object's).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The window pieces, in object order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Restores the pool's memory over the pieces. On failure the pieces are in an unknown
    /// state: the caller must never allocate them again.
    pub fn unbind(mut self) -> Result<(), ShareError> {
        self.bound = false;
        self.release()
    }

    fn release(&mut self) -> Result<(), ShareError> {
        let res = self.pool.cover(&self.pieces);
        if res.is_ok() {
            self.pool.budget.give(self.pieces.len() as u64);
        }
        res
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        if self.bound {
            let _ = self.release();
        }
    }
}

impl PhysMemory for ShmPool {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.check(addr, buf.len() as u64, 1)?;
        let mut i = 0;
        while i < buf.len() {
            let at = off + i;
            if let (0, Some(dst)) = (at % 8, buf.get_mut(i..i + 8)) {
                dst.copy_from_slice(&self.word64(at).load(Ordering::Acquire).to_le_bytes());
                i += 8;
            } else {
                if let Some(b) = buf.get_mut(i) {
                    *b = self.byte(at).load(Ordering::Acquire);
                }
                i += 1;
            }
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let off = self.check(addr, data.len() as u64, 1)?;
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            if let (0, Some(w)) = (at % 8, data.get(i..i + 8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                self.word64(at)
                    .store(u64::from_le_bytes(b), Ordering::Release);
                i += 8;
            } else {
                if let Some(&b) = data.get(i) {
                    self.byte(at).store(b, Ordering::Release);
                }
                i += 1;
            }
        }
        Ok(())
    }

    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self.word32(off).load(Ordering::Acquire))
    }

    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        let off = self.check(addr, 4, 4)?;
        self.word32(off).store(value, Ordering::Release);
        Ok(())
    }

    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self.word64(off).load(Ordering::Acquire))
    }

    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        let off = self.check(addr, 8, 8)?;
        self.word64(off).store(value, Ordering::Release);
        Ok(())
    }

    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self.word32(off).fetch_add(value, Ordering::AcqRel))
    }

    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self.word64(off).fetch_add(value, Ordering::AcqRel))
    }

    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self
            .word32(off)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }

    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self
            .word64(off)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }
}

impl Drop for ShmPool {
    fn drop(&mut self) {
        // PANIC-free: the size fitted in usize when the mapping was created.
        let len = self.size as usize;
        // SAFETY: the window created in `new`, unmapped once (objects' pieces inside it go
        // with it; every object holds the pool, so none is left); no reference into it exists.
        let _ = unsafe { munmap(self.base, len) };
    }
}

#[cfg(test)]
#[path = "shm_tests.rs"]
mod tests;
