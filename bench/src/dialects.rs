//! What translating between dialects costs, two ways in one invocation:
//!
//! - **In process**: the translation work aigw does for one request of each
//!   dialect, timed call by call: the ingress parses and translates the
//!   caller's body to OpenAI chat, the dispatcher parses and translates it
//!   again (the wire carries the caller's body), and renders the OpenAI
//!   answer back in the caller's dialect. Chat does none of it.
//! - **Through aigw** (with `--url`): the same bodies at the same rate, to
//!   an OpenAI-compatible upstream (so every dialect but chat is
//!   translated), alternating chat, Messages, Responses and Gemini in
//!   rounds so that noise on a shared machine hits all alike; latency
//!   percentiles and each dialect's difference from chat.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aigw_dispatcher::chat::answer::Completion;
use aigw_dispatcher::dialect::{anthropic_out, gemini_out, responses_out};
use aigw_events::Usage;
use aigw_runtime::dialect::{anthropic_in, gemini_in, responses_in};
use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::{Target, open_loop_samples};
use crate::stats::{Percentiles, Report, RunInfo, Sample};

#[derive(Debug, Clone, Args)]
pub struct DialectsArgs {
    /// aigw's base URL (no `/v1`), e.g. http://127.0.0.1:8080: also measure
    /// every dialect through it. Without it, only in process.
    #[arg(long)]
    pub url: Option<String>,

    /// aigw API key.
    #[arg(
        long,
        env = "AIGW_BENCH_KEY",
        hide_env_values = true,
        default_value = "sk-bench"
    )]
    pub key: String,

    /// Model to ask for (served by an OpenAI-compatible upstream).
    #[arg(long, default_value = "bench-model")]
    pub model: String,

    /// Timed in-process translations per dialect.
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,

    /// Requests per second of every run through aigw.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,

    /// Measured time of each dialect through aigw (split into `--rounds`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Alternate the dialects in this many slices, each round starting
    /// with the next one.
    #[arg(long, default_value_t = 8)]
    pub rounds: u32,

    /// Unmeasured load before the first slice of each dialect.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Target: most the translation may cost per request at p99, in µs.
    #[arg(long, default_value_t = 100.0)]
    pub target_us: f64,

    /// Exit with status 1 when a target is missed (or a request fails).
    #[arg(long)]
    pub enforce: bool,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A dialect's request: where it goes, its body, and what its answer holds.
struct Dialect {
    name: &'static str,
    path: String,
    body: Value,
    expect: &'static [u8],
}

fn dialects(model: &str) -> Vec<Dialect> {
    let system = "You are a helpful assistant.";
    let user = "Say hello in one short sentence.";
    vec![
        Dialect {
            name: "openai_chat",
            path: "/v1/chat/completions".into(),
            body: json!({"model": model, "max_tokens": 32, "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}),
            expect: b"\"choices\"",
        },
        Dialect {
            name: "anthropic_messages",
            path: "/v1/messages".into(),
            body: json!({"model": model, "max_tokens": 32, "temperature": 0, "system": system,
                "messages": [{"role": "user", "content": user}]}),
            expect: b"\"content\"",
        },
        Dialect {
            name: "openai_responses",
            path: "/v1/responses".into(),
            body: json!({"model": model, "max_output_tokens": 32, "temperature": 0,
                "instructions": system, "input": user, "store": false}),
            expect: b"\"output\"",
        },
        Dialect {
            name: "gemini_generate",
            path: format!("/v1beta/models/{model}:generateContent"),
            body: json!({"systemInstruction": {"parts": [{"text": system}]},
                "contents": [{"role": "user", "parts": [{"text": user}]}],
                "generationConfig": {"maxOutputTokens": 32, "temperature": 0}}),
            expect: b"\"candidates\"",
        },
    ]
}

/// The mock upstream's answer, as an OpenAI completion.
fn completion(model: &str) -> Value {
    json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1_764_000_000,
        "model": model, "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Hello there, nice to meet you."}}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32}})
}

/// One request's translation work in `dialect` (see the module doc).
fn translate_once(dialect: &Dialect, bytes: &[u8], model: &str, answer: &Value) -> usize {
    let usage = Usage {
        prompt_tokens: 24,
        completion_tokens: 8,
        ..Usage::default()
    };
    let mut out = 0;
    // The ingress, then the dispatcher: each parses the caller's body and
    // translates it to OpenAI chat.
    for _ in 0..2 {
        let native: Value = serde_json::from_slice(bytes).unwrap_or_default();
        let translated = match dialect.name {
            "anthropic_messages" => anthropic_in::to_chat(&native).map(|t| t.body),
            "openai_responses" => responses_in::to_chat(&native).map(|t| t.body),
            "gemini_generate" => gemini_in::to_chat(&native, model, false).map(|t| t.body),
            _ => return 0,
        };
        out += serde_json::to_vec(&translated.unwrap_or_default()).map_or(0, |v| v.len());
    }
    let native: Value = serde_json::from_slice(bytes).unwrap_or_default();
    let answer = &Completion::read(answer);
    let rendered = match dialect.name {
        "anthropic_messages" => anthropic_out::message(answer, "msg_bench", model, &usage),
        "openai_responses" => responses_out::response(
            answer,
            "resp_bench",
            &responses_out::Echo::new(model, Some(&native)),
            &usage,
        ),
        _ => gemini_out::response(answer, "bench", model, &usage),
    };
    out + serde_json::to_vec(&rendered).map_or(0, |v| v.len())
}

