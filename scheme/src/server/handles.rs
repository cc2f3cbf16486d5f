//! Scheme handles (file descriptions) and the path grammar.
//!
//! Owns: what a handle number refers to (root, device/client, derived BO or syncobj handle),
//! and parsing of `openat` / `dup` paths. Must not: create driver objects.
//!
//! Grammar: `openat(root, "card0")` → device handle (one new client). On a device handle,
//! `dup(handle, "bo/<id>")` and `dup(handle, "syncobj/<id>")` (decimal ids of the client's
//! namespace) → derived handles, usable for `mmap` (BO), `fevent` (syncobj), and export.

use syscall::flag::EventFlags;

use crate::driver::{ClientId, GpuDriver};
use crate::errno::SchemeError;
use crate::uapi::flags::ObjectKind;
use crate::uapi::Token;

/// The one device this scheme serves (multi-GPU would add `card1`…).
pub const DEVICE_PATH: &str = "card0";

/// What a handle number refers to.
pub(crate) enum Handle<D: GpuDriver> {
    /// The scheme root (only `openat` is valid on it; `read` gives device-wide stats).
    Root,
    /// A device handle: one client.
    Device { client: ClientId, pid: usize },
    /// A derived BO handle.
    Bo(Derived<D::Bo>),
    /// A derived syncobj handle.
    Syncobj(Derived<D::Syncobj>),
}

/// A derived handle: a capability for one object, independent of the client's id table.
pub(crate) struct Derived<T> {
    /// The object.
    pub object: T,
    /// The client that derived it (its charges and mapping counts).
    pub client: ClientId,
    /// The memory charge this handle keeps alive, if any.
    pub charge: Option<super::client::ChargeRef>,
    /// The export token; valid while this handle is open.
    pub token: Token,
    /// Size (BOs), for mmap range checks.
    pub size: u64,
    /// CPU mappings made through this handle and not yet unmapped.
    pub mappings: u64,
    /// Events the client subscribed to (syncobj handles).
    pub subscribed: EventFlags,
    /// Whether readiness was already reported (edge-triggered `post_fevent`).
    pub reported: bool,
}

impl<D: GpuDriver> Handle<D> {
    /// Name of the kind, for errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Handle::Root => "root",
            Handle::Device { .. } => "device",
            Handle::Bo(_) => "BO",
            Handle::Syncobj(_) => "syncobj",
        }
    }
}

/// A parsed `dup` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerivedPath {
    pub kind: ObjectKind,
    pub id: u32,
}

/// Parse `bo/<id>` or `syncobj/<id>`; the id is a decimal u32 without sign or leading zeros.
pub(crate) fn parse_derived(buf: &[u8]) -> Result<DerivedPath, SchemeError> {
    let bad = || SchemeError::BadPath(String::from_utf8_lossy(buf).into_owned());
    let path = std::str::from_utf8(buf).map_err(|_| bad())?;
    let (kind, id) = path.split_once('/').ok_or_else(bad)?;
    let kind = match kind {
        "bo" => ObjectKind::Bo,
        "syncobj" => ObjectKind::Syncobj,
        _ => return Err(bad()),
    };
    let canonical =
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
    if !canonical {
        return Err(bad());
    }
    let id = id.parse::<u32>().map_err(|_| bad())?;
    Ok(DerivedPath { kind, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_paths() {
        assert_eq!(
            parse_derived(b"bo/12").ok(),
            Some(DerivedPath {
                kind: ObjectKind::Bo,
                id: 12
            })
        );
        assert_eq!(
            parse_derived(b"syncobj/1").ok(),
            Some(DerivedPath {
                kind: ObjectKind::Syncobj,
                id: 1
            })
        );
        for bad in [
            &b"bo/"[..],
            b"bo/01",
            b"bo/+1",
            b"bo/-1",
            b"bo/4294967296",
            b"vm/1",
            b"bo",
            b"",
            b"bo/1/2",
            b"\xff",
        ] {
            assert!(parse_derived(bad).is_err(), "{bad:?}");
        }
    }
}
