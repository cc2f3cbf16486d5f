//! `gpuctl top`: per-client engine use, memory and event rates from two readings of the root
//! stats (the DRM fdinfo keys of `docs/uapi.md`).
//!
//! Owns: a reading ([`Sample`]), turning two readings into rows ([`rows`]), sorting them and
//! rendering the table as lines of text (shared by the live view, `--once` and the pane test).
//! Must not: touch the terminal (`tty.rs`) or talk to the daemon beyond one root read per
//! sample. A busy percentage is the engine time a client's jobs occupied the engine's hardware
//! queues during the interval over the interval's length times the engine's capacity
//! (`drm-engine-capacity-<class>`, its hardware queues): 100 % = every hardware queue of the
//! engine all the time, so the clients of one engine add up to at most 100 % (as IGT's gputop
//! computes it).

use libgpu::ClientUsage;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Engine classes shown first, in this order (others follow by name).
const KNOWN_ENGINES: [&str; 2] = ["copy", "compute"];

/// One reading of the root stats.
#[derive(Clone)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// The device-wide `key: value` lines.
    pub device: String,
    /// Every client's usage.
    pub clients: Vec<ClientUsage>,
}

impl Sample {
    /// Parses a root read taken at `at`.
    pub fn parse(text: &str, at: Instant) -> Result<Self, String> {
        let (device, clients) =
            ClientUsage::parse_root(text).map_err(|e| format!("stats from gpud: {e}"))?;
        Ok(Self {
            at,
            device,
            clients,
        })
    }

    /// A device line's number (`N` or `N bytes`).
    fn device_value(&self, key: &str) -> Option<u64> {
        self.device.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.trim();
            (k == key).then(|| v.strip_suffix(" bytes").unwrap_or(v).parse().ok())?
        })
    }
}

/// One client's line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub client: u64,
    /// Busy percentage per engine class, in `Table::engines` order.
    pub busy: Vec<f64>,
    pub vram: u64,
    pub system: u64,
    /// Bytes of BOs another client holds too (`drm-shared-*`, all regions).
    pub shared: u64,
    pub vms: u64,
    pub queues: u64,
    pub faults_per_s: f64,
    pub evictions_per_s: f64,
}

/// What the table shows: engine columns and rows.
pub struct Table {
    pub engines: Vec<String>,
    /// Hardware queues of each engine in `engines`, as the clients report them.
    pub capacity: Vec<u64>,
    pub rows: Vec<Row>,
    pub interval: Duration,
}

/// A column the table can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Client,
    /// Engine column `i` of `Table::engines`.
    Engine(usize),
    Vram,
    System,
    Shared,
    Vms,
    Queues,
    Faults,
    Evictions,
}

/// How rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    /// Largest first (the default for every column but the client id).
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Self {
            column: Column::Engine(0),
            descending: true,
        }
    }
}

/// Per-second rate of a counter that went from `before` to `after` in `secs`.
fn rate(before: u64, after: u64, secs: f64) -> f64 {
    after.saturating_sub(before) as f64 / secs
}

