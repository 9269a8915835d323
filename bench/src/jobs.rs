//! `aigw-bench jobs`: submits many jobs (`POST /v1/jobs`) as fast as the
//! gateway takes them, to build a backlog; `bench/jobs.sh` then measures
//! synchronous calls with and without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Gateway base URL, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    pub url: String,

    /// API key (from the environment, so it stays out of process listings).
    #[arg(long, env = "AIGW_BENCH_KEY", hide_env_values = true)]
    pub key: String,

    #[arg(long, default_value = "bench-model")]
    pub model: String,

    /// Jobs to submit.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,

    /// Submissions in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/jobs", args.url.trim_end_matches('/'));
    let body = serde_json::to_vec(&json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 32,
        "metadata": {"bench": "backlog"},
    }))?;
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, body, key) =
            (client.clone(), url.clone(), body.clone(), args.key.clone());
        let (next, failed, count) = (next.clone(), failed.clone(), args.count);
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let ok = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "submitted {} jobs in {elapsed:.1} s ({:.0}/s), {failed} refused",
        args.count,
        args.count as f64 / elapsed
    );
    anyhow::ensure!(failed == 0, "{failed} submissions were not accepted");
    Ok(())
}
