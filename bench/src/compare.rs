//! One run that measures the mock directly and through aigw at the same rate,
//! then the highest throughput through aigw, then checks that every request
//! sent to aigw was recorded as events in PostgreSQL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::load::{Target, closed_loop, open_loop_samples};
use crate::stats::{Report, RunInfo};

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Base URL of the mock upstream, called directly, e.g. http://127.0.0.1:9090/v1.
    #[arg(long)]
    pub direct_url: String,

    /// API key sent to the mock directly.
    #[arg(long, default_value = "sk-bench")]
    pub direct_key: String,

    /// Base URL of aigw, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    pub gateway_url: String,

    /// aigw API key.
    #[arg(long, env = "AIGW_BENCH_KEY", hide_env_values = true)]
    pub key: String,

    /// A peer gateway in front of the same mock, measured in the same run
    /// (interleaved with the mock and aigw in every round, then its own
    /// throughput run), e.g. http://127.0.0.1:8787/v1.
    #[arg(long)]
    pub peer_url: Option<String>,

    /// The peer's name in the report.
    #[arg(long, default_value = "peer")]
    pub peer_label: String,

    /// API key sent to the peer.
    #[arg(long, default_value = "sk-bench")]
    pub peer_key: String,

    /// Extra header sent to the peer, `name: value` (repeatable): how the
    /// peer is told where the upstream is.
    #[arg(long = "peer-header")]
    pub peer_headers: Vec<String>,

    /// Model to ask for (served by the mock provider).
    #[arg(long, default_value = "bench-model")]
    pub model: String,

    /// Rate of the latency comparison, requests per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,

    /// Measured time of each latency run.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// The latency runs alternate direct and aigw in this many slices of
    /// `duration / rounds`, so that a burst of noise on a shared machine
    /// hits both alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,

    /// Unmeasured load before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Ask for streamed answers.
    #[arg(long)]
    pub stream: bool,

    /// Workers of the closed-loop throughput runs.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Measured time of the throughput run through aigw (0s skips it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub throughput_duration: Duration,

    /// Measured time of the throughput run against the mock directly, which
    /// shows what the load generator and mock manage alone (0s skips it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub direct_throughput_duration: Duration,

    /// Pause between runs, to let the gateway drain.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub pause: Duration,

    /// aigw's PostgreSQL database; when given, checks that every request sent
    /// to aigw ended as a `RequestCompleted` or `RequestFailed` event.
    #[arg(long, env = "AIGW_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How long to wait for the recording to catch up after the load.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub record_timeout: Duration,

    /// Target: most p50 latency aigw may add at `--rate`, in ms.
    #[arg(long, default_value_t = 2.0)]
    pub target_p50_ms: f64,

    /// Target: most p99 latency aigw may add at `--rate`, in ms.
    #[arg(long, default_value_t = 10.0)]
    pub target_p99_ms: f64,

    /// Target: least throughput through aigw, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    pub target_rps: f64,

    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub enforce: bool,

    /// Also write every report and the verdicts as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Recording {
    expected: u64,
    terminal_events: i64,
    completed: i64,
    failed: i64,
    distinct_requests: i64,
    request_events: i64,
    caught_up_after_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    measured: f64,
    target: String,
    pass: bool,
}

/// The peer gateway's figures from the same run.
#[derive(Debug, Serialize)]
struct Peer {
    label: String,
    latency: Report,
    throughput: Option<Report>,
    overhead_p50_ms: f64,
    overhead_p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    direct: Report,
    gateway: Report,
    direct_throughput: Option<Report>,
    gateway_throughput: Option<Report>,
    overhead_p50_ms: f64,
    overhead_p99_ms: f64,
    peer: Option<Peer>,
    upstream_calls_by_gateway: Option<u64>,
    recording: Option<Recording>,
    checks: Vec<Check>,
}