/// The rows for `cur`, with rates and percentages against `prev` (a client new since `prev`
/// counts from zero).
pub fn rows(prev: &Sample, cur: &Sample) -> Table {
    let interval = cur.at.saturating_duration_since(prev.at);
    let secs = interval.as_secs_f64().max(1e-3);
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for c in prev.clients.iter().chain(&cur.clients) {
        names.extend(c.engine_ns.keys().map(String::as_str));
    }
    let mut engines: Vec<String> = KNOWN_ENGINES.iter().map(|e| e.to_string()).collect();
    engines.extend(
        names
            .into_iter()
            .filter(|n| !KNOWN_ENGINES.contains(n))
            .map(str::to_string),
    );
    // Every client reports the same device's capacity; the largest guards against a client
    // block read from an older daemon without the key.
    let capacity: Vec<u64> = engines
        .iter()
        .map(|e| cur.clients.iter().map(|c| c.capacity(e)).max().unwrap_or(1))
        .collect();
    let zero = ClientUsage::default();
    let rows = cur
        .clients
        .iter()
        .map(|c| {
            let before = prev
                .clients
                .iter()
                .find(|p| p.client == c.client)
                .unwrap_or(&zero);
            let busy = engines
                .iter()
                .zip(&capacity)
                .map(|(e, &cap)| {
                    let ns = c.busy_ns(e).saturating_sub(before.busy_ns(e));
                    ns as f64 / 1e9 / secs * 100.0 / cap as f64
                })
                .collect();
            Row {
                client: c.client,
                busy,
                vram: c.resident.get("vram").copied().unwrap_or(0),
                system: c.resident.get("system").copied().unwrap_or(0),
                shared: c.shared_bytes(),
                vms: c.vms,
                queues: c.queues,
                faults_per_s: rate(before.faults, c.faults, secs),
                evictions_per_s: rate(before.evictions, c.evictions, secs),
            }
        })
        .collect();
    Table {
        engines,
        capacity,
        rows,
        interval,
    }
}

impl Table {
    /// The columns in display order.
    pub fn columns(&self) -> Vec<Column> {
        let mut c = vec![Column::Client];
        c.extend((0..self.engines.len()).map(Column::Engine));
        c.extend([
            Column::Vram,
            Column::System,
            Column::Shared,
            Column::Vms,
            Column::Queues,
            Column::Faults,
            Column::Evictions,
        ]);
        c
    }

    /// A column's heading.
    pub fn heading(&self, c: Column) -> String {
        match c {
            Column::Client => "CLIENT".into(),
            Column::Engine(i) => format!(
                "{}%",
                self.engines
                    .get(i)
                    .map_or("?", String::as_str)
                    .to_uppercase()
            ),
            Column::Vram => "VRAM".into(),
            Column::System => "SYSTEM".into(),
            Column::Shared => "SHARED".into(),
            Column::Vms => "VMS".into(),
            Column::Queues => "QUEUES".into(),
            Column::Faults => "FAULTS/S".into(),
            Column::Evictions => "EVICT/S".into(),
        }
    }

    /// Orders the rows by `sort` (ties by client id).
    pub fn sort(&mut self, sort: Sort) {
        let key = |r: &Row| -> f64 {
            match sort.column {
                Column::Client => r.client as f64,
                Column::Engine(i) => r.busy.get(i).copied().unwrap_or(0.0),
                Column::Vram => r.vram as f64,
                Column::System => r.system as f64,
                Column::Shared => r.shared as f64,
                Column::Vms => r.vms as f64,
                Column::Queues => r.queues as f64,
                Column::Faults => r.faults_per_s,
                Column::Evictions => r.evictions_per_s,
            }
        };
        self.rows.sort_by(|a, b| {
            let o = key(a).total_cmp(&key(b));
            let o = if sort.descending { o.reverse() } else { o };
            o.then(a.client.cmp(&b.client))
        });
    }

    /// One cell of `r`.
    fn cell(r: &Row, c: Column) -> String {
        match c {
            Column::Client => r.client.to_string(),
            Column::Engine(i) => format!("{:.1}", r.busy.get(i).copied().unwrap_or(0.0)),
            Column::Vram => bytes(r.vram),
            Column::System => bytes(r.system),
            Column::Shared => bytes(r.shared),
            Column::Vms => r.vms.to_string(),
            Column::Queues => r.queues.to_string(),
            Column::Faults => format!("{:.1}", r.faults_per_s),
            Column::Evictions => format!("{:.1}", r.evictions_per_s),
        }
    }

    /// The table as text lines: a heading (the sort column marked) and one line per row.
    pub fn lines(&self, sort: Sort) -> Vec<String> {
        let cols = self.columns();
        let mark = if sort.descending { 'v' } else { '^' };
        let heading: Vec<String> = cols
            .iter()
            .map(|&c| {
                let h = self.heading(c);
                if c == sort.column {
                    format!("{h}{mark}")
                } else {
                    h
                }
            })
            .collect();
        let mut out = vec![line(&heading)];
        for r in &self.rows {
            let cells: Vec<String> = cols.iter().map(|&c| Self::cell(r, c)).collect();
            out.push(line(&cells));
        }
        out
    }