#[derive(Debug, Serialize)]
struct InProcess {
    dialect: &'static str,
    iterations: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Through {
    dialect: &'static str,
    report: Report,
    /// Differences from OpenAI chat, in ms.
    delta_p50_ms: f64,
    delta_p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    in_process: Vec<InProcess>,
    through_aigw: Vec<Through>,
    target_us: f64,
}

fn in_process(args: &DialectsArgs, all: &[Dialect]) -> Vec<InProcess> {
    let answer = completion(&args.model);
    let mut rows = Vec::new();
    for dialect in all.iter().skip(1) {
        let bytes = serde_json::to_vec(&dialect.body).unwrap_or_default();
        // Warm up caches and the allocator.
        for _ in 0..1_000 {
            black_box(translate_once(dialect, &bytes, &args.model, &answer));
        }
        let mut times = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            let start = Instant::now();
            black_box(translate_once(
                dialect,
                black_box(&bytes),
                &args.model,
                &answer,
            ));
            times.push(start.elapsed());
        }
        let p = Percentiles::of(times);
        rows.push(InProcess {
            dialect: dialect.name,
            iterations: args.iterations,
            mean_us: p.mean * 1000.0,
            p50_us: p.p50 * 1000.0,
            p99_us: p.p99 * 1000.0,
            max_us: p.max * 1000.0,
            pass: p.p99 * 1000.0 <= args.target_us,
        });
    }
    rows
}

async fn through_aigw(
    args: &DialectsArgs,
    url: &str,
    all: &[Dialect],
) -> anyhow::Result<Vec<Through>> {
    let base = Target::new(&format!("{url}/v1"), &args.key, &args.model, false)?;
    let targets: Vec<Target> = all
        .iter()
        .map(|d| base.clone().posting(url, &d.path, &d.body, d.expect))
        .collect::<anyhow::Result<_>>()?;
    let rounds = args.rounds.max(1);
    let slice = args.duration / rounds;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); all.len()];
    for round in 0..rounds as usize {
        // Each round starts with the next dialect, so none always follows
        // the same one; the first slice of each dialect is warmed up.
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let warmup = if round == 0 {
                args.warmup
            } else {
                Duration::ZERO
            };
            let mut got = open_loop_samples(&targets[i], args.rate, slice, warmup).await?;
            samples[i].append(&mut got);
        }
    }
    let reports: Vec<Report> = all
        .iter()
        .zip(&samples)
        .map(|(d, s)| {
            Report::build(
                RunInfo {
                    label: d.name.to_string(),
                    mode: "open",
                    rate: Some(args.rate),
                    concurrency: None,
                    stream: false,
                    window: args.duration,
                },
                s,
            )
        })
        .collect();
    let chat = reports[0].latency_ms;
    Ok(all
        .iter()
        .zip(reports)
        .map(|(d, report)| Through {
            dialect: d.name,
            delta_p50_ms: report.latency_ms.p50 - chat.p50,
            delta_p99_ms: report.latency_ms.p99 - chat.p99,
            report,
        })
        .collect())
}

pub async fn run(args: DialectsArgs) -> anyhow::Result<()> {
    let all = dialects(&args.model);
    let local = in_process(&args, &all);
    println!(
        "Translation work per request, in process ({} calls each; target p99 <= {} µs):",
        args.iterations, args.target_us
    );
    println!(
        "  {:<20} {:>9} {:>9} {:>9} {:>9}",
        "dialect", "mean µs", "p50 µs", "p99 µs", "max µs"
    );
    for r in &local {
        println!(
            "  {:<20} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
            r.dialect,
            r.mean_us,
            r.p50_us,
            r.p99_us,
            r.max_us,
            if r.pass { "ok" } else { "OVER" }
        );
    }
    let through = match &args.url {
        Some(url) => through_aigw(&args, url.trim_end_matches('/'), &all).await?,
        None => Vec::new(),
    };
    if !through.is_empty() {
        println!(
            "\nThrough aigw at {} req/s, {} each in {} rounds, to an OpenAI-compatible upstream:",
            args.rate,
            humantime::format_duration(args.duration),
            args.rounds
        );
        println!(
            "  {:<20} {:>7} {:>7} {:>9} {:>9} {:>11} {:>11}",
            "dialect", "ok", "errors", "p50 ms", "p99 ms", "Δp50 ms", "Δp99 ms"
        );
        for t in &through {
            println!(
                "  {:<20} {:>7} {:>7} {:>9.3} {:>9.3} {:>+11.3} {:>+11.3}",
                t.dialect,
                t.report.ok,
                t.report.errors,
                t.report.latency_ms.p50,
                t.report.latency_ms.p99,
                t.delta_p50_ms,
                t.delta_p99_ms
            );
            for (kind, n) in &t.report.error_kinds {
                println!("      {n} × {kind}");
            }
        }
    }
    let failed = local.iter().any(|r| !r.pass) || through.iter().any(|t| t.report.errors > 0);
    let summary = Summary {
        in_process: local,
        through_aigw: through,
        target_us: args.target_us,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.enforce && failed {
        anyhow::bail!("a target was missed or a request failed");
    }
    Ok(())
}
