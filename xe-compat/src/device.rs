//! One open Xe device node: a gpud client (a libgpu `Device`) and the little state the
//! translation needs beyond gpud's ids.
//!
//! Owns: the gpud connection of one `open("/dev/dri/card0")`, the device's DEVICE_QUERY
//! answer, the BO memory fds handed out for `mmap`, the ranges of this process made
//! GPU-visible for MAP_USERPTR, and the one place where a typed request goes to gpud and its
//! errno comes back (`call`). Must not: translate Xe structs (that is `xe.rs` / `drm.rs`) or
//! touch raw memory (that is `hooks.rs`, through the `Process` trait).
//!
//! Xe's handles are gpud's ids, one to one: GEM handles are BO ids, syncobj handles syncobj
//! ids, VM and exec-queue ids the same numbers (all are per client in both, never 0).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use gpu_scheme::host::HostHandle;
use gpu_scheme::uapi::{encode, read_args, Request};
use libgpu::transport::Handle;
use libgpu::{Device, DeviceInfo, TransportError};
use zerocopy::{FromBytes, IntoBytes};

/// A Linux errno (positive).
pub type Errno = i32;

/// What the translation needs from the calling process: its memory, reached safely (a bad
/// pointer is `EFAULT`, never a crash), and moving a range of it onto shared memory for
/// MAP_USERPTR. `hooks.rs` implements it for the real process; tests implement it over a
/// buffer.
pub trait Process {
    /// Copy `out.len()` bytes from the caller's address `addr`.
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno>;
    /// Copy `data` to the caller's address `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno>;
    /// Make `[addr, addr + len)` of this process GPU-visible (`Device::userptr_adopt`).
    fn adopt_userptr(&self, dev: &Device, addr: u64, len: u64) -> Result<(), Errno>;
    /// CLOCK_MONOTONIC now, nanoseconds.
    fn monotonic_ns(&self) -> i64;
    /// A new descriptor (close-on-exec) for the caller's fd `fd` (`EBADF` if it has none).
    fn dup_fd(&self, fd: i32) -> Result<OwnedFd, Errno>;
}

/// Read a `T` from the caller's memory.
pub fn read_struct<T: FromBytes + IntoBytes>(p: &dyn Process, addr: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    p.read(addr, v.as_mut_bytes())?;
    Ok(v)
}

/// Read `n` values of `T` from the caller's memory (`n` already bounded by the caller).
pub fn read_array<T: FromBytes + IntoBytes + Clone>(
    p: &dyn Process,
    addr: u64,
    n: usize,
) -> Result<Vec<T>, Errno> {
    let mut v = vec![T::new_zeroed(); n];
    p.read(addr, v.as_mut_slice().as_mut_bytes())?;
    Ok(v)
}

/// Linux errno values used by the translation (the same numbers as Redox's, which gpud
/// answers with).
pub mod errno {
    pub use libc::{
        EBADF, EBUSY, EFAULT, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ENOTTY, EOPNOTSUPP, EPERM, ETIME,
    };
}

/// Which node was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// `/dev/dri/card0` (minor 0).
    Card,
    /// `/dev/dri/renderD128` (minor 128).
    Render,
}

impl Node {
    /// The node for a path this library presents, if it is one.
    pub fn for_path(path: &[u8]) -> Option<Node> {
        match path {
            b"/dev/dri/card0" => Some(Node::Card),
            b"/dev/dri/renderD128" => Some(Node::Render),
            _ => None,
        }
    }

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Node::Card => "/dev/dri/card0",
            Node::Render => "/dev/dri/renderD128",
        }
    }

    /// The DRM minor (the major is 226).
    pub fn minor(self) -> u32 {
        match self {
            Node::Card => 0,
            Node::Render => 128,
        }
    }
}

/// Major number of DRM character devices.
pub const DRM_MAJOR: u32 = 226;

/// Bytes of fake mmap offset space per GEM handle: GEM_MMAP_OFFSET answers `handle << 36`.
pub const MMAP_OFFSET_SHIFT: u32 = 36;

/// A BO's memory as handed out for mmap: its memfd and the file offset of the BO's byte 0.
struct BoMemory {
    fd: OwnedFd,
    base: u64,
    size: u64,
}

/// One open device node.
pub struct XeDevice {
    /// The gpud client.
    pub dev: Device,
    /// DEVICE_QUERY at open time (sizes and limits; free bytes are asked again when queried).
    pub info: DeviceInfo,
    /// Which node.
    pub node: Node,
    /// BO memory fds obtained for mmap, by GEM handle (one MMAP exchange per BO).
    bo_memory: Mutex<HashMap<u32, BoMemory>>,
    /// Ranges `[start, end)` of this process already made GPU-visible.
    userptr_ranges: Mutex<Vec<(u64, u64)>>,
}