    /// The table as JSON (`gpuctl --json top`).
    pub fn json(&self) -> Value {
        let clients: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let busy: serde_json::Map<String, Value> = self
                    .engines
                    .iter()
                    .zip(&r.busy)
                    .map(|(e, b)| (e.clone(), json!(b)))
                    .collect();
                json!({
                    "client-id": r.client,
                    "busy-percent": busy,
                    "vram-resident": r.vram,
                    "system-resident": r.system,
                    "shared": r.shared,
                    "vms": r.vms,
                    "queues": r.queues,
                    "faults-per-s": r.faults_per_s,
                    "evictions-per-s": r.evictions_per_s,
                })
            })
            .collect();
        let capacity: serde_json::Map<String, Value> = self
            .engines
            .iter()
            .zip(&self.capacity)
            .map(|(e, c)| (e.clone(), json!(c)))
            .collect();
        json!({
            "interval-ms": self.interval.as_millis() as u64,
            "engine-capacity": capacity,
            "clients": clients,
        })
    }
}

/// Cells right-aligned in fixed-width columns (the client id left-aligned).
fn line(cells: &[String]) -> String {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i == 0 {
            s.push_str(&format!("{c:<8}"));
        } else {
            s.push_str(&format!(" {c:>10}"));
        }
    }
    s
}

