//! Benchmark reports: an ordered list of named values, printed as a table or one JSON line.

use serde_json::{Map, Value};
use std::time::Instant;

/// The results of one benchmark group.
pub struct Report {
    group: &'static str,
    values: Vec<(String, Value)>,
}

impl Report {
    /// An empty report for `group`.
    pub fn new(group: &'static str) -> Self {
        Self {
            group,
            values: Vec::new(),
        }
    }

    /// Records one named result.
    pub fn push(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.values.push((key.to_string(), value.into()));
        self
    }

    /// One JSON object: `{"group": ..., key: value, ...}`.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        map.insert("group".into(), Value::from(self.group));
        for (k, v) in &self.values {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map).to_string()
    }

    /// A human-readable two-column table.
    pub fn to_table(&self) -> String {
        let width = self.values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("== {} ==\n", self.group);
        for (k, v) in &self.values {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

/// Median of `samples` nanoseconds (sorted in place).
pub fn median_ns(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

/// Times `iters` calls of `f` and returns the mean nanoseconds per call.
pub fn mean_ns(iters: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters.max(1) as f64
}

/// Measures the harness itself (an empty closure), so a reader can see the timing floor.
pub fn selftest() -> Report {
    let mut r = Report::new("selftest");
    let ns = mean_ns(1_000_000, || std::hint::black_box(()));
    r.push("empty_call_ns", ns);
    let mut samples: Vec<u64> = (0..1001)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    r.push("instant_now_median_ns", median_ns(&mut samples));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_group_and_keys_in_order() {
        let mut r = Report::new("g");
        r.push("a", 1u64).push("b", true);
        assert_eq!(r.to_json(), r#"{"group":"g","a":1,"b":true}"#);
    }

    #[test]
    fn median_of_odd_and_empty() {
        assert_eq!(median_ns(&mut [5, 1, 3]), 3);
        assert_eq!(median_ns(&mut []), 0);
    }
}
