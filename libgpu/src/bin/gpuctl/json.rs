//! gpuctl's `--json` output: the same facts as the text, as JSON values.
//!
//! Owns: turning `key: value` stats lines, DEVICE_QUERY and VM tables into JSON. Must not:
//! talk to the daemon. Stats values become numbers when they are one (`N bytes` → N; the key
//! already says what unit), else strings; keys keep the scheme's names.

use libgpu::{DeviceInfo, MappingKind, VmTable};
use serde_json::{json, Map, Value};

/// One stats value: an unsigned number (optionally followed by ` bytes`), else the text.
fn value(v: &str) -> Value {
    let v = v.trim();
    let num = v.strip_suffix(" bytes").unwrap_or(v);
    match num.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(v),
    }
}

/// `key: value` lines as one object (a repeated key keeps its last value).
pub fn key_values(text: &str) -> Value {
    let mut obj = Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            obj.insert(k.trim().to_string(), value(v));
        }
    }
    Value::Object(obj)
}

/// The root stats' client blocks (each starts at a `client-id` line) as an array of objects.
pub fn client_blocks(text: &str) -> Value {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("client-id:") && !current.is_empty() {
            blocks.push(key_values(&current));
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.is_empty() {
        blocks.push(key_values(&current));
    }
    Value::Array(blocks)
}

/// DEVICE_QUERY.
pub fn device_info(i: &DeviceInfo, engines: &[&str]) -> Value {
    json!({
        "device": "simgpu",
        "va-bits": i.va_bits,
        "engines": engines,
        "page-sizes": i.page_sizes,
        "vram-total": i.vram_size,
        "vram-free": i.vram_free,
        "system-total": i.sys_size,
        "system-free": i.sys_free,
        "reserved-va-start": i.reserved_va_start,
        "reserved-va-len": i.reserved_va_len,
        "pat-entries": i.pat_entries,
        "limit-objects": i.max_objects,
        "limit-vram": i.limit_vram,
        "limit-system": i.limit_sys,
        "limit-mappings": i.max_mappings,
        "limit-in-flight": i.max_in_flight,
    })
}

/// A VM view's table.
pub fn vm_table(t: &VmTable) -> Value {
    let mappings: Vec<Value> = t
        .mappings
        .iter()
        .map(|m| {
            let kind = match m.kind {
                MappingKind::Bo => "bo",
                MappingKind::Null => "null",
                MappingKind::Userptr => "userptr",
                MappingKind::Mirror => "mirror",
            };
            json!({
                "start": m.start,
                "end": m.end,
                "kind": kind,
                "bo": m.bo.map(|b| b.0),
                "offset": m.offset,
                "read-only": m.read_only,
            })
        })
        .collect();
    let flags: Vec<&str> = t.flags.iter_names().map(|(n, _)| n).collect();
    json!({
        "vm-id": t.vm.0,
        "vm-daemon-id": t.daemon_id,
        "client": t.client,
        "flags": flags,
        "mappings": mappings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_values_become_numbers_when_they_are_one() {
        let v = key_values("a: 3\nb: 4096 bytes\nc: soon\n");
        assert_eq!(v["a"], 3);
        assert_eq!(v["b"], 4096);
        assert_eq!(v["c"], "soon");
    }
}
