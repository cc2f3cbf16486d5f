//! A client's usage as its stats block gives it: the DRM fdinfo-style keys (`docs/uapi.md`,
//! "DRM fdinfo keys") that `gpuctl top` samples.
//!
//! Owns: [`ClientUsage`] and its strict parser, and splitting the root stats into client
//! blocks. Must not: read handles or compute rates (a sample is one reading; `gpuctl top`
//! turns two into percentages). A known key that appears twice or whose value is not its type
//! is an error, never guessed around; keys this version does not know are skipped (the fdinfo
//! rule: later servers add keys).

use std::collections::BTreeMap;
use thiserror::Error;

/// Why a stats block is not a client's usage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsageParseError {
    /// A line that is not `key: value` (no colon, an empty key or a key with whitespace).
    #[error("line {line}: not `key: value`: {text:?}")]
    NotKeyValue {
        /// 1-based line number in the block.
        line: usize,
        /// The line.
        text: String,
    },
    /// A known key whose value is not of its type.
    #[error("line {line}: bad value for {key}: {value:?}")]
    BadValue {
        /// 1-based line number in the block.
        line: usize,
        /// The key.
        key: String,
        /// The value as given.
        value: String,
    },
    /// A known key given twice.
    #[error("line {line}: {key} given twice")]
    Duplicate {
        /// 1-based line number in the block.
        line: usize,
        /// The key.
        key: String,
    },
    /// The block has no `drm-client-id`.
    #[error("no drm-client-id in the block")]
    NoClientId,
}

/// One client's usage at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientUsage {
    /// `drm-client-id`.
    pub client: u64,
    /// `drm-engine-<class>`: busy nanoseconds per engine class name (`copy`, `compute`).
    pub engine_ns: BTreeMap<String, u64>,
    /// `drm-engine-capacity-<class>`: hardware queues (identical engines) of a class; a
    /// class without one has 1 (the fdinfo rule), and 0 is refused.
    pub capacity: BTreeMap<String, u64>,
    /// `drm-pdev`: the device's PCI address, when the driver gives one.
    pub pdev: Option<String>,
    /// `drm-total-<region>`: bytes per region name (`vram`, `system`) of the BOs the client
    /// holds, imported ones included.
    pub total: BTreeMap<String, u64>,
    /// `drm-shared-<region>`: bytes of those BOs another client holds too.
    pub shared: BTreeMap<String, u64>,
    /// `drm-resident-<region>`: bytes per region name.
    pub resident: BTreeMap<String, u64>,
    /// `client-vms`.
    pub vms: u64,
    /// `client-queues`.
    pub queues: u64,
    /// `gpud-faults`: page faults so far.
    pub faults: u64,
    /// `gpud-evictions`: VRAM evictions so far.
    pub evictions: u64,
}

/// What a known key's value is.
enum Kind {
    Uint,
    /// An unsigned integer above zero.
    Positive,
    Nanoseconds,
    Bytes,
}

/// Where a known key goes, with its value kind; `None` for a key this version skips.
fn field<'a>(u: &'a mut ClientUsage, key: &str) -> Option<(&'a mut u64, Kind)> {
    let (map, name, kind) = if let Some(class) = key.strip_prefix("drm-engine-capacity-") {
        (&mut u.capacity, class, Kind::Positive)
    } else if let Some(class) = key.strip_prefix("drm-engine-") {
        (&mut u.engine_ns, class, Kind::Nanoseconds)
    } else if let Some(region) = key.strip_prefix("drm-total-") {
        if region.starts_with("cycles-") {
            return None;
        }
        (&mut u.total, region, Kind::Bytes)
    } else if let Some(region) = key.strip_prefix("drm-shared-") {
        (&mut u.shared, region, Kind::Bytes)
    } else if let Some(region) = key.strip_prefix("drm-resident-") {
        (&mut u.resident, region, Kind::Bytes)
    } else {
        let slot = match key {
            "drm-client-id" => &mut u.client,
            "client-vms" => &mut u.vms,
            "client-queues" => &mut u.queues,
            "gpud-faults" => &mut u.faults,
            "gpud-evictions" => &mut u.evictions,
            _ => return None,
        };
        return Some((slot, Kind::Uint));
    };
    if name.is_empty() {
        return None;
    }
    Some((map.entry(name.to_string()).or_insert(0), kind))
}

/// `value` as `kind`: a decimal `u64`, with ` ns` for nanoseconds and an optional ` KiB` /
/// ` MiB` for bytes (fdinfo's units).
fn value_of(value: &str, kind: &Kind) -> Option<u64> {
    let mut words = value.split_whitespace();
    let digits = words.next()?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit = words.next();
    if words.next().is_some() {
        return None;
    }
    match (kind, unit) {
        (Kind::Uint, None) | (Kind::Bytes, None) => Some(n),
        (Kind::Positive, None) => (n > 0).then_some(n),
        (Kind::Nanoseconds, Some("ns")) => Some(n),
        (Kind::Bytes, Some("KiB")) => n.checked_mul(1 << 10),
        (Kind::Bytes, Some("MiB")) => n.checked_mul(1 << 20),
        _ => None,
    }
}

