//! `Device`: one client of the `gpu` scheme (a device handle), and what every object shares.
//!
//! Owns: opening the device over a transport, DEVICE_QUERY (`DeviceInfo`), the stats text, and
//! the one place where a typed request is encoded, sent and its reply read back (`request`).
//! Must not: know the semantics of objects (their modules) or wire layouts (`gpu_scheme::uapi`).
//!
//! A `Device` is a cheap clonable reference; every object keeps one, so the device handle stays
//! open while any object of it lives. Objects of one `Device` must not be used with another:
//! their ids mean nothing there (libgpu checks and reports `Call::Local` / `EINVAL`).

#[cfg(target_os = "linux")]
use std::path::Path;
use std::sync::Arc;

use gpu_scheme::uapi::flags::EngineClass;
use gpu_scheme::uapi::wire::DeviceQueryArgs;
use gpu_scheme::uapi::{encode, read_args, Opcode, Request};
use zerocopy::FromBytes;

use crate::error::{Call, Context, Error, Result, TransportError};
use crate::transport::Handle;

/// What DEVICE_QUERY reports: engines, memory regions, VA space and the client's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Bits of GPU VA: a VM spans `[0, 2^va_bits)`.
    pub va_bits: u32,
    /// Bit `1 << class` per engine class present.
    pub engine_mask: u32,
    /// Bit `1 << log2(size)` per supported page size.
    pub page_sizes: u64,
    /// System memory: total bytes.
    pub sys_size: u64,
    /// System memory: free bytes.
    pub sys_free: u64,
    /// VRAM: total bytes (0: no VRAM).
    pub vram_size: u64,
    /// VRAM: free bytes.
    pub vram_free: u64,
    /// Start of the VA range no bind may touch.
    pub reserved_va_start: u64,
    /// Length of that range.
    pub reserved_va_len: u64,
    /// Valid `pat_index` values are `0..pat_entries`.
    pub pat_entries: u32,
    /// Per-client object limit.
    pub max_objects: u32,
    /// Per-client VRAM bytes.
    pub limit_vram: u64,
    /// Per-client system-memory bytes.
    pub limit_sys: u64,
    /// Per-client CPU mappings.
    pub max_mappings: u32,
    /// Per-client binds + jobs in flight.
    pub max_in_flight: u32,
}

impl DeviceInfo {
    fn from_wire(a: &DeviceQueryArgs) -> Self {
        DeviceInfo {
            va_bits: a.va_bits,
            engine_mask: a.engine_mask,
            page_sizes: a.page_sizes,
            sys_size: a.sys_size,
            sys_free: a.sys_free,
            vram_size: a.vram_size,
            vram_free: a.vram_free,
            reserved_va_start: a.reserved_va_start,
            reserved_va_len: a.reserved_va_len,
            pat_entries: a.pat_entries,
            max_objects: a.max_objects,
            limit_vram: a.limit_vram,
            limit_sys: a.limit_sys,
            max_mappings: a.max_mappings,
            max_in_flight: a.max_in_flight,
        }
    }

    /// Whether the device has an engine of `class`.
    pub fn has_engine(&self, class: EngineClass) -> bool {
        1u32.checked_shl(u32::from(class as u16))
            .is_some_and(|bit| self.engine_mask & bit != 0)
    }

    /// One past the highest GPU VA (`2^va_bits`, saturating).
    pub fn va_end(&self) -> u64 {
        1u64.checked_shl(self.va_bits).unwrap_or(u64::MAX)
    }
}

pub(crate) struct DeviceInner {
    pub(crate) handle: Box<dyn Handle>,
    /// This process's userfaultfd as handed to the device (created at the first userptr
    /// registration; see `userptr`).
    #[cfg(target_os = "linux")]
    pub(crate) mm: std::sync::Mutex<Option<crate::userptr::ClientMm>>,
}

/// An open device: one client of the scheme with its own id namespaces.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("fd", &self.inner.handle.as_fd())
            .finish()
    }
}

impl Device {
    /// Open card `card` (e.g. `"card0"`) of the platform's gpu scheme: on Redox
    /// `/scheme/gpu/<card>`; elsewhere the host transport at `gpu_scheme::host::
    /// default_socket_path()` (`$GPUD_SOCKET`, else `$XDG_RUNTIME_DIR/gpud.sock`).
    #[cfg(target_os = "linux")]
    pub fn open(card: &str) -> Result<Device> {
        Self::open_card_at(&gpu_scheme::host::default_socket_path(), card)
    }

