//! The load generator: open loop (requests due at fixed intervals, latency
//! measured from when each was due, so a slow server cannot hide its queue by
//! slowing the sender down) and closed loop (N workers back to back, for the
//! highest sustainable throughput).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt as _;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::stats::{Report, RunInfo, Sample};

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    pub url: String,

    /// API key sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "AIGW_BENCH_KEY",
        hide_env_values = true,
        default_value = "sk-bench"
    )]
    pub key: String,

    /// Model to ask for.
    #[arg(long, default_value = "bench-model")]
    pub model: String,

    /// Open loop: requests per second, sent at fixed intervals.
    #[arg(
        long,
        conflicts_with = "concurrency",
        required_unless_present = "concurrency"
    )]
    pub rate: Option<f64>,

    /// Closed loop: workers each sending the next request as soon as the last one ends.
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Measured time (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Load sent before measuring (connections, pools, caches), not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Ask for streamed answers (SSE) and read them to `[DONE]`.
    #[arg(long)]
    pub stream: bool,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.url, &args.key, &args.model, args.stream)?;
    let label = args.url.clone();
    let report = match (args.rate, args.concurrency) {
        (Some(rate), _) => open_loop(&target, label, rate, args.duration, args.warmup).await?,
        (None, Some(c)) => closed_loop(&target, label, c, args.duration, args.warmup).await?,
        (None, None) => anyhow::bail!("give --rate or --concurrency"),
    };
    report.print();
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Where and what to send.
#[derive(Clone)]
pub struct Target {
    client: reqwest::Client,
    url: String,
    auth: String,
    /// Extra headers on every request (a peer gateway's routing headers).
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    /// Bytes every successful non-streamed answer contains.
    expect: &'static [u8],
    pub stream: bool,
}

impl Target {
    pub fn new(base_url: &str, key: &str, model: &str, stream: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut body = json!({
            "model": model,
            "messages": [
                { "role": "system", "content": "You are a helpful assistant." },
                { "role": "user", "content": "Say hello in one short sentence." }
            ],
            "max_tokens": 32,
            "temperature": 0
        });
        if stream {
            body["stream"] = json!(true);
        }
        Ok(Self {
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            auth: format!("Bearer {key}"),
            headers: reqwest::header::HeaderMap::new(),
            body: Bytes::from(serde_json::to_vec(&body)?),
            expect: b"\"choices\"",
            stream,
        })
    }

    /// The same client and key, sending `body` (not streamed) to `path`
    /// under `base_url`; an answer counts when it contains `expect`.
    pub fn posting(
        mut self,
        base_url: &str,
        path: &str,
        body: &serde_json::Value,
        expect: &'static [u8],
    ) -> anyhow::Result<Self> {
        self.url = format!("{}{path}", base_url.trim_end_matches('/'));
        self.body = Bytes::from(serde_json::to_vec(body)?);
        self.expect = expect;
        self.stream = false;
        Ok(self)
    }

    /// Adds `name: value` headers (`"name: value"` strings) to every request.
    pub fn with_headers(mut self, headers: &[String]) -> anyhow::Result<Self> {
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("header {h:?} is not `name: value`"))?;
            self.headers.insert(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
                reqwest::header::HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(self)
    }