impl ClientUsage {
    /// Parses one client's stats block (`key: value` lines).
    pub fn parse(block: &str) -> Result<Self, UsageParseError> {
        let mut u = ClientUsage::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, text) in block.lines().enumerate() {
            let line = i + 1;
            let bad = || UsageParseError::NotKeyValue {
                line,
                text: text.to_string(),
            };
            let (key, value) = text.split_once(':').ok_or_else(bad)?;
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(bad());
            }
            let value = value.trim();
            if key == "drm-pdev" {
                if value.is_empty() || value.chars().any(char::is_whitespace) {
                    return Err(UsageParseError::BadValue {
                        line,
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
                if u.pdev.replace(value.to_string()).is_some() {
                    return Err(UsageParseError::Duplicate {
                        line,
                        key: key.to_string(),
                    });
                }
                continue;
            }
            let Some((slot, kind)) = field(&mut u, key) else {
                continue;
            };
            *slot = value_of(value, &kind).ok_or_else(|| UsageParseError::BadValue {
                line,
                key: key.to_string(),
                value: value.to_string(),
            })?;
            if !seen.insert(key.to_string()) {
                return Err(UsageParseError::Duplicate {
                    line,
                    key: key.to_string(),
                });
            }
        }
        if !seen.contains("drm-client-id") {
            return Err(UsageParseError::NoClientId);
        }
        Ok(u)
    }

    /// Splits a privileged root read (device lines, then one block per client, each starting
    /// at its `client-id` line) into the device part and the parsed client blocks.
    pub fn parse_root(text: &str) -> Result<(String, Vec<ClientUsage>), UsageParseError> {
        let mut blocks: Vec<String> = Vec::new();
        let mut device = String::new();
        for line in text.lines() {
            if line.starts_with("client-id:") {
                blocks.push(String::new());
            }
            let out = blocks.last_mut().unwrap_or(&mut device);
            out.push_str(line);
            out.push('\n');
        }
        let clients = blocks
            .iter()
            .map(|b| ClientUsage::parse(b))
            .collect::<Result<_, _>>()?;
        Ok((device, clients))
    }

    /// Busy nanoseconds on engine class `class` (0 when not given).
    pub fn busy_ns(&self, class: &str) -> u64 {
        self.engine_ns.get(class).copied().unwrap_or(0)
    }

    /// Hardware queues of engine class `class` (1 when not given).
    pub fn capacity(&self, class: &str) -> u64 {
        self.capacity.get(class).copied().unwrap_or(1)
    }

    /// Bytes of shared BOs over all regions.
    pub fn shared_bytes(&self) -> u64 {
        self.shared.values().fold(0, |a, &b| a.saturating_add(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BLOCK: &str = "client-id: 4\nclient-vms: 2\nclient-queues: 3\n\
        drm-driver: gpud\ndrm-client-id: 4\ndrm-engine-copy: 1500 ns\n\
        drm-engine-compute: 0 ns\ndrm-engine-capacity-copy: 8\ndrm-total-vram: 4 KiB\n\
        drm-total-system: 8192\ndrm-shared-system: 4096\ndrm-resident-vram: 4096\n\
        drm-resident-system: 1 MiB\ndrm-pdev: 0000:00:04.0\n\
        gpud-faults: 7\ngpud-evictions: 1\nsome-future-key: anything at all\n";

    #[test]
    fn a_client_block_parses_with_units_and_unknown_keys_skipped() {
        let u = ClientUsage::parse(BLOCK).expect("parses");
        assert_eq!(u.client, 4);
        assert_eq!(u.vms, 2);
        assert_eq!(u.queues, 3);
        assert_eq!(u.busy_ns("copy"), 1500);
        assert_eq!(u.busy_ns("compute"), 0);
        assert_eq!(u.engine_ns.len(), 2, "capacity is not an engine");
        assert_eq!((u.capacity("copy"), u.capacity("compute")), (8, 1));
        assert_eq!(u.pdev.as_deref(), Some("0000:00:04.0"));
        assert_eq!(u.shared["system"], 4096);
        assert_eq!(u.shared_bytes(), 4096);
        assert_eq!(u.total["vram"], 4096);
        assert_eq!(u.total["system"], 8192);
        assert_eq!(u.resident["system"], 1 << 20);
        assert_eq!((u.faults, u.evictions), (7, 1));
    }

    #[test]
    fn malformed_known_values_are_refused() {
        for (line, bad) in [
            ("drm-engine-copy: 15", "no unit"),
            ("drm-engine-copy: 15 ms", "wrong unit"),
            ("drm-engine-copy: -1 ns", "negative"),
            ("drm-engine-copy: +1 ns", "sign"),
            ("drm-total-vram: 4 GiB", "unknown unit"),
            ("drm-total-vram: 18446744073709551615 KiB", "overflow"),
            ("drm-client-id: 0x4", "hex"),
            ("gpud-faults: 1 2", "two numbers"),
            ("client-vms:", "empty"),
            ("drm-engine-capacity-copy: 0", "zero capacity"),
            ("drm-engine-capacity-copy: 2 ns", "unit on a count"),
            ("drm-shared-vram: 1 GiB", "unknown unit"),
            ("drm-pdev:", "empty address"),
        ] {
            let block = format!("drm-client-id: 1\n{line}\n");
            let block = block.replacen("drm-client-id: 1\ndrm-client-id", "drm-client-id", 1);
            assert!(
                matches!(
                    ClientUsage::parse(&block),
                    Err(UsageParseError::BadValue { .. })
                ),
                "{bad}: {line}"
            );
        }
        assert!(matches!(
            ClientUsage::parse("drm-client-id: 1\nno colon here\n"),
            Err(UsageParseError::NotKeyValue { line: 2, .. })
        ));
        assert!(matches!(
            ClientUsage::parse("drm-client-id: 1\nbad key: 3\n"),
            Err(UsageParseError::NotKeyValue { .. })
        ));
        assert!(matches!(
            ClientUsage::parse("drm-client-id: 1\ndrm-engine-copy: 1 ns\ndrm-engine-copy: 2 ns\n"),
            Err(UsageParseError::Duplicate { line: 3, .. })
        ));
        assert!(matches!(
            ClientUsage::parse("drm-client-id: 1\ndrm-pdev: a\ndrm-pdev: b\n"),
            Err(UsageParseError::Duplicate { line: 3, .. })
        ));
        assert_eq!(
            ClientUsage::parse("drm-engine-copy: 1 ns\n"),
            Err(UsageParseError::NoClientId)
        );
    }

    #[test]
    fn the_root_read_splits_into_device_lines_and_client_blocks() {
        let root = format!(
            "device-clients: 2\ndevice-handles: 3\n{BLOCK}{}",
            BLOCK.replace(": 4\n", ": 9\n")
        );
        let (device, clients) = ClientUsage::parse_root(&root).expect("parses");
        assert_eq!(device, "device-clients: 2\ndevice-handles: 3\n");
        assert_eq!(clients.iter().map(|c| c.client).collect::<Vec<_>>(), [4, 9]);
        assert!(ClientUsage::parse_root("device-clients: 1\nclient-id: 1\n").is_err());
    }

    proptest! {
        /// Whatever the text, the parser answers without panicking; what it accepts
        /// re-renders to a block that parses to the same usage.
        #[test]
        fn any_text_parses_or_is_refused(text in "([a-z-]{0,12}(: ?)?[0-9a-zA-Z ]{0,12}\n){0,8}") {
            let block = format!("drm-client-id: 1\n{text}");
            if let Ok(u) = ClientUsage::parse(&block) {
                prop_assert_eq!(ClientUsage::parse(&render(&u)), Ok(u));
            }
        }

        #[test]
        fn rendered_usage_round_trips(client in any::<u64>(), copy in any::<u64>(),
                                      vram in any::<u64>(), faults in any::<u64>(),
                                      capacity in 1..u64::MAX, shared in any::<u64>(),
                                      pdev in proptest::option::of("[0-9a-f:.]{1,12}")) {
            let mut u = ClientUsage { client, faults, pdev, ..Default::default() };
            u.engine_ns.insert("copy".into(), copy);
            u.capacity.insert("copy".into(), capacity);
            u.total.insert("vram".into(), vram);
            u.shared.insert("system".into(), shared);
            u.resident.insert("vram".into(), vram);
            prop_assert_eq!(ClientUsage::parse(&render(&u)), Ok(u));
        }
    }

    /// The block gpud would give for `u`.
    fn render(u: &ClientUsage) -> String {
        let mut s = format!(
            "drm-client-id: {}\nclient-vms: {}\nclient-queues: {}\ngpud-faults: {}\ngpud-evictions: {}\n",
            u.client, u.vms, u.queues, u.faults, u.evictions
        );
        for (k, v) in &u.engine_ns {
            s += &format!("drm-engine-{k}: {v} ns\n");
        }
        for (k, v) in &u.total {
            s += &format!("drm-total-{k}: {v}\n");
        }
        for (k, v) in &u.resident {
            s += &format!("drm-resident-{k}: {v}\n");
        }
        for (k, v) in &u.shared {
            s += &format!("drm-shared-{k}: {v}\n");
        }
        for (k, v) in &u.capacity {
            s += &format!("drm-engine-capacity-{k}: {v}\n");
        }
        if let Some(p) = &u.pdev {
            s += &format!("drm-pdev: {p}\n");
        }
        s
    }
}
