//! MM_FD: the request that hands the daemon a client's memory-manager descriptors (host
//! transport only; the descriptor travels beside the payload with SCM_RIGHTS).
//!
//! Owns: the wire layout of the MM_FD payload ([`MmFdArgs`]), its validating decoder
//! ([`decode_mm_fd`]) and encoder ([`encode_mm_fd`]). Must not: look at the descriptor (the
//! transport and the driver check it) or choose errno values (`crate::errno`).
//!
//! Two kinds: `USERFAULTFD` (the client's userfaultfd, once per device handle: gpud reads its
//! UNMAP / REMAP / REMOVE events) and `REGION` (a memfd the client maps `MAP_SHARED` at CPU
//! address `va` for `len` bytes from file offset `offset`: the pages a MAP_USERPTR of that
//! range reaches). `docs/uapi.md` documents the layout.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::decode::BIND_ALIGN;
use super::error::DecodeError;
use super::wire::UAPI_VERSION;

/// `MmFdArgs::kind`: the descriptor is the client's userfaultfd.
pub const MM_FD_USERFAULTFD: u32 = 1;
/// `MmFdArgs::kind`: the descriptor is a memfd mapped over `[va, va + len)`.
pub const MM_FD_REGION: u32 = 2;

/// `MmFdArgs::flags` of a USERFAULTFD: the client registered its ranges through a full-mode
/// userfaultfd (`/dev/userfaultfd` or the privileged syscall), not a user-mode-only one.
pub const MM_FD_FULL_MODE: u32 = 1 << 0;

/// The MM_FD payload (48 bytes).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmFdArgs {
    /// `UAPI_VERSION`.
    pub version: u16,
    /// Zero.
    pub pad: u16,
    /// `MM_FD_USERFAULTFD` or `MM_FD_REGION`.
    pub kind: u32,
    /// `MM_FD_*` flags of the kind (USERFAULTFD: `MM_FD_FULL_MODE`; REGION: none).
    pub flags: u32,
    /// Zero.
    pub pad2: u32,
    /// REGION: CPU address of the first byte (page aligned); else zero.
    pub va: u64,
    /// REGION: bytes (page multiple, non-zero); else zero.
    pub len: u64,
    /// REGION: file offset of `va` in the memfd (page aligned); else zero.
    pub offset: u64,
    /// Zero.
    pub reserved: u64,
}

/// A decoded MM_FD request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmFdRequest {
    /// The client's userfaultfd.
    Userfaultfd {
        /// Registered through a full-mode userfaultfd.
        full_mode: bool,
    },
    /// A memfd mapped over `[va, va + len)` from file offset `offset`.
    Region {
        /// CPU address.
        va: u64,
        /// Bytes.
        len: u64,
        /// File offset of `va`.
        offset: u64,
    },
}

fn zero(value: u64, field: &'static str) -> Result<(), DecodeError> {
    if value == 0 {
        Ok(())
    } else {
        Err(DecodeError::ReservedNonZero { field })
    }
}

fn page_aligned(value: u64, field: &'static str) -> Result<(), DecodeError> {
    if value % BIND_ALIGN == 0 {
        Ok(())
    } else {
        Err(DecodeError::Misaligned {
            field,
            value,
            align: BIND_ALIGN,
        })
    }
}

/// Decode and validate an MM_FD payload (exactly `size_of::<MmFdArgs>()` bytes).
pub fn decode_mm_fd(payload: &[u8]) -> Result<MmFdRequest, DecodeError> {
    let need = size_of::<MmFdArgs>();
    let got = payload.len();
    let args = MmFdArgs::read_from_bytes(payload).map_err(|_| {
        if got < need {
            DecodeError::Truncated { need, got }
        } else {
            DecodeError::TrailingBytes {
                expected: need,
                got,
            }
        }
    })?;
    if args.version != UAPI_VERSION {
        return Err(DecodeError::BadVersion(args.version));
    }
    zero(args.pad.into(), "mm_fd.pad")?;
    zero(args.pad2.into(), "mm_fd.pad2")?;
    zero(args.reserved, "mm_fd.reserved")?;
    match args.kind {
        MM_FD_USERFAULTFD => {
            let unknown = args.flags & !MM_FD_FULL_MODE;
            if unknown != 0 {
                return Err(DecodeError::UnknownFlags {
                    field: "mm_fd.flags",
                    bits: unknown.into(),
                });
            }
            zero(args.va, "mm_fd.va")?;
            zero(args.len, "mm_fd.len")?;
            zero(args.offset, "mm_fd.offset")?;
            Ok(MmFdRequest::Userfaultfd {
                full_mode: args.flags & MM_FD_FULL_MODE != 0,
            })
        }
        MM_FD_REGION => {
            if args.flags != 0 {
                return Err(DecodeError::UnknownFlags {
                    field: "mm_fd.flags",
                    bits: args.flags.into(),
                });
            }
            page_aligned(args.va, "mm_fd.va")?;
            page_aligned(args.len, "mm_fd.len")?;
            page_aligned(args.offset, "mm_fd.offset")?;
            if args.len == 0 {
                return Err(DecodeError::Zero { field: "mm_fd.len" });
            }
            let overflows = args.va.checked_add(args.len).is_none()
                || args
                    .offset
                    .checked_add(args.len)
                    .is_none_or(|e| e > i64::MAX as u64);
            if overflows {
                return Err(DecodeError::Overflow {
                    field: "mm_fd.va/offset",
                    start: args.va,
                    len: args.len,
                });
            }
            Ok(MmFdRequest::Region {
                va: args.va,
                len: args.len,
                offset: args.offset,
            })
        }
        kind => Err(DecodeError::BadEnum {
            field: "mm_fd.kind",
            value: kind.into(),
        }),
    }
}

