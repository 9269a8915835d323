//! Micro-benchmark of the routing decision: `Router::plan` over a handful
//! of targets, for every strategy, timed call by call.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_dispatcher::routing::Router;
use aigw_events::provider::{Price, ProviderSpec};
use aigw_events::{Strategy, Usage};
use aigw_runtime::{ProviderEntry, Target};
use chrono::Utc;
use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use crate::stats::Percentiles;

#[derive(Debug, Clone, Args)]
pub struct RoutingArgs {
    /// Timed calls per strategy.
    #[arg(long, default_value_t = 100_000)]
    pub iterations: usize,

    /// Targets (providers serving the model) per decision.
    #[arg(long, default_value_t = 5)]
    pub targets: usize,

    /// Target: most a decision may cost at p99, in microseconds.
    #[arg(long, default_value_t = 50.0)]
    pub target_us: f64,

    /// Exit with status 1 when a strategy misses the target.
    #[arg(long)]
    pub enforce: bool,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    strategy: String,
    iterations: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    pass: bool,
}

fn targets(n: usize) -> Vec<Target> {
    (0..n)
        .map(|i| {
            let mut spec = ProviderSpec {
                name: format!("provider-{i}"),
                models: vec!["bench-model".into()],
                ..ProviderSpec::default()
            };
            // Different prices and weights, so every strategy has work to do.
            let price = 150_000 + 97_000 * ((i as i64 * 7) % n as i64);
            spec.prices
                .insert("bench-model".into(), Price::tokens(price, 4 * price));
            Target {
                provider: Arc::new(ProviderEntry {
                    id: Uuid::now_v7(),
                    spec,
                    created_at: Utc::now(),
                    updated_at: Utc::now(),
                }),
                model: "bench-model".into(),
                weight: 1 + (i as u32 * 3) % 5,
            }
        })
        .collect()
}

fn us(ms: f64) -> f64 {
    ms * 1000.0
}

pub fn run(args: RoutingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be positive");
    let router = Router::new(Some(42));
    let targets = targets(args.targets.max(1));
    // Latency estimates for all but the last target (as after some traffic;
    // one never measured, which the latency strategy tries first).
    for (i, t) in targets
        .iter()
        .enumerate()
        .take(targets.len().saturating_sub(1))
    {
        router.observe_latency(t, 80.0 + 35.0 * ((i * 5) % 7) as f64);
    }
    let estimate = Usage {
        prompt_tokens: 1_200,
        completion_tokens: 4_096,
        ..Default::default()
    };
    let strategies = [
        ("priority", Strategy::Priority),
        ("weighted", Strategy::Weighted),
        ("cost", Strategy::Cost),
        ("latency", Strategy::Latency),
        ("auto", Strategy::Auto),
    ];
    println!(
        "== routing decision: Router::plan over {} targets, {} timed calls per strategy (the per-request clone of the target list not timed)",
        targets.len(),
        args.iterations
    );
    let mut rows = Vec::new();
    for (name, strategy) in strategies {
        // Warm-up: caches, allocator.
        for _ in 0..args.iterations.min(10_000) {
            black_box(router.plan(black_box(targets.clone()), strategy, estimate));
        }
        let mut times = Vec::with_capacity(args.iterations);
        let all = Instant::now();
        for _ in 0..args.iterations {
            let input = targets.clone();
            let start = Instant::now();
            let plan = router.plan(black_box(input), strategy, estimate);
            let took = start.elapsed();
            black_box(&plan);
            drop(plan);
            times.push(took);
        }
        let wall = all.elapsed();
        let p = Percentiles::of(times.clone());
        let total: Duration = times.iter().sum();
        let mean_us = total.as_secs_f64() * 1e6 / args.iterations as f64;
        let row = Row {
            strategy: name.into(),
            iterations: args.iterations,
            mean_us,
            p50_us: us(p.p50),
            p99_us: us(p.p99),
            p999_us: us(p.p999),
            max_us: us(p.max),
            pass: us(p.p99) < args.target_us,
        };
        println!(
            "  {name:<9} mean {:7.3} us  p50 {:7.3} us  p99 {:7.3} us  p99.9 {:7.3} us  max {:8.1} us   ({:.0} ms for the loop)  {}",
            row.mean_us,
            row.p50_us,
            row.p99_us,
            row.p999_us,
            row.max_us,
            wall.as_secs_f64() * 1000.0,
            if row.pass { "PASS" } else { "FAIL" }
        );
        rows.push(row);
    }
    let all_pass = rows.iter().all(|r| r.pass);
    println!(
        "target: p99 < {} us per decision: {}",
        args.target_us,
        if all_pass { "PASS" } else { "FAIL" }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
    }
    if args.enforce && !all_pass {
        anyhow::bail!("a routing strategy missed the target");
    }
    Ok(())
}
