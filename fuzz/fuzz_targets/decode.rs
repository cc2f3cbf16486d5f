//! Fuzz the uAPI decoder: the first 8 bytes pick the opcode, the rest is the payload. The
//! decoder must never panic; whatever it accepts must re-encode to a payload it accepts again.

#![no_main]

use gpu_scheme::uapi::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (op, payload) = data.split_at(data.len().min(8));
    let mut raw = [0u8; 8];
    raw[..op.len()].copy_from_slice(op);
    let opcode = u64::from_le_bytes(raw) % 24;
    if let Ok(request) = decode(opcode, payload) {
        let (op2, bytes) = encode(&request);
        assert_eq!(op2, opcode);
        assert_eq!(decode(op2, &bytes).as_ref(), Ok(&request));
    }
});
