//! Scheme handles (file descriptions) and the path grammar.
//!
//! Owns: what a handle number refers to (root, device/client, derived BO, syncobj or VM view
//! handle), and parsing of `openat` / `dup` paths. Must not: create driver objects.
//!
//! Grammar: `openat(root, "card0")` → device handle (one new client). On a device handle,
//! `dup(handle, "bo/<id>")`, `dup(handle, "syncobj/<id>")` and `dup(handle, "vm/<id>")`
//! (decimal u32 ids of the client's namespace) → derived handles, usable for `mmap` (BO),
//! `fevent` (syncobj), export (BO, syncobj) and `read` (all; a VM view reads the mapping
//! table). On the root, `dup(root, "vm/<id>")` (gpud's daemon-wide VM id, u64) and
//! `dup(root, "client/<client id>/vm/<id>")` → a VM view for the administrator. Every id is
//! decimal, without sign or leading zeros.

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
    /// A read-only view of one VM's mapping table.
    Vm(super::vm_view::VmView),
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
    /// CPU mappings made through this handle and not yet unmapped (`cpu_maps.live()`).
    pub mappings: u64,
    /// Their page ranges, so only counted `munmap`s reach the driver.
    pub cpu_maps: super::cpu_maps::MapRanges,
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
            Handle::Vm(_) => "VM view",
        }
    }
}

/// A parsed `dup` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DerivedPath {
    /// `bo/<id>` or `syncobj/<id>` (device handles only).
    Object { kind: ObjectKind, id: u32 },
    /// `vm/<id>`: the client's VM id on a device handle (must fit a u32), gpud's daemon-wide
    /// VM id on the root.
    Vm(u64),
    /// `client/<client id>/vm/<id>` (root only).
    ClientVm { client: u64, vm: u32 },
}

/// A decimal id without sign or leading zeros (so every id has exactly one spelling).
fn decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    canonical.then(|| s.parse::<u64>().ok()).flatten()
}

/// Parse a `dup` path of the grammar above.
pub(crate) fn parse_derived(buf: &[u8]) -> Result<DerivedPath, SchemeError> {
    let bad = || SchemeError::BadPath(String::from_utf8_lossy(buf).into_owned());
    let path = std::str::from_utf8(buf).map_err(|_| bad())?;
    let words: Vec<&str> = path.split('/').collect();
    let id32 = |s: &str| decimal(s).and_then(|id| u32::try_from(id).ok());
    let parsed = match words.as_slice() {
        ["bo", id] => id32(id).map(|id| DerivedPath::Object {
            kind: ObjectKind::Bo,
            id,
        }),
        ["syncobj", id] => id32(id).map(|id| DerivedPath::Object {
            kind: ObjectKind::Syncobj,
            id,
        }),
        ["vm", id] => decimal(id).map(DerivedPath::Vm),
        ["client", client, "vm", vm] => decimal(client)
            .zip(id32(vm))
            .map(|(client, vm)| DerivedPath::ClientVm { client, vm }),
        _ => None,
    };
    parsed.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_paths() {
        assert_eq!(
            parse_derived(b"bo/12").ok(),
            Some(DerivedPath::Object {
                kind: ObjectKind::Bo,
                id: 12
            })
        );
        assert_eq!(
            parse_derived(b"syncobj/1").ok(),
            Some(DerivedPath::Object {
                kind: ObjectKind::Syncobj,
                id: 1
            })
        );
        assert_eq!(parse_derived(b"vm/7").ok(), Some(DerivedPath::Vm(7)));
        assert_eq!(
            parse_derived(b"vm/18446744073709551615").ok(),
            Some(DerivedPath::Vm(u64::MAX))
        );
        assert_eq!(
            parse_derived(b"client/3/vm/4").ok(),
            Some(DerivedPath::ClientVm { client: 3, vm: 4 })
        );
        for bad in [
            &b"bo/"[..],
            b"bo/01",
            b"bo/+1",
            b"bo/-1",
            b"bo/4294967296",
            b"vm/0",
            b"vm/01",
            b"vm/",
            b"vm/18446744073709551616",
            b"vm/1/",
            b"vm/0x1",
            b"client/1/vm/4294967296",
            b"client/01/vm/1",
            b"client/1/vm",
            b"client/1",
            b"bo",
            b"",
            b"bo/1/2",
            b"\xff",
        ] {
            assert!(parse_derived(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Every id has exactly one spelling, which parses back to it; arbitrary bytes never
        /// panic and parse only if they are such a spelling.
        #[test]
        fn paths_round_trip_and_arbitrary_bytes_are_safe(
            id in proptest::prelude::any::<u64>(),
            client in proptest::prelude::any::<u64>(),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let vm = format!("vm/{id}");
            let parsed = parse_derived(vm.as_bytes()).ok();
            proptest::prop_assert_eq!(parsed, (id != 0).then_some(DerivedPath::Vm(id)));
            let small = id as u32;
            let cv = format!("client/{client}/vm/{small}");
            let ok = client != 0 && small != 0;
            let want = ok.then_some(DerivedPath::ClientVm { client, vm: small });
            proptest::prop_assert_eq!(parse_derived(cv.as_bytes()).ok(), want);
            if let Ok(p) = parse_derived(&bytes) {
                let again = match p {
                    DerivedPath::Object { kind: ObjectKind::Bo, id } => format!("bo/{id}"),
                    DerivedPath::Object { kind: ObjectKind::Syncobj, id } => format!("syncobj/{id}"),
                    DerivedPath::Vm(id) => format!("vm/{id}"),
                    DerivedPath::ClientVm { client, vm } => format!("client/{client}/vm/{vm}"),
                };
                proptest::prop_assert_eq!(again.as_bytes(), &bytes[..]);
            }
        }
    }
}
