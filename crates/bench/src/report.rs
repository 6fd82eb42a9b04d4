//! What a benchmark run measured, and how it is shown: a table for people,
//! JSON for scripts (`--json`), and an HTML page with charts (`--html`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latency percentiles reported everywhere (as percentages).
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 100.0];

/// One measured configuration: a line of the table.
pub struct Row {
    /// What was measured, e.g. `echo 100x1 16 B`.
    pub name: String,
    /// Completed operations (messages echoed, handshakes, deliveries, requests).
    pub ops: u64,
    /// Failed or wrong operations; any makes the run fail.
    pub errors: u64,
    /// Payload bytes carried one way.
    pub bytes: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Latencies in nanoseconds, when measured.
    pub latency: Option<Histogram<u64>>,
    /// Further figures: (name, value, unit).
    pub extra: Vec<(String, f64, String)>,
}

impl Row {
    /// A row with no extra figures.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ops: 0,
            errors: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency: None,
            extra: Vec::new(),
        }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6) of payload per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at a percentile, in microseconds.
    pub fn latency_us(&self, percentile: f64) -> Option<f64> {
        let h = self.latency.as_ref().filter(|h| !h.is_empty())?;
        Some(h.value_at_percentile(percentile) as f64 / 1000.0)
    }

    fn to_json(&self) -> Value {
        let latency = self.latency.as_ref().filter(|h| !h.is_empty()).map(|h| {
            let mut m = serde_json::Map::new();
            for p in PERCENTILES {
                m.insert(
                    format!("p{p}"),
                    json!(h.value_at_percentile(p) as f64 / 1000.0),
                );
            }
            m.insert("mean".into(), json!(h.mean() / 1000.0));
            m.insert("count".into(), json!(h.len()));
            Value::Object(m)
        });
        let extra: serde_json::Map<String, Value> = self
            .extra
            .iter()
            .map(|(k, v, _)| (k.clone(), json!(v)))
            .collect();
        json!({
            "name": self.name,
            "ops": self.ops,
            "errors": self.errors,
            "bytes": self.bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.rate(),
            "mb_per_sec": self.mb_per_s(),
            "latency_us": latency,
            "extra": extra,
        })
    }
}

/// A whole run: its mode, its parameters and its rows.
pub struct Report {
    /// The mode (`echo`, `latency`, ...).
    pub mode: &'static str,
    /// The target URL.
    pub url: String,
    /// What each operation is called in the table (`msgs`, `handshakes`...).
    pub unit: &'static str,
    /// The parameters, as given.
    pub params: Value,
    /// The measurements.
    pub rows: Vec<Row>,
}

impl Report {
    /// Total errors over all rows.
    pub fn errors(&self) -> u64 {
        self.rows.iter().map(|r| r.errors).sum()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode,
            "url": self.url,
            "params": self.params,
            "errors": self.errors(),
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    /// The report as a plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = format!("duplex bench {} {}\n", self.mode, self.url);
        let mut header = vec![
            "run".to_owned(),
            self.unit.to_owned(),
            "errors".into(),
            format!("{}/s", self.unit),
            "MB/s".into(),
        ];
        header.extend(["p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"].map(String::from));
        let extras: Vec<(String, String)> = self
            .rows
            .iter()
            .flat_map(|r| r.extra.iter().map(|(k, _, u)| (k.clone(), u.clone())))
            .fold(Vec::new(), |mut acc, e| {
                if !acc.contains(&e) {
                    acc.push(e);
                }
                acc
            });
        header.extend(
            extras
                .iter()
                .map(|(k, u)| format!("{k} {u}").trim().to_owned()),
        );
        let mut lines = vec![header];
        for r in &self.rows {
            let mut line = vec![
                r.name.clone(),
                r.ops.to_string(),
                r.errors.to_string(),
                format!("{:.0}", r.rate()),
                format!("{:.1}", r.mb_per_s()),
            ];
            for p in PERCENTILES {
                line.push(r.latency_us(p).map_or("-".into(), |v| format!("{v:.1}")));
            }
            for (k, _) in &extras {
                let v = r.extra.iter().find(|(n, _, _)| n == k);
                line.push(v.map_or("-".into(), |(_, v, _)| format!("{v:.2}")));
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in lines {
            let cells: Vec<String> = line
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A histogram for latencies in nanoseconds, 1 ns to 100 s, 3 digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}
