//! libc symbol interposition: the functions a program (or libdrm) calls to open, stat, map and
//! ioctl `/dev/dri/card0` / `/dev/dri/renderD128`, answered for the device fds this library
//! hands out and passed to the real libc (`dlsym(RTLD_NEXT, ..)`) for everything else.
//!
//! Owns: every `unsafe` of the crate — the exported `extern "C"` symbols, raw pointers of the
//! caller, `errno`, and the calling process's memory (`RealProcess`, through
//! `process_vm_readv`/`writev`, so a bad pointer is `EFAULT`, never a crash) — and the table
//! of open device fds. Must not: translate ioctls (that is `drm.rs` / `xe.rs`).
//!
//! A device fd is a memfd placeholder: a real descriptor (so numbers never collide, `dup` and
//! `close` work, `poll` does not fail), standing for one gpud client (`XeDevice`), which dups
//! of the fd share. The table lock is never held while calling out: entries are cloned
//! (`Arc`) out of it and dropped after it is released, because dropping a device closes fds,
//! which comes back through `close` here.
//!
//! Variadic prototypes (`open`, `openat`, `ioctl`) are declared with their optional argument
//! as a fixed one: on x86-64 (System V) a variadic argument travels in the same register as a
//! fixed one, and reading it when the caller passed none reads an unspecified value that is
//! then ignored (`mode` without O_CREAT), as libc itself does.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use libc::{mode_t, off_t, size_t, ssize_t};

use crate::device::{errno, Errno, Node, Process, XeDevice, DRM_MAJOR, MMAP_OFFSET_SHIFT};

/// Open device fds → the device they stand for.
static DEVICES: Mutex<BTreeMap<c_int, Arc<XeDevice>>> = Mutex::new(BTreeMap::new());
/// Number of entries in `DEVICES`: with none, every hook goes straight to libc.
static OPEN: AtomicUsize = AtomicUsize::new(0);

fn device(fd: c_int) -> Option<Arc<XeDevice>> {
    if OPEN.load(Ordering::Acquire) == 0 {
        return None;
    }
    let map = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&fd).cloned()
}

fn insert(fd: c_int, dev: Arc<XeDevice>) {
    let old = {
        let mut map = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.insert(fd, dev);
        OPEN.store(map.len(), Ordering::Release);
        old
    };
    drop(old);
}

fn remove(fd: c_int) {
    if OPEN.load(Ordering::Acquire) == 0 {
        return;
    }
    let old = {
        let mut map = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.remove(&fd);
        OPEN.store(map.len(), Ordering::Release);
        old
    };
    drop(old);
}

fn set_errno(e: Errno) {
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Resolves a libc symbol once, through `dlsym(RTLD_NEXT, ..)`, and caches it.
macro_rules! real {
    ($name:literal: $ty:ty) => {{
        static PTR: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
        let mut p = PTR.load(Ordering::Relaxed);
        if p.is_null() {
            // SAFETY: a NUL-terminated symbol name; RTLD_NEXT is a valid pseudo-handle.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) };
            PTR.store(p, Ordering::Relaxed);
        }
        if p.is_null() {
            None
        } else {
            // SAFETY: the symbol is libc's function of that name, whose C prototype `$ty`
            // spells.
            Some(unsafe { std::mem::transmute::<*mut c_void, $ty>(p) })
        }
    }};
}

/// The node a C path names, if it is one this library presents.
fn node_of(path: *const c_char) -> Option<Node> {
    if path.is_null() {
        return None;
    }
    // SAFETY: libc's contract for these calls: `path` is a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    Node::for_path(bytes)
}

/// Opens a device node: a gpud client behind a placeholder fd.
fn open_node(node: Node, flags: c_int) -> c_int {
    let dev = match XeDevice::open(node) {
        Ok(d) => d,
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    let mut mfd = rustix::fs::MemfdFlags::empty();
    if flags & libc::O_CLOEXEC != 0 {
        mfd |= rustix::fs::MemfdFlags::CLOEXEC;
    }
    match rustix::fs::memfd_create(node.path(), mfd) {
        Ok(fd) => {
            let fd = fd.into_raw_fd();
            insert(fd, Arc::new(dev));
            fd
        }
        Err(e) => {
            set_errno(e.raw_os_error());
            -1
        }
    }
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, mode_t) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, mode_t) -> c_int;

/// `open(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(node) = node_of(path) {
        return open_node(node, flags);
    }
    match real!("open": OpenFn) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(path, flags, mode) },
        None => enosys(),
    }
}

/// `open64(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(node) = node_of(path) {
        return open_node(node, flags);
    }
    match real!("open64": OpenFn) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(path, flags, mode) },
        None => enosys(),
    }
}