    /// Open card `card` of the gpu scheme (`/scheme/gpu/<card>`).
    #[cfg(all(feature = "redox", not(target_os = "linux")))]
    pub fn open(card: &str) -> Result<Device> {
        Self::open_redox(&format!("/scheme/gpu/{card}"))
    }

    /// Open `card0` of the host transport listening at `socket`.
    #[cfg(target_os = "linux")]
    pub fn open_at(socket: &Path) -> Result<Device> {
        Self::open_card_at(socket, "card0")
    }

    /// Open `card` of the host transport listening at `socket`.
    #[cfg(target_os = "linux")]
    pub fn open_card_at(socket: &Path, card: &str) -> Result<Device> {
        let handle = crate::transport::host::open_at(socket, card).map_err(|(connecting, e)| {
            let call = if connecting {
                Call::Connect
            } else {
                Call::Open
            };
            Error::new(call, e)
        })?;
        Ok(Self::from_handle(handle))
    }

    /// Open a device handle by its Redox path (e.g. `/scheme/gpu/card0`).
    #[cfg(feature = "redox")]
    pub fn open_redox(path: &str) -> Result<Device> {
        let handle = crate::transport::redox::open(path).during(Call::Open)?;
        Ok(Self::from_handle(handle))
    }

    /// A device over any transport's device handle.
    pub fn from_handle(handle: Box<dyn Handle>) -> Device {
        Device {
            inner: Arc::new(DeviceInner {
                handle,
                #[cfg(target_os = "linux")]
                mm: std::sync::Mutex::new(None),
            }),
        }
    }

    /// DEVICE_QUERY: engines, memory regions (with current free bytes), VA bits, limits.
    pub fn query(&self) -> Result<DeviceInfo> {
        let args: DeviceQueryArgs = self.request(&Request::DeviceQuery)?;
        Ok(DeviceInfo::from_wire(&args))
    }

    /// The device handle's stats (`key: value` lines, DRM fdinfo style; `docs/uapi.md`).
    pub fn stats(&self) -> Result<String> {
        read_text(self.inner.handle.as_ref())
    }

    /// The device handle (for transport-level use, e.g. its fd).
    pub fn handle(&self) -> &dyn Handle {
        self.inner.handle.as_ref()
    }

    /// Whether two values refer to the same device handle.
    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Encode `req`, send it on the device handle, and read the args struct back.
    pub(crate) fn request<T: FromBytes>(&self, req: &Request) -> Result<T> {
        call_on(self.inner.handle.as_ref(), req)
    }

    /// Encode `req` and send it on the device handle; the reply carries no out fields.
    pub(crate) fn send(&self, req: &Request) -> Result<()> {
        send_on(self.inner.handle.as_ref(), req).map(|_| ())
    }

    /// `dup` of a derived handle (`"bo/<id>"`, `"syncobj/<id>"`).
    pub(crate) fn dup(&self, path: &str) -> Result<Box<dyn Handle>> {
        self.inner.handle.dup(path).during(Call::Dup)
    }
}

/// Encode `req`, send it on `handle`, and read the args struct (with its out fields) back.
pub(crate) fn call_on<T: FromBytes>(handle: &dyn Handle, req: &Request) -> Result<T> {
    let (call, payload) = send_on(handle, req)?;
    read_args::<T>(&payload).ok_or(Error::new(call, TransportError::BadReply))
}

/// Encode `req` and send it on `handle`; returns the call and the payload as rewritten.
fn send_on(handle: &dyn Handle, req: &Request) -> Result<(Call, Vec<u8>)> {
    let (op, mut payload) = encode(req);
    let call = Opcode::from_raw(op).map_or(Call::Local, Call::Op);
    handle.call(&mut payload, [op, 0, 0]).during(call)?;
    Ok((call, payload))
}

/// Read a handle's whole stats text.
pub(crate) fn read_text(handle: &dyn Handle) -> Result<String> {
    let mut buf = vec![0u8; 16 << 10];
    let n = handle.read(&mut buf, 0).during(Call::Read)?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl Device {
    /// IMPORT a BO exported by another client or process (`Bo::import`).
    pub fn import_bo(&self, token: gpu_scheme::uapi::Token) -> Result<crate::Bo> {
        crate::Bo::import(self, token)
    }

    /// IMPORT a syncobj exported by another client or process (`Syncobj::import`).
    pub fn import_syncobj(&self, token: gpu_scheme::uapi::Token) -> Result<crate::Syncobj> {
        crate::Syncobj::import(self, token)
    }
}
