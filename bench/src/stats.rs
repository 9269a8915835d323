//! Latency samples, percentiles and the per-run report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One request as the load generator saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was due (open loop) or started (closed loop), from the run's start.
    pub due: Duration,
    /// From `due` to the last byte of the answer: what a caller waits,
    /// including any lateness of the load generator (no coordinated omission).
    pub latency: Duration,
    /// From the moment it was actually sent to the last byte.
    pub service: Duration,
    /// From `due` to the first byte of the body (streams) or the headers.
    pub ttfb: Duration,
    /// How late the load generator sent it.
    pub lag: Duration,
    /// `None` when it succeeded, otherwise what went wrong.
    pub error: Option<String>,
    /// Counted in the results (not warm-up, ended inside the window).
    pub measured: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Percentiles {
    /// Nearest-rank percentiles, in milliseconds.
    pub fn of(mut values: Vec<Duration>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let n = values.len();
        let at = |q: f64| {
            let rank = (q * n as f64).ceil() as usize;
            ms(values[rank.clamp(1, n) - 1])
        };
        let total: Duration = values.iter().sum();
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(values[n - 1]),
            mean: ms(total) / n as f64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    /// `open` (fixed rate) or `closed` (fixed concurrency).
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub stream: bool,
    pub duration_s: f64,
    /// Every request sent, warm-up included.
    pub sent: u64,
    /// Requests inside the measured window.
    pub measured: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful requests per second inside the measured window.
    pub throughput_rps: f64,
    pub latency_ms: Percentiles,
    pub service_ms: Percentiles,
    pub ttfb_ms: Percentiles,
    pub max_lag_ms: f64,
}

pub struct RunInfo {
    pub label: String,
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub stream: bool,
    pub window: Duration,
}

impl Report {
    pub fn build(info: RunInfo, samples: &[Sample]) -> Self {
        let measured: Vec<&Sample> = samples.iter().filter(|s| s.measured).collect();
        let ok: Vec<&Sample> = measured
            .iter()
            .copied()
            .filter(|s| s.error.is_none())
            .collect();
        let mut error_kinds = BTreeMap::new();
        for s in samples {
            if let Some(e) = &s.error {
                *error_kinds.entry(e.clone()).or_insert(0) += 1;
            }
        }
        let window = info.window.as_secs_f64();
        Self {
            label: info.label,
            mode: info.mode,
            rate: info.rate,
            concurrency: info.concurrency,
            stream: info.stream,
            duration_s: window,
            sent: samples.len() as u64,
            measured: measured.len() as u64,
            ok: ok.len() as u64,
            errors: samples.iter().filter(|s| s.error.is_some()).count() as u64,
            error_kinds,
            throughput_rps: if window > 0.0 {
                ok.len() as f64 / window
            } else {
                0.0
            },
            latency_ms: Percentiles::of(ok.iter().map(|s| s.latency).collect()),
            service_ms: Percentiles::of(ok.iter().map(|s| s.service).collect()),
            ttfb_ms: Percentiles::of(ok.iter().map(|s| s.ttfb).collect()),
            max_lag_ms: samples.iter().map(|s| ms(s.lag)).fold(0.0, f64::max),
        }
    }

    pub fn print(&self) {
        let shape = match (self.rate, self.concurrency) {
            (Some(r), _) => format!("open loop at {r:.0} req/s"),
            (_, Some(c)) => format!("closed loop, {c} concurrent"),
            _ => self.mode.to_string(),
        };
        let stream = if self.stream { ", streaming" } else { "" };
        println!(
            "[{}] {shape}{stream}, {:.0}s measured",
            self.label, self.duration_s
        );
        println!(
            "  requests: sent {} (warm-up included), measured {}, ok {}, errors {}",
            self.sent, self.measured, self.ok, self.errors
        );
        for (kind, n) in &self.error_kinds {
            println!("    error x{n}: {kind}");
        }
        let l = &self.latency_ms;
        println!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if self.stream {
            let t = &self.ttfb_ms;
            println!(
                "  first byte ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
                t.p50, t.p90, t.p99, t.max
            );
        }
        println!(
            "  throughput: {:.1} ok req/s   (load generator max lag {:.3} ms)",
            self.throughput_rps, self.max_lag_ms
        );
    }
}