/// `openat(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    if let Some(node) = node_of(path) {
        return open_node(node, flags);
    }
    match real!("openat": OpenatFn) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(dirfd, path, flags, mode) },
        None => enosys(),
    }
}

/// `openat64(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    if let Some(node) = node_of(path) {
        return open_node(node, flags);
    }
    match real!("openat64": OpenatFn) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(dirfd, path, flags, mode) },
        None => enosys(),
    }
}

fn enosys() -> c_int {
    set_errno(libc::ENOSYS);
    -1
}

/// The `stat` of a device node: a character device 226:minor, read-write for all.
fn fill_stat(node: Node, buf: *mut libc::stat) -> c_int {
    if buf.is_null() {
        set_errno(errno::EFAULT);
        return -1;
    }
    // SAFETY: every field of `stat` is an integer, so all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFCHR | 0o666;
    st.st_rdev = libc::makedev(DRM_MAJOR, node.minor());
    st.st_dev = libc::makedev(0, 5);
    st.st_ino = 0x6770_7564_0000 + u64::from(node.minor());
    st.st_nlink = 1;
    st.st_blksize = 4096;
    // SAFETY: libc's contract: `buf` points to a writable `struct stat` (= `stat64` on x86-64).
    unsafe { buf.write(st) };
    0
}

type StatFn = unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int;
type FstatFn = unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int;
type FstatatFn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
type XstatFn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat) -> c_int;
type FxstatFn = unsafe extern "C" fn(c_int, c_int, *mut libc::stat) -> c_int;
type FxstatatFn =
    unsafe extern "C" fn(c_int, c_int, *const c_char, *mut libc::stat, c_int) -> c_int;

macro_rules! stat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("`", $sym, "(2)`.")]
        ///
        /// # Safety
        /// libc's contract: `path` is a NUL-terminated string, `buf` a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, buf: *mut libc::stat) -> c_int {
            if let Some(node) = node_of(path) {
                return fill_stat(node, buf);
            }
            match real!($sym: StatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(path, buf) },
                None => enosys(),
            }
        }
    )*};
}

stat_hooks! {
    stat = "stat";
    stat64 = "stat64";
    lstat = "lstat";
    lstat64 = "lstat64";
}

macro_rules! fstat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("`", $sym, "(2)`.")]
        ///
        /// # Safety
        /// libc's contract: `buf` is a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut libc::stat) -> c_int {
            if let Some(dev) = device(fd) {
                return fill_stat(dev.node, buf);
            }
            match real!($sym: FstatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(fd, buf) },
                None => enosys(),
            }
        }
    )*};
}

fstat_hooks! {
    fstat = "fstat";
    fstat64 = "fstat64";
}

/// The node `fstatat(dirfd, path, flags)` names, if any.
fn node_at(dirfd: c_int, path: *const c_char, flags: c_int) -> Option<Node> {
    if let Some(node) = node_of(path) {
        return Some(node);
    }
    if flags & libc::AT_EMPTY_PATH == 0 || path.is_null() {
        return None;
    }
    // SAFETY: libc's contract: `path` is a NUL-terminated string.
    let empty = unsafe { *path } == 0;
    if empty {
        device(dirfd).map(|d| d.node)
    } else {
        None
    }
}

macro_rules! fstatat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("`", $sym, "(2)`.")]
        ///
        /// # Safety
        /// libc's contract: `path` is a NUL-terminated string, `buf` a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            buf: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            if let Some(node) = node_at(dirfd, path, flags) {
                return fill_stat(node, buf);
            }
            match real!($sym: FstatatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(dirfd, path, buf, flags) },
                None => enosys(),
            }
        }
    )*};
}

fstatat_hooks! {
    fstatat = "fstatat";
    fstatat64 = "fstatat64";
}

macro_rules! xstat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("glibc's `", $sym, "` (the stat entry point of binaries built before 2.33).")]
        ///
        /// # Safety
        /// libc's contract: `path` is a NUL-terminated string, `buf` a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
            if let Some(node) = node_of(path) {
                return fill_stat(node, buf);
            }
            match real!($sym: XstatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(ver, path, buf) },
                None => enosys(),
            }
        }
    )*};
}

xstat_hooks! {
    __xstat = "__xstat";
    __xstat64 = "__xstat64";
    __lxstat = "__lxstat";
    __lxstat64 = "__lxstat64";
}

macro_rules! fxstat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("glibc's `", $sym, "`.")]
        ///
        /// # Safety
        /// libc's contract: `buf` is a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
            if let Some(dev) = device(fd) {
                return fill_stat(dev.node, buf);
            }
            match real!($sym: FxstatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(ver, fd, buf) },
                None => enosys(),
            }
        }
    )*};
}

