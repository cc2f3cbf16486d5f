//! Sharing BOs and syncobjs between clients and processes.
//!
//! Owns: `Exported`, a derived handle (BO or syncobj) together with the 128-bit token the
//! scheme minted for it. The handle is the capability: pass its fd to another process
//! (`into_fd`, SCM_RIGHTS or inheritance) and rebuild it there (`from_handle`), or pass the
//! token bytes while this value lives. Must not: outlive its meaning silently — the token is
//! revoked when the last copy of the handle closes.

use std::os::fd::OwnedFd;

use gpu_scheme::uapi::flags::ObjectKind;
use gpu_scheme::uapi::wire::ExportTokenArgs;
use gpu_scheme::uapi::{Request, Token};

use crate::device::{call_on, read_text};
use crate::error::{Call, Context, Error, Result, TransportError};
use crate::transport::{Handle, Mapping};

/// An exported BO or syncobj: its derived handle and its token.
pub struct Exported {
    handle: Box<dyn Handle>,
    kind: ObjectKind,
    token: Token,
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret capability: never print it.
        f.debug_struct("Exported")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Exported {
    /// A derived handle (made by `dup`, or received from another process): reads its token.
    pub fn from_handle(handle: Box<dyn Handle>) -> Result<Exported> {
        let args: ExportTokenArgs = call_on(handle.as_ref(), &Request::ExportToken)?;
        let kind = ObjectKind::from_raw(args.kind)
            .ok_or(Error::new(Call::Local, TransportError::BadReply))?;
        Ok(Exported {
            handle,
            kind,
            token: Token(args.token),
        })
    }

    /// A host-transport handle received as an fd from another process.
    #[cfg(target_os = "linux")]
    pub fn from_host_fd(fd: OwnedFd) -> Result<Exported> {
        Self::from_handle(crate::transport::host::from_fd(fd))
    }

    /// A Redox handle received by fd passing.
    #[cfg(feature = "redox")]
    pub fn from_redox_fd(fd: OwnedFd) -> Result<Exported> {
        Self::from_handle(crate::transport::redox::from_fd(fd))
    }

    /// What was exported.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The token, valid while this handle (or a copy of its fd) is open.
    pub fn token(&self) -> Token {
        self.token
    }

    /// A new fd for the handle, to send to another process.
    pub fn clone_fd(&self) -> Result<OwnedFd> {
        self.handle.clone_fd().during(Call::Dup)
    }

    /// The handle's stats (`bo-size`, `bo-cpu-mappings` / `syncobj-point`).
    pub fn stats(&self) -> Result<String> {
        read_text(self.handle.as_ref())
    }

    /// Map `len` bytes at `offset` of an exported BO directly through the handle.
    pub fn mmap(&self, offset: u64, len: usize) -> Result<Box<dyn Mapping>> {
        self.handle.mmap(offset, len).during(Call::Mmap)
    }
}

/// The token as 16 bytes (little-endian words), for sending over any channel.
pub fn token_to_bytes(t: Token) -> [u8; 16] {
    let mut out = [0u8; 16];
    let (a, b) = out.split_at_mut(8);
    a.copy_from_slice(&t.0[0].to_le_bytes());
    b.copy_from_slice(&t.0[1].to_le_bytes());
    out
}

/// The token from `token_to_bytes`.
pub fn token_from_bytes(b: [u8; 16]) -> Token {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    Token([u64::from_le_bytes(lo), u64::from_le_bytes(hi)])
}