/// How many chat requests the mock has served, if it is our mock.
async fn mock_count(direct_url: &str) -> Option<u64> {
    let mut url = reqwest::Url::parse(direct_url).ok()?;
    url.set_path("/_bench/stats");
    let v: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    v.get("chat_requests")?.as_u64()
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let direct = Target::new(&args.direct_url, &args.direct_key, &args.model, args.stream)?;
    let gateway = Target::new(&args.gateway_url, &args.key, &args.model, args.stream)?;

    // Fail fast on a misconfiguration rather than after a minute of errors.
    direct
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the mock at {} does not answer: {e}", args.direct_url))?;
    gateway
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("aigw at {} does not answer: {e}", args.gateway_url))?;
    let mut gateway_sent = 1u64;
    let peer = match &args.peer_url {
        None => None,
        Some(url) => {
            let peer = Target::new(url, &args.peer_key, &args.model, args.stream)?
                .with_headers(&args.peer_headers)?;
            peer.send().await.map_err(|e| {
                anyhow::anyhow!("the peer {} at {url} does not answer: {e}", args.peer_label)
            })?;
            Some(peer)
        }
    };

    println!(
        "== latency at {:.0} req/s: mock directly, then through aigw{}, alternating in {} rounds ({:?} measured each + {:?} warm-up)",
        args.rate,
        match &peer {
            Some(_) => format!(", then through {}", args.peer_label),
            None => String::new(),
        },
        args.rounds,
        args.duration,
        args.warmup
    );
    let rounds = args.rounds.max(1);
    let slice = args.duration / rounds;
    let (mut direct_samples, mut gateway_samples) = (Vec::new(), Vec::new());
    let mut peer_samples = Vec::new();
    let mut upstream = Some(0u64);
    for round in 0..rounds {
        let warmup = if round == 0 {
            args.warmup
        } else {
            Duration::ZERO
        };
        direct_samples.extend(open_loop_samples(&direct, args.rate, slice, warmup).await?);
        tokio::time::sleep(args.pause).await;
        let before = mock_count(&args.direct_url).await;
        gateway_samples.extend(open_loop_samples(&gateway, args.rate, slice, warmup).await?);
        let after = mock_count(&args.direct_url).await;
        upstream = upstream
            .zip(before.zip(after))
            .map(|(u, (b, a))| u + (a - b));
        tokio::time::sleep(args.pause).await;
        if let Some(peer) = &peer {
            peer_samples.extend(open_loop_samples(peer, args.rate, slice, warmup).await?);
            tokio::time::sleep(args.pause).await;
        }
    }
    let info = |label: &str| RunInfo {
        label: label.into(),
        mode: "open",
        rate: Some(args.rate),
        concurrency: None,
        stream: args.stream,
        window: slice * rounds,
    };
    let direct_report = Report::build(info("direct"), &direct_samples);
    let gateway_report = Report::build(info("aigw"), &gateway_samples);
    gateway_sent += gateway_report.sent;
    direct_report.print();
    gateway_report.print();

    let overhead_p50 = gateway_report.latency_ms.p50 - direct_report.latency_ms.p50;
    let overhead_p99 = gateway_report.latency_ms.p99 - direct_report.latency_ms.p99;
    println!(
        "  => aigw overhead at {:.0} req/s: p50 {:+.3} ms, p99 {:+.3} ms",
        args.rate, overhead_p50, overhead_p99
    );
    let peer_report = peer.as_ref().map(|_| {
        let r = Report::build(info(&args.peer_label), &peer_samples);
        r.print();
        let (p50, p99) = (
            r.latency_ms.p50 - direct_report.latency_ms.p50,
            r.latency_ms.p99 - direct_report.latency_ms.p99,
        );
        println!(
            "  => {} overhead at {:.0} req/s: p50 {p50:+.3} ms, p99 {p99:+.3} ms",
            args.peer_label, args.rate
        );
        (r, p50, p99)
    });

    let mut direct_tp = None;
    if !args.direct_throughput_duration.is_zero() {
        tokio::time::sleep(args.pause).await;
        println!(
            "== throughput of the mock directly ({} concurrent, {:?})",
            args.concurrency, args.direct_throughput_duration
        );
        let r = closed_loop(
            &direct,
            "direct max".into(),
            args.concurrency,
            args.direct_throughput_duration,
            args.warmup.min(Duration::from_secs(1)),
        )
        .await?;
        r.print();
        direct_tp = Some(r);
    }

    let mut gateway_tp = None;
    if !args.throughput_duration.is_zero() {
        tokio::time::sleep(args.pause).await;
        println!(
            "== throughput through aigw ({} concurrent, {:?})",
            args.concurrency, args.throughput_duration
        );
        let before = mock_count(&args.direct_url).await;
        let r = closed_loop(
            &gateway,
            "aigw max".into(),
            args.concurrency,
            args.throughput_duration,
            args.warmup,
        )
        .await?;
        let after = mock_count(&args.direct_url).await;
        gateway_sent += r.sent;
        upstream = upstream
            .zip(before.zip(after))
            .map(|(u, (b, a))| u + (a - b));
        r.print();
        gateway_tp = Some(r);
    }

    let mut peer_tp = None;
    if let Some(target) = peer
        .as_ref()
        .filter(|_| !args.throughput_duration.is_zero())
    {
        tokio::time::sleep(args.pause).await;
        println!(
            "== throughput through {} ({} concurrent, {:?})",
            args.peer_label, args.concurrency, args.throughput_duration
        );
        let r = closed_loop(
            target,
            format!("{} max", args.peer_label),
            args.concurrency,
            args.throughput_duration,
            args.warmup,
        )
        .await?;
        r.print();
        peer_tp = Some(r);
    }
    let load_ended = Instant::now();

    let recording = match &args.database_url {
        None => None,
        Some(url) => {
            println!("== recording: waiting for {gateway_sent} requests to be recorded as events");
            Some(check_recording(url, gateway_sent, load_ended, args.record_timeout).await?)
        }
    };

    // Verdicts.
    let mut checks = vec![
        Check {
            name: "p50 overhead at rate (ms)",
            measured: overhead_p50,
            target: format!("<= {}", args.target_p50_ms),
            pass: overhead_p50 <= args.target_p50_ms && gateway_report.errors == 0,
        },
        Check {
            name: "p99 overhead at rate (ms)",
            measured: overhead_p99,
            target: format!("<= {}", args.target_p99_ms),
            pass: overhead_p99 <= args.target_p99_ms && gateway_report.errors == 0,
        },
    ];
    if let Some(r) = &gateway_tp {
        checks.push(Check {
            name: "throughput through aigw (req/s)",
            measured: r.throughput_rps,
            target: format!(">= {}", args.target_rps),
            pass: r.throughput_rps >= args.target_rps && r.errors == 0,
        });
    }
    if let Some(r) = &recording {
        checks.push(Check {
            name: "requests recorded as events",
            measured: r.terminal_events as f64,
            target: format!("== {} sent", r.expected),
            pass: r.terminal_events == r.expected as i64
                && r.distinct_requests == r.terminal_events,
        });
    }

    println!();
    println!("================ summary ================");
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        format!("at {:.0} req/s", args.rate),
        "direct",
        "aigw",
        "overhead"
    );
    let (d, g) = (&direct_report.latency_ms, &gateway_report.latency_ms);
    for (name, dv, gv) in [
        ("p50 latency (ms)", d.p50, g.p50),
        ("p90 latency (ms)", d.p90, g.p90),
        ("p99 latency (ms)", d.p99, g.p99),
        ("max latency (ms)", d.max, g.max),
    ] {
        println!("{name:<28} {dv:>10.3} {gv:>10.3} {:>+10.3}", gv - dv);
    }
    println!(
        "{:<28} {:>10} {:>10}",
        "errors", direct_report.errors, gateway_report.errors
    );
    if let Some(r) = &direct_tp {
        println!(
            "max throughput, direct:      {:.0} req/s ({} concurrent, p50 {:.2} ms, p99 {:.2} ms)",
            r.throughput_rps, args.concurrency, r.latency_ms.p50, r.latency_ms.p99
        );
    }
    if let Some(r) = &gateway_tp {
        println!(
            "max throughput, aigw:        {:.0} req/s ({} concurrent, p50 {:.2} ms, p99 {:.2} ms, {} errors)",
            r.throughput_rps, args.concurrency, r.latency_ms.p50, r.latency_ms.p99, r.errors
        );
    }
    if let Some((r, p50, p99)) = &peer_report {
        println!(
            "{}: p50 {:.3} ms, p99 {:.3} ms, overhead p50 {p50:+.3} ms, p99 {p99:+.3} ms, {} errors",
            args.peer_label, r.latency_ms.p50, r.latency_ms.p99, r.errors
        );
        if let Some(t) = &peer_tp {
            println!(
                "max throughput, {}: {:.0} req/s ({} concurrent, p50 {:.2} ms, p99 {:.2} ms, {} errors)",
                args.peer_label,
                t.throughput_rps,
                args.concurrency,
                t.latency_ms.p50,
                t.latency_ms.p99,
                t.errors
            );
            if let Some(g) = &gateway_tp {
                println!(
                    "throughput, aigw / {}:  {:.2}x",
                    args.peer_label,
                    g.throughput_rps / t.throughput_rps.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    if let Some(u) = upstream {
        let answered = (gateway_report.sent - gateway_report.errors)
            + gateway_tp.as_ref().map_or(0, |r| r.sent - r.errors);
        println!("upstream calls made by aigw:  {u} (requests answered ok by aigw: {answered})");
    }
    if let Some(r) = &recording {
        println!(
            "recorded: {} terminal events ({} completed, {} failed) for {} requests sent; {} request events in all ({:.1} per request){}",
            r.terminal_events,
            r.completed,
            r.failed,
            r.expected,
            r.request_events,
            r.request_events as f64 / r.distinct_requests.max(1) as f64,
            match r.caught_up_after_s {
                Some(s) => format!("; caught up {s:.2}s after the load ended"),
                None => "; did NOT catch up in time".into(),
            }
        );
    }
    println!("-----------------------------------------");
    let mut all_pass = true;
    for c in &checks {
        all_pass &= c.pass;
        println!(
            "{:<4} {:<34} {:>10.3}  (target {})",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.measured,
            c.target
        );
    }

    let summary = Summary {
        direct: direct_report,
        gateway: gateway_report,
        direct_throughput: direct_tp,
        gateway_throughput: gateway_tp,
        overhead_p50_ms: overhead_p50,
        overhead_p99_ms: overhead_p99,
        peer: peer_report.map(|(latency, p50, p99)| Peer {
            label: args.peer_label.clone(),
            latency,
            throughput: peer_tp,
            overhead_p50_ms: p50,
            overhead_p99_ms: p99,
        }),
        upstream_calls_by_gateway: upstream,
        recording,
        checks,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.enforce && !all_pass {
        anyhow::bail!("some targets were missed");
    }
    Ok(())
}

async fn check_recording(
    url: &str,
    expected: u64,
    load_ended: Instant,
    timeout: Duration,
) -> anyhow::Result<Recording> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to aigw's database")?;
    let mut caught_up = None;
    loop {
        let (terminal,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events WHERE aggregate_type = 'request' \
             AND event_type IN ('RequestCompleted', 'RequestFailed')",
        )
        .fetch_one(&pool)
        .await?;
        if terminal >= expected as i64 {
            caught_up = Some(load_ended.elapsed().as_secs_f64());
            break;
        }
        if load_ended.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (terminal, completed, failed, distinct, all): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           count(*) FILTER (WHERE event_type IN ('RequestCompleted', 'RequestFailed')), \
           count(*) FILTER (WHERE event_type = 'RequestCompleted'), \
           count(*) FILTER (WHERE event_type = 'RequestFailed'), \
           count(DISTINCT aggregate_id) FILTER (WHERE event_type IN ('RequestCompleted', 'RequestFailed')), \
           count(*) \
         FROM events WHERE aggregate_type = 'request'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(Recording {
        expected,
        terminal_events: terminal,
        completed,
        failed,
        distinct_requests: distinct,
        request_events: all,
        caught_up_after_s: caught_up,
    })
}