fxstat_hooks! {
    __fxstat = "__fxstat";
    __fxstat64 = "__fxstat64";
}

macro_rules! fxstatat_hooks {
    ($($name:ident = $sym:literal;)*) => {$(
        #[doc = concat!("glibc's `", $sym, "`.")]
        ///
        /// # Safety
        /// libc's contract: `path` is a NUL-terminated string, `buf` a writable `struct stat`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            dirfd: c_int,
            path: *const c_char,
            buf: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            if let Some(node) = node_at(dirfd, path, flags) {
                return fill_stat(node, buf);
            }
            match real!($sym: FxstatatFn) {
                // SAFETY: the caller's arguments, passed on unchanged.
                Some(f) => unsafe { f(ver, dirfd, path, buf, flags) },
                None => enosys(),
            }
        }
    )*};
}

fxstatat_hooks! {
    __fxstatat = "__fxstatat";
    __fxstatat64 = "__fxstatat64";
}

/// `access(2)`: the nodes exist and are readable and writable.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    if node_of(path).is_some() {
        return 0;
    }
    match real!("access": unsafe extern "C" fn(*const c_char, c_int) -> c_int) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(path, mode) },
        None => enosys(),
    }
}

/// `faccessat(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    if node_of(path).is_some() {
        return 0;
    }
    type F = unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int;
    match real!("faccessat": F) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(dirfd, path, mode, flags) },
        None => enosys(),
    }
}

/// The device fd `/proc/self/fd/N` (or `/proc/<our pid>/fd/N`) names, if any.
fn proc_fd_node(path: *const c_char) -> Option<Node> {
    if path.is_null() || OPEN.load(Ordering::Acquire) == 0 {
        return None;
    }
    // SAFETY: libc's contract: `path` is a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(path) }.to_str().ok()?;
    let rest = s.strip_prefix("/proc/")?;
    let (who, fd) = rest.split_once("/fd/")?;
    if who != "self" && who != std::process::id().to_string() {
        return None;
    }
    device(fd.parse().ok()?).map(|d| d.node)
}

fn fill_link(node: Node, buf: *mut c_char, size: size_t) -> ssize_t {
    let target = node.path().as_bytes();
    let n = target.len().min(size);
    if buf.is_null() && n > 0 {
        set_errno(errno::EFAULT);
        return -1;
    }
    // SAFETY: libc's contract: `buf` has room for `size` bytes; `n` ≤ size; no NUL is added,
    // as readlink adds none.
    unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast(), n) };
    n as ssize_t
}

/// `readlink(2)`: `/proc/self/fd/N` of a device fd reads as its node's path.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string, `buf` has room for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    if let Some(node) = proc_fd_node(path) {
        return fill_link(node, buf, size);
    }
    type F = unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t;
    match real!("readlink": F) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(path, buf, size) },
        None => enosys() as ssize_t,
    }
}

/// `readlinkat(2)`.
///
/// # Safety
/// libc's contract: `path` is a NUL-terminated string, `buf` has room for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: size_t,
) -> ssize_t {
    if let Some(node) = proc_fd_node(path) {
        return fill_link(node, buf, size);
    }
    type F = unsafe extern "C" fn(c_int, *const c_char, *mut c_char, size_t) -> ssize_t;
    match real!("readlinkat": F) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(dirfd, path, buf, size) },
        None => enosys() as ssize_t,
    }
}

/// `close(2)`: a device fd's last close ends its gpud client.
///
/// # Safety
/// None beyond libc's.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    remove(fd);
    match real!("close": unsafe extern "C" fn(c_int) -> c_int) {
        // SAFETY: the caller's argument, passed on unchanged.
        Some(f) => unsafe { f(fd) },
        None => enosys(),
    }
}

/// `dup(2)`: a dup of a device fd is the same device.
///
/// # Safety
/// None beyond libc's.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let Some(f) = real!("dup": unsafe extern "C" fn(c_int) -> c_int) else {
        return enosys();
    };
    // SAFETY: the caller's argument, passed on unchanged.
    let new = unsafe { f(fd) };
    if new >= 0 {
        if let Some(dev) = device(fd) {
            insert(new, dev);
        }
    }
    new
}

/// `dup2(2)`.
///
/// # Safety
/// None beyond libc's.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let Some(f) = real!("dup2": unsafe extern "C" fn(c_int, c_int) -> c_int) else {
        return enosys();
    };
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { f(old, new) };
    if r >= 0 && old != new {
        remove(new);
        if let Some(dev) = device(old) {
            insert(new, dev);
        }
    }
    r
}

