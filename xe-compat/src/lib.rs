//! gpu-xe-compat: an `LD_PRELOAD` library (`libgpu_xe_compat.so`) that presents gpud as a
#![deny(unsafe_code)]
//! Linux Xe DRM device, so that programs built against `drm/xe_drm.h` and libdrm run on gpud
//! unmodified.
//!
//! Owns: the libc hooks (`hooks`: open/stat/readlink/close/dup/mmap/ioctl of
//! `/dev/dri/card0` and `/dev/dri/renderD128`), the DRM/Xe layouts (`uapi`), and the
//! translation of each ioctl into one request of the gpu scheme (`drm`, `xe`), sent over
//! libgpu's host transport (`device`). Must not: implement GPU semantics — what Xe does and
//! gpud does not is an honest errno here and a row in `docs/xe-compat.md`, fixed in gpud.
//!
//! ```sh
//! GPUD_SOCKET=./gpud.sock LD_PRELOAD=target/debug/libgpu_xe_compat.so ./xe_program
//! ```

pub mod device;
pub mod drm;
#[allow(unsafe_code)]
mod hooks;
pub mod uapi;
pub mod xe;
