//! Fuzz the uAPI decoders: the first 8 bytes pick the opcode (or, for one value past the call
//! opcodes, the host transport's MM_FD payload), the rest is the payload. A decoder must
//! never panic; whatever it accepts must re-encode to a payload it accepts again.

#![no_main]

use gpu_scheme::uapi::mm::{decode_mm_fd, encode_mm_fd};
use gpu_scheme::uapi::{decode, encode};
use libfuzzer_sys::fuzz_target;

/// The selector value that feeds the MM_FD decoder instead of a call opcode.
const MM_FD: u64 = 24;

fuzz_target!(|data: &[u8]| {
    let (op, payload) = data.split_at(data.len().min(8));
    let mut raw = [0u8; 8];
    raw[..op.len()].copy_from_slice(op);
    let opcode = u64::from_le_bytes(raw) % 25;
    if opcode == MM_FD {
        if let Ok(request) = decode_mm_fd(payload) {
            assert_eq!(decode_mm_fd(&encode_mm_fd(&request)), Ok(request));
        }
        return;
    }
    if let Ok(request) = decode(opcode, payload) {
        let (op2, bytes) = encode(&request);
        assert_eq!(op2, opcode);
        assert_eq!(decode(op2, &bytes).as_ref(), Ok(&request));
    }
});
