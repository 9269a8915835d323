//! A/B latency comparison through the gateway: two request shapes (a
//! baseline and a variant, e.g. a model whose first provider fails, or a key
//! with limits and a budget) at the same rate, alternating in rounds so that
//! noise on a shared machine hits both alike. Reports success rates, both
//! latency distributions, the difference, and how many calls each counted
//! mock upstream served per request.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::load::{Target, open_loop_samples};
use crate::stats::{Percentiles, Report, RunInfo};

#[derive(Debug, Clone, Args)]
pub struct AbArgs {
    /// Name of the scenario, printed and stored in the JSON.
    #[arg(long, default_value = "ab")]
    pub name: String,

    /// Base URL of aigw (both sides), e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    pub url: String,

    /// Baseline: label, key and model.
    #[arg(long, default_value = "baseline")]
    pub label_a: String,
    #[arg(long, env = "AIGW_BENCH_KEY_A", hide_env_values = true)]
    pub key_a: String,
    #[arg(long, default_value = "bench-model")]
    pub model_a: String,

    /// Variant: label, key and model.
    #[arg(long, default_value = "variant")]
    pub label_b: String,
    #[arg(long, env = "AIGW_BENCH_KEY_B", hide_env_values = true)]
    pub key_b: String,
    #[arg(long, default_value = "bench-model")]
    pub model_b: String,

    /// Requests per second of every run.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,

    /// Measured time of each side (split into `--rounds` slices).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Alternate baseline and variant in this many slices.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,

    /// Unmeasured load before the first slice of each side.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Pause between slices.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub pause: Duration,

    /// A mock upstream whose served calls are counted per side, as
    /// `NAME=http://127.0.0.1:PORT` (repeatable).
    #[arg(long = "count", value_name = "NAME=URL")]
    pub counts: Vec<String>,

    /// Also measure this mock's own answer time directly (e.g. the failing
    /// upstream: the time of the failed attempt itself), errors included.
    #[arg(long)]
    pub direct_url: Option<String>,

    /// Target: most p50 latency the variant may add, in ms.
    #[arg(long)]
    pub target_p50_ms: Option<f64>,

    /// Target: most p99 latency the variant may add, in ms (beyond the
    /// direct p99 of `--direct-url` when given).
    #[arg(long)]
    pub target_p99_ms: Option<f64>,

    /// Exit with status 1 when a target is missed (or a request fails).
    #[arg(long)]
    pub enforce: bool,

    /// Also write the reports as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Counted {
    name: String,
    calls_a: u64,
    calls_b: u64,
    per_request_a: f64,
    per_request_b: f64,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    measured: f64,
    target: String,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    a: Report,
    b: Report,
    success_rate_a: f64,
    success_rate_b: f64,
    delta_p50_ms: f64,
    delta_p99_ms: f64,
    direct_ms: Option<Percentiles>,
    counted: Vec<Counted>,
    checks: Vec<Check>,
}

/// Calls (answered or failed) a mock has served so far.
async fn mock_calls(base: &str) -> anyhow::Result<u64> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("bad --count URL {base}"))?;
    url.set_path("/_bench/stats");
    let v: Value = reqwest::get(url).await?.json().await?;
    v.get("chat_requests")
        .and_then(Value::as_u64)
        .context("the mock's /_bench/stats has no chat_requests")
}

async fn snapshot(counts: &[(String, String)]) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(counts.len());
    for (_, url) in counts {
        out.push(mock_calls(url).await?);
    }
    Ok(out)
}

fn success_rate(r: &Report) -> f64 {
    if r.measured == 0 {
        0.0
    } else {
        100.0 * r.ok as f64 / r.measured as f64
    }
}