/// The errno of a transport answer.
pub fn transport_errno(e: &TransportError) -> Errno {
    match e {
        TransportError::Scheme(e) | TransportError::Os(e) => *e,
        TransportError::BadReply => errno::EIO,
        TransportError::Unsupported => errno::EOPNOTSUPP,
    }
}

impl XeDevice {
    /// Connect to gpud (`$GPUD_SOCKET`, as libgpu finds it) and open its card0.
    pub fn open(node: Node) -> Result<XeDevice, Errno> {
        let dev = Device::open("card0").map_err(|e| transport_errno(&e.source))?;
        let info = dev.query().map_err(|e| transport_errno(&e.source))?;
        Ok(XeDevice {
            dev,
            info,
            node,
            bo_memory: Mutex::new(HashMap::new()),
            userptr_ranges: Mutex::new(Vec::new()),
        })
    }

    /// Send `req` to gpud and read the args struct back.
    pub fn call<T: FromBytes>(&self, req: &Request) -> Result<T, Errno> {
        call_on(self.dev.handle(), req)
    }

    /// Send `req` to gpud; the reply carries nothing needed.
    pub fn send(&self, req: &Request) -> Result<(), Errno> {
        let (op, mut payload) = encode(req);
        self.dev
            .handle()
            .call(&mut payload, [op, 0, 0])
            .map(drop)
            .map_err(|e| transport_errno(&e))
    }

    /// A derived handle (`"bo/<id>"`, `"syncobj/<id>"`).
    pub fn dup(&self, path: &str) -> Result<Box<dyn Handle>, Errno> {
        self.dev.handle().dup(path).map_err(|e| transport_errno(&e))
    }

    /// The memfd and file offset backing `[offset, offset + len)` of BO `handle`, for mmap.
    pub fn bo_memory(&self, handle: u32, offset: u64, len: u64) -> Result<(OwnedFd, u64), Errno> {
        let mut map = self.bo_memory.lock().unwrap_or_else(|e| e.into_inner());
        let mem = match map.entry(handle) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(self.fetch_bo_memory(handle)?),
        };
        let end = offset.checked_add(len).ok_or(errno::EINVAL)?;
        if len == 0 || end > mem.size {
            return Err(errno::EINVAL);
        }
        let fd = mem
            .fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.raw_os_error().unwrap_or(errno::EIO))?;
        Ok((fd, mem.base + offset))
    }

    /// One MMAP exchange for BO `handle`: gpud hands out the BO's own memfd.
    fn fetch_bo_memory(&self, handle: u32) -> Result<BoMemory, Errno> {
        let bo = self.dup(&format!("bo/{handle}"))?;
        let fd = bo.clone_fd().map_err(|e| transport_errno(&e))?;
        let host = HostHandle::from_fd(fd);
        let (fd, base) = host
            .mmap_fd(0, 4096)
            .map_err(|e| e.errno().unwrap_or(errno::EIO))?;
        let file_size = rustix::fs::fstat(&fd)
            .map_err(|e| e.raw_os_error())?
            .st_size;
        let size = u64::try_from(file_size).unwrap_or(0).saturating_sub(base);
        Ok(BoMemory { fd, base, size })
    }

    /// Forget BO `handle`'s memory fd (GEM_CLOSE); existing CPU mappings keep their pages.
    pub fn forget_bo(&self, handle: u32) {
        let removed = {
            let mut map = self.bo_memory.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&handle)
        };
        drop(removed);
    }

    /// Make `[addr, addr + len)` GPU-visible unless a range made so earlier covers it.
    pub fn ensure_userptr(&self, p: &dyn Process, addr: u64, len: u64) -> Result<(), Errno> {
        let end = addr.checked_add(len).ok_or(errno::EINVAL)?;
        let mut ranges = self
            .userptr_ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ranges.iter().any(|&(s, e)| s <= addr && end <= e) {
            return Ok(());
        }
        p.adopt_userptr(&self.dev, addr, len)?;
        ranges.push((addr, end));
        Ok(())
    }
}

/// Send `req` on `handle` and read the args struct back.
pub fn call_on<T: FromBytes>(handle: &dyn Handle, req: &Request) -> Result<T, Errno> {
    let (op, mut payload) = encode(req);
    handle
        .call(&mut payload, [op, 0, 0])
        .map_err(|e| transport_errno(&e))?;
    read_args::<T>(&payload).ok_or(errno::EIO)
}