/// The payload of `req` (what a client sends beside the descriptor).
pub fn encode_mm_fd(req: &MmFdRequest) -> Vec<u8> {
    let mut args = MmFdArgs {
        version: UAPI_VERSION,
        ..MmFdArgs::default()
    };
    match *req {
        MmFdRequest::Userfaultfd { full_mode } => {
            args.kind = MM_FD_USERFAULTFD;
            args.flags = if full_mode { MM_FD_FULL_MODE } else { 0 };
        }
        MmFdRequest::Region { va, len, offset } => {
            args.kind = MM_FD_REGION;
            (args.va, args.len, args.offset) = (va, len, offset);
        }
    }
    args.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_48_bytes() {
        assert_eq!(size_of::<MmFdArgs>(), 48);
    }

    #[test]
    fn round_trips() {
        for req in [
            MmFdRequest::Userfaultfd { full_mode: true },
            MmFdRequest::Userfaultfd { full_mode: false },
            MmFdRequest::Region {
                va: 0x7f00_0000_0000,
                len: 0x20_0000,
                offset: 0x1000,
            },
        ] {
            assert_eq!(decode_mm_fd(&encode_mm_fd(&req)), Ok(req));
        }
    }

    fn region(va: u64, len: u64, offset: u64) -> Vec<u8> {
        encode_mm_fd(&MmFdRequest::Region { va, len, offset })
    }

    #[test]
    fn refuses_bad_regions() {
        assert!(matches!(
            decode_mm_fd(&region(0x1001, 0x1000, 0)),
            Err(DecodeError::Misaligned { .. })
        ));
        assert!(matches!(
            decode_mm_fd(&region(0x1000, 0x10, 0)),
            Err(DecodeError::Misaligned { .. })
        ));
        assert!(matches!(
            decode_mm_fd(&region(0x1000, 0x1000, 8)),
            Err(DecodeError::Misaligned { .. })
        ));
        assert_eq!(
            decode_mm_fd(&region(0x1000, 0, 0)),
            Err(DecodeError::Zero { field: "mm_fd.len" })
        );
        assert!(matches!(
            decode_mm_fd(&region(u64::MAX - 0xfff, 0x2000, 0)),
            Err(DecodeError::Overflow { .. })
        ));
        assert!(matches!(
            decode_mm_fd(&region(0x1000, 0x1000, 1 << 63)),
            Err(DecodeError::Overflow { .. })
        ));
    }

    #[test]
    fn refuses_bad_framing() {
        let good = region(0x1000, 0x1000, 0);
        assert!(matches!(
            decode_mm_fd(&good[..40]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_mm_fd(&long),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let mut args = MmFdArgs::read_from_bytes(&good[..]).unwrap();
        args.version = 9;
        assert_eq!(
            decode_mm_fd(args.as_bytes()),
            Err(DecodeError::BadVersion(9))
        );
        args.version = UAPI_VERSION;
        args.kind = 3;
        assert!(matches!(
            decode_mm_fd(args.as_bytes()),
            Err(DecodeError::BadEnum { .. })
        ));
        args.kind = MM_FD_USERFAULTFD;
        assert!(matches!(
            decode_mm_fd(args.as_bytes()),
            Err(DecodeError::ReservedNonZero { .. })
        ));
        args = MmFdArgs {
            version: UAPI_VERSION,
            kind: MM_FD_USERFAULTFD,
            flags: 2,
            ..MmFdArgs::default()
        };
        assert!(matches!(
            decode_mm_fd(args.as_bytes()),
            Err(DecodeError::UnknownFlags { .. })
        ));
        args.flags = 0;
        args.reserved = 1;
        assert!(matches!(
            decode_mm_fd(args.as_bytes()),
            Err(DecodeError::ReservedNonZero { .. })
        ));
    }

    proptest! {
        /// Whatever decodes re-encodes to the same bytes' meaning; nothing panics.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(req) = decode_mm_fd(&bytes) {
                prop_assert_eq!(decode_mm_fd(&encode_mm_fd(&req)), Ok(req));
            }
        }
    }
}