/// A byte count for a narrow column.
fn bytes(b: u64) -> String {
    match b {
        b if b >= 10 << 30 => format!("{}G", b >> 30),
        b if b >= 10 << 20 => format!("{}M", b >> 20),
        b if b >= 10 << 10 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// The summary above the table.
pub fn summary(cur: &Sample, clients_shown: usize) -> Vec<String> {
    let mib = |k: &str| cur.device_value(k).map_or(0, |v| v >> 20);
    let device = match cur.clients.iter().find_map(|c| c.pdev.as_deref()) {
        Some(pdev) => format!("gpud {pdev}"),
        None => "gpud".to_string(),
    };
    let mut out = vec![format!(
        "{device}: {} clients, VRAM {}/{} MiB used, system {}/{} MiB used",
        cur.device_value("device-clients").unwrap_or(0),
        mib("device-memory-vram-total").saturating_sub(mib("device-memory-vram-free")),
        mib("device-memory-vram-total"),
        mib("device-memory-system-total").saturating_sub(mib("device-memory-system-free")),
        mib("device-memory-system-total"),
    )];
    let clients = cur.device_value("device-clients").unwrap_or(0);
    if clients > 0 && clients_shown == 0 {
        out.push(
            "clients' blocks are shown only to root or gpud's admin uid (see docs/uapi.md)".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, clients: &[(u64, u64, u64, u64)]) -> Sample {
        // (client, copy ns, compute ns, faults)
        let mut text = String::from(
            "device-clients: 2\ndevice-memory-vram-total: 16777216 bytes\n\
             device-memory-vram-free: 8388608 bytes\n",
        );
        for &(c, copy, compute, faults) in clients {
            text += &format!(
                "client-id: {c}\nclient-vms: 1\nclient-queues: 2\ndrm-client-id: {c}\n\
                 drm-engine-copy: {copy} ns\ndrm-engine-compute: {compute} ns\n\
                 drm-resident-vram: 4096\ngpud-faults: {faults}\n"
            );
        }
        Sample::parse(&text, at).expect("sample")
    }

    #[test]
    fn busy_percentages_and_rates_come_from_the_difference_of_two_samples() {
        let t0 = Instant::now();
        let prev = sample(t0, &[(1, 0, 0, 0), (2, 500_000_000, 0, 10)]);
        let cur = sample(
            t0 + Duration::from_secs(2),
            &[
                (1, 0, 0, 0),
                (2, 1_500_000_000, 200_000_000, 30),
                (3, 0, 0, 4),
            ],
        );
        let t = rows(&prev, &cur);
        assert_eq!(t.engines, ["copy", "compute"]);
        let r2 = t.rows.iter().find(|r| r.client == 2).expect("client 2");
        assert!((r2.busy[0] - 50.0).abs() < 1e-9, "{r2:?}");
        assert!((r2.busy[1] - 10.0).abs() < 1e-9, "{r2:?}");
        assert!((r2.faults_per_s - 10.0).abs() < 1e-9);
        assert_eq!(r2.vram, 4096);
        let r1 = t.rows.iter().find(|r| r.client == 1).expect("client 1");
        assert_eq!(r1.busy, [0.0, 0.0]);
        // New since the first sample: counted from zero.
        let r3 = t.rows.iter().find(|r| r.client == 3).expect("client 3");
        assert!((r3.faults_per_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn busy_is_a_share_of_the_engines_capacity_and_shared_memory_and_pdev_show() {
        let t0 = Instant::now();
        let block = |copy_ns: u64| {
            format!(
                "device-clients: 1\nclient-id: 5\ndrm-client-id: 5\ndrm-pdev: 0000:00:04.0\n\
                 drm-engine-copy: {copy_ns} ns\ndrm-engine-capacity-copy: 4\n\
                 drm-shared-vram: 8192\ndrm-shared-system: 4096\n"
            )
        };
        let prev = Sample::parse(&block(0), t0).expect("sample");
        let cur =
            Sample::parse(&block(2_000_000_000), t0 + Duration::from_secs(1)).expect("sample");
        let t = rows(&prev, &cur);
        // Two seconds of queue time in one second on an engine of four queues: half of it.
        assert!((t.rows[0].busy[0] - 50.0).abs() < 1e-9, "{:?}", t.rows[0]);
        assert_eq!(t.capacity, [4, 1], "compute reports none: 1");
        assert_eq!(t.rows[0].shared, 12288);
        let lines = t.lines(Sort::default());
        assert!(lines[0].contains("SHARED"), "{lines:?}");
        assert!(lines[1].contains(" 12K "), "{lines:?}");
        assert_eq!(t.json()["engine-capacity"]["copy"], 4);
        assert_eq!(t.json()["clients"][0]["shared"], 12288);
        assert!(summary(&cur, 1)[0].starts_with("gpud 0000:00:04.0: 1 clients"));
    }

    #[test]
    fn sorting_by_each_column_and_the_rendered_table() {
        let t0 = Instant::now();
        let prev = sample(t0, &[]);
        let cur = sample(
            t0 + Duration::from_secs(1),
            &[(1, 100, 900_000_000, 0), (2, 500_000_000, 0, 5)],
        );
        let mut t = rows(&prev, &cur);
        t.sort(Sort::default());
        assert_eq!(t.rows[0].client, 2, "copy% descending");
        t.sort(Sort {
            column: Column::Engine(1),
            descending: true,
        });
        assert_eq!(t.rows[0].client, 1, "compute% descending");
        t.sort(Sort {
            column: Column::Client,
            descending: false,
        });
        assert_eq!(t.rows[0].client, 1);
        let lines = t.lines(Sort {
            column: Column::Faults,
            descending: true,
        });
        assert!(lines[0].starts_with("CLIENT"), "{lines:?}");
        assert!(lines[0].contains("COPY%") && lines[0].contains("FAULTS/Sv"));
        assert!(
            lines[2].starts_with("2 ") && lines[2].contains("50.0"),
            "{lines:?}"
        );
        let j = t.json();
        assert_eq!(j["clients"][1]["busy-percent"]["copy"], 50.0);
        assert_eq!(j["interval-ms"], 1000);
        assert_eq!(
            summary(&cur, 2)[0],
            "gpud: 2 clients, VRAM 8/16 MiB used, system 0/0 MiB used"
        );
    }
}
