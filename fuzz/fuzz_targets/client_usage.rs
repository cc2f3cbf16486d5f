//! Fuzz the client usage parser (`libgpu::ClientUsage`, what `gpuctl top` reads from the root
//! stats): it must never panic, on one block or on a whole root read.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = libgpu::ClientUsage::parse(&text) {
        // What it accepted names a client.
        let _ = u.busy_ns("copy");
    }
    let _ = libgpu::ClientUsage::parse_root(&text);
});