pub async fn run(args: AbArgs) -> anyhow::Result<()> {
    let a = Target::new(&args.url, &args.key_a, &args.model_a, false)?;
    let b = Target::new(&args.url, &args.key_b, &args.model_b, false)?;
    let counts: Vec<(String, String)> = args
        .counts
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .with_context(|| format!("--count wants NAME=URL, got {c}"))
        })
        .collect::<anyhow::Result<_>>()?;

    a.send()
        .await
        .map_err(|e| anyhow::anyhow!("{} does not answer: {e}", args.label_a))?;
    b.send()
        .await
        .map_err(|e| anyhow::anyhow!("{} does not answer: {e}", args.label_b))?;

    println!(
        "== {}: {} vs {} at {:.0} req/s, alternating in {} rounds ({:?} measured each + {:?} warm-up)",
        args.name, args.label_a, args.label_b, args.rate, args.rounds, args.duration, args.warmup
    );
    let rounds = args.rounds.max(1);
    let slice = args.duration / rounds;
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let mut calls_a = vec![0u64; counts.len()];
    let mut calls_b = vec![0u64; counts.len()];
    for round in 0..rounds {
        let warmup = if round == 0 {
            args.warmup
        } else {
            Duration::ZERO
        };
        let before = snapshot(&counts).await?;
        sa.extend(open_loop_samples(&a, args.rate, slice, warmup).await?);
        let after = snapshot(&counts).await?;
        for (i, c) in calls_a.iter_mut().enumerate() {
            *c += after[i] - before[i];
        }
        tokio::time::sleep(args.pause).await;
        let before = snapshot(&counts).await?;
        sb.extend(open_loop_samples(&b, args.rate, slice, warmup).await?);
        let after = snapshot(&counts).await?;
        for (i, c) in calls_b.iter_mut().enumerate() {
            *c += after[i] - before[i];
        }
        tokio::time::sleep(args.pause).await;
    }
    let info = |label: &str| RunInfo {
        label: label.into(),
        mode: "open",
        rate: Some(args.rate),
        concurrency: None,
        stream: false,
        window: slice * rounds,
    };
    let ra = Report::build(info(&args.label_a), &sa);
    let rb = Report::build(info(&args.label_b), &sb);
    ra.print();
    rb.print();

    let direct_ms = match &args.direct_url {
        Some(url) => {
            // Its own answer time, errors included (a failing mock answers 5xx).
            let t = Target::new(url, "sk-bench", &args.model_b, false)?;
            let secs = (args.duration / rounds).min(Duration::from_secs(5));
            let samples = open_loop_samples(&t, args.rate, secs, Duration::from_secs(1)).await?;
            let p = Percentiles::of(
                samples
                    .iter()
                    .filter(|s| s.measured)
                    .map(|s| s.service)
                    .collect(),
            );
            println!(
                "[{url} directly, errors included] {:.0} req/s, {secs:?}: p50 {:.3}  p99 {:.3}  max {:.3} ms",
                args.rate, p.p50, p.p99, p.max
            );
            Some(p)
        }
        None => None,
    };

    let (sent_a, sent_b) = (ra.sent.max(1) as f64, rb.sent.max(1) as f64);
    let counted: Vec<Counted> = counts
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Counted {
            name: name.clone(),
            calls_a: calls_a[i],
            calls_b: calls_b[i],
            per_request_a: calls_a[i] as f64 / sent_a,
            per_request_b: calls_b[i] as f64 / sent_b,
        })
        .collect();
    for c in &counted {
        println!(
            "  upstream {}: {} calls during {} ({:.3}/request), {} during {} ({:.3}/request)",
            c.name,
            c.calls_a,
            args.label_a,
            c.per_request_a,
            c.calls_b,
            args.label_b,
            c.per_request_b
        );
    }

    let delta_p50 = rb.latency_ms.p50 - ra.latency_ms.p50;
    let delta_p99 = rb.latency_ms.p99 - ra.latency_ms.p99;
    let (rate_a, rate_b) = (success_rate(&ra), success_rate(&rb));
    println!(
        "\n{}: success {} {rate_a:.2} %, {} {rate_b:.2} %",
        args.name, args.label_a, args.label_b
    );
    println!(
        "{}: {} adds p50 {delta_p50:+.3} ms ({:.3} -> {:.3}), p99 {delta_p99:+.3} ms ({:.3} -> {:.3})",
        args.name,
        args.label_b,
        ra.latency_ms.p50,
        rb.latency_ms.p50,
        ra.latency_ms.p99,
        rb.latency_ms.p99
    );

    let mut checks = vec![Check {
        name: format!("{} success rate", args.label_b),
        measured: rate_b,
        target: "100 %".into(),
        pass: rb.errors == 0 && rb.measured > 0,
    }];
    if let Some(t) = args.target_p50_ms {
        checks.push(Check {
            name: "added p50 (ms)".into(),
            measured: delta_p50,
            target: format!("< {t} ms"),
            pass: delta_p50 < t,
        });
    }
    if let Some(t) = args.target_p99_ms {
        let own = direct_ms.map(|p| p.p99).unwrap_or(0.0);
        let beyond = delta_p99 - own;
        checks.push(Check {
            name: if direct_ms.is_some() {
                "added p99 beyond the failing attempt's own p99 (ms)".into()
            } else {
                "added p99 (ms)".into()
            },
            measured: beyond,
            target: format!("< {t} ms"),
            pass: beyond < t,
        });
    }
    for c in &checks {
        println!(
            "  {} {}: {:.3} (target {})",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.measured,
            c.target
        );
    }
    let all_pass = checks.iter().all(|c| c.pass);
    let summary = Summary {
        name: args.name.clone(),
        a: ra,
        b: rb,
        success_rate_a: rate_a,
        success_rate_b: rate_b,
        delta_p50_ms: delta_p50,
        delta_p99_ms: delta_p99,
        direct_ms,
        counted,
        checks,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.enforce && !all_pass {
        anyhow::bail!("{}: a target was missed", args.name);
    }
    Ok(())
}
