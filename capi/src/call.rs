//! One request on the wire: `CallHeader | args | arrays`, sent with `call`, out fields of the
//! args copied back.
//!
//! Owns: the framing and the errno of a failed call. Must not: interpret args; the server
//! validates them like any client's.

use gpu_scheme::uapi::wire::{CallHeader, Opcode, UAPI_VERSION};
use libgpu::transport::Handle;
use libgpu::TransportError;
use std::ffi::c_int;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The errno of a transport result (the scheme's, else the OS's; EIO for a broken reply).
pub fn errno_of(e: TransportError) -> c_int {
    match e {
        TransportError::Scheme(n) | TransportError::Os(n) => n,
        TransportError::BadReply => 5,
        TransportError::Unsupported => 95,
    }
}

/// The payload of `args` followed by `arrays`.
pub fn frame<A: IntoBytes + Immutable>(args: &A, arrays: &[&[u8]]) -> Vec<u8> {
    let header = CallHeader {
        version: UAPI_VERSION,
        args_size: size_of::<A>() as u32,
        ..Default::default()
    };
    let mut bytes = Vec::with_capacity(
        size_of::<CallHeader>() + size_of::<A>() + arrays.iter().map(|a| a.len()).sum::<usize>(),
    );
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(args.as_bytes());
    for a in arrays {
        bytes.extend_from_slice(a);
    }
    bytes
}

/// Sends `op` with `args` and `arrays` on `handle`; on success `args` holds the reply's.
pub fn call<A>(handle: &dyn Handle, op: Opcode, args: &mut A, arrays: &[&[u8]]) -> Result<(), c_int>
where
    A: IntoBytes + FromBytes + Immutable + KnownLayout,
{
    let mut payload = frame(args, arrays);
    handle
        .call(&mut payload, [op as u64, 0, 0])
        .map_err(errno_of)?;
    let start = size_of::<CallHeader>();
    let reply = payload
        .get(start..start + size_of::<A>())
        .and_then(|b| A::read_from_bytes(b).ok())
        .ok_or(5)?;
    *args = reply;
    Ok(())
}