    /// Sends one request and reads the whole answer; returns when the first
    /// byte of the answer arrived.
    pub async fn send(&self) -> Result<Instant, String> {
        let resp = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(CONTENT_TYPE, "application/json")
            .headers(self.headers.clone())
            .body(self.body.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status();
        if !self.stream || !status.is_success() {
            let first = Instant::now();
            let body = resp.bytes().await.map_err(describe)?;
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            if !contains(&body, self.expect) {
                return Err(format!(
                    "answer without {}",
                    String::from_utf8_lossy(self.expect)
                ));
            }
            return Ok(first);
        }
        let mut first = None;
        let mut tail: Vec<u8> = Vec::with_capacity(64);
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(describe)?;
            if chunk.is_empty() {
                continue;
            }
            first.get_or_insert_with(Instant::now);
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(32)..]);
            let keep = tail.len().saturating_sub(32);
            tail.drain(..keep);
        }
        if !contains(&tail, b"data: [DONE]") {
            return Err("stream ended without [DONE]".into());
        }
        Ok(first.unwrap_or_else(Instant::now))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A short, stable description of a transport error (no URL, so that the
/// same failure groups together).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    let e = e.without_url();
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    if msg.len() > 200 {
        let mut cut = 200;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}

/// Most requests that may be outstanding at once in open loop; past it a due
/// request is counted as an error instead of piling up without end.
const MAX_INFLIGHT: usize = 20_000;

/// Sends `rate` requests per second for `warmup + duration`. The schedule runs
/// on its own OS thread with precise sleeps (tokio's timer has 1 ms ticks);
/// each request runs as a task on the runtime.
pub async fn open_loop(
    target: &Target,
    label: String,
    rate: f64,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<Report> {
    let samples = open_loop_samples(target, rate, duration, warmup).await?;
    Ok(Report::build(
        RunInfo {
            label,
            mode: "open",
            rate: Some(rate),
            concurrency: None,
            stream: target.stream,
            window: duration,
        },
        &samples,
    ))
}

/// The samples of one open-loop run, in schedule order.
pub async fn open_loop_samples(
    target: &Target,
    rate: f64,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<Vec<Sample>> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    let total = ((warmup + duration).as_secs_f64() * rate).round() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let handle = tokio::runtime::Handle::current();
    let inflight = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(target.clone());
    let origin = Instant::now() + Duration::from_millis(20);

    let scheduler = {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("bench-scheduler".into())
            .spawn(move || {
                for i in 0..total {
                    let offset = Duration::from_secs_f64(i as f64 / rate);
                    let due = origin + offset;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let measured = offset >= warmup;
                    if inflight.load(Ordering::Relaxed) >= MAX_INFLIGHT {
                        let _ = tx.send(Sample {
                            due: offset,
                            latency: Duration::ZERO,
                            service: Duration::ZERO,
                            ttfb: Duration::ZERO,
                            lag: Instant::now().saturating_duration_since(due),
                            error: Some("load generator: too many requests outstanding".into()),
                            measured,
                        });
                        continue;
                    }
                    inflight.fetch_add(1, Ordering::Relaxed);
                    let (tx, target, inflight) = (tx.clone(), target.clone(), inflight.clone());
                    handle.spawn(async move {
                        let sent = Instant::now();
                        let result = target.send().await;
                        let end = Instant::now();
                        inflight.fetch_sub(1, Ordering::Relaxed);
                        let first = result.as_ref().map(|f| *f).unwrap_or(end);
                        let _ = tx.send(Sample {
                            due: offset,
                            latency: end - due,
                            service: end - sent,
                            ttfb: first.saturating_duration_since(due),
                            lag: sent.saturating_duration_since(due),
                            error: result.err(),
                            measured,
                        });
                    });
                }
            })?
    };
    drop(tx);
    let mut samples = Vec::with_capacity(total as usize);
    while let Some(s) = rx.recv().await {
        samples.push(s);
    }
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    samples.sort_by_key(|s| s.due);
    Ok(samples)
}

/// `concurrency` workers send back to back for `warmup + duration`; requests
/// started in the warm-up or ending after the window are sent but not counted.
pub async fn closed_loop(
    target: &Target,
    label: String,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<Report> {
    anyhow::ensure!(concurrency > 0, "--concurrency must be positive");
    let origin = Instant::now();
    let window_start = origin + warmup;
    let deadline = window_start + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let start = Instant::now();
                if start >= deadline {
                    break;
                }
                let result = target.send().await;
                let end = Instant::now();
                let first = result.as_ref().map(|f| *f).unwrap_or(end);
                samples.push(Sample {
                    due: start - origin,
                    latency: end - start,
                    service: end - start,
                    ttfb: first.saturating_duration_since(start),
                    lag: Duration::ZERO,
                    error: result.err(),
                    measured: start >= window_start && end <= deadline,
                });
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await?);
    }
    Ok(Report::build(
        RunInfo {
            label,
            mode: "closed",
            rate: None,
            concurrency: Some(concurrency),
            stream: target.stream,
            window: duration,
        },
        &samples,
    ))
}