/// `dup3(2)`.
///
/// # Safety
/// None beyond libc's.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let Some(f) = real!("dup3": unsafe extern "C" fn(c_int, c_int, c_int) -> c_int) else {
        return enosys();
    };
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { f(old, new, flags) };
    if r >= 0 {
        remove(new);
        if let Some(dev) = device(old) {
            insert(new, dev);
        }
    }
    r
}

type MmapFn = unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void;

/// mmap of a device fd: the offset GEM_MMAP_OFFSET gave names a BO; its memfd is mapped.
fn mmap_device(
    dev: &XeDevice,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    off: off_t,
    real: MmapFn,
) -> *mut c_void {
    let fail = |e: Errno| {
        set_errno(e);
        libc::MAP_FAILED
    };
    // GEM mappings are shared (DRM refuses private ones).
    if flags & libc::MAP_SHARED == 0 || off < 0 {
        return fail(errno::EINVAL);
    }
    let off = off as u64;
    let handle = (off >> MMAP_OFFSET_SHIFT) as u32;
    let within = off & ((1 << MMAP_OFFSET_SHIFT) - 1);
    let (memfd, file_off) = match dev.bo_memory(handle, within, len as u64) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let Ok(file_off) = off_t::try_from(file_off) else {
        return fail(errno::EINVAL);
    };
    let raw = memfd.into_raw_fd();
    // SAFETY: the caller's address, length, protection and flags, on a memfd we own; the
    // mapping keeps the memory alive after the fd closes.
    let p = unsafe { real(addr, len, prot, flags, raw, file_off) };
    // SAFETY: `raw` came from `into_raw_fd` above and is closed exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
    p
}

/// `mmap(2)`.
///
/// # Safety
/// libc's contract for mmap.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let Some(real) = real!("mmap": MmapFn) else {
        set_errno(libc::ENOSYS);
        return libc::MAP_FAILED;
    };
    if let Some(dev) = device(fd) {
        return mmap_device(&dev, addr, len, prot, flags, off, real);
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(addr, len, prot, flags, fd, off) }
}

/// `mmap64(2)`.
///
/// # Safety
/// libc's contract for mmap.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let Some(real) = real!("mmap64": MmapFn) else {
        set_errno(libc::ENOSYS);
        return libc::MAP_FAILED;
    };
    if let Some(dev) = device(fd) {
        return mmap_device(&dev, addr, len, prot, flags, off, real);
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(addr, len, prot, flags, fd, off) }
}

/// `ioctl(2)`: on a device fd, the DRM / Xe translation.
///
/// # Safety
/// libc's contract: `arg` is what `request` expects.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    if let Some(dev) = device(fd) {
        return match crate::drm::ioctl(&dev, &RealProcess, request, arg as u64) {
            Ok(r) => r,
            Err(e) => {
                set_errno(e);
                -1
            }
        };
    }
    match real!("ioctl": unsafe extern "C" fn(c_int, c_ulong, *mut c_void) -> c_int) {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(fd, request, arg) },
        None => enosys(),
    }
}

/// This process: its memory through `process_vm_readv`/`writev` on itself.
struct RealProcess;

impl Process for RealProcess {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        if out.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut c_void,
            iov_len: out.len(),
        };
        // SAFETY: `local` is our own buffer of that length; the kernel checks `remote` and
        // answers EFAULT for memory the process does not have.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == out.len() as isize {
            Ok(())
        } else {
            Err(errno::EFAULT)
        }
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut c_void,
            iov_len: data.len(),
        };
        // SAFETY: the kernel only reads `local` (our buffer) and checks `remote`, answering
        // EFAULT for memory the process cannot write.
        let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == data.len() as isize {
            Ok(())
        } else {
            Err(errno::EFAULT)
        }
    }

    fn adopt_userptr(&self, dev: &libgpu::Device, addr: u64, len: u64) -> Result<(), Errno> {
        // SAFETY: the program asked for this range to be bound by address (MAP_USERPTR),
        // Xe's contract for memory the GPU shares with the process; the range is moved onto
        // shared memory at the same address with its contents (docs/xe-compat.md says what
        // that changes: fork does not inherit it).
        unsafe { dev.userptr_adopt(addr, len) }.map_err(|e| e.errno())
    }

    fn monotonic_ns(&self) -> i64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        t.tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec)
    }

    fn dup_fd(&self, fd: i32) -> Result<OwnedFd, Errno> {
        // SAFETY: F_DUPFD_CLOEXEC on any integer is safe; the kernel answers EBADF for one
        // that is not an open descriptor.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(errno::EBADF));
        }
        // SAFETY: `new` is a descriptor just created for us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }
}
