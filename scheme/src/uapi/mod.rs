//! The gpu scheme's uAPI: wire layouts, flags, typed requests, the validating decoder and the
//! client-side encoder.
//!
//! Owns: everything about bytes on the wire. Must not: touch driver objects or errno values.
//! `docs/uapi.md` is the reference for client writers; keep it in step with `wire.rs`.

pub mod decode;
pub mod encode;
pub mod error;
pub mod flags;
pub mod mm;
pub mod request;
pub mod rules;
pub mod wire;

pub use decode::{decode, write_reply};
pub use encode::{encode, encode_with, read_args, Layout};
pub use error::{ArrayKind, DecodeError};
pub use request::*;
pub use wire::{Opcode, UAPI_VERSION};
