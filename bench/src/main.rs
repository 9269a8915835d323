//! `aigw-bench`: a mock OpenAI-compatible upstream, an open/closed-loop load
//! generator and a comparison that measures the mock directly and through
//! aigw in the same run. See `bench/README.md` and `bench/run.sh`.

// This is a command-line tool whose job is to print its measurements.
#![allow(clippy::print_stdout)]

mod ab;
mod compare;
mod dialects;
mod jobs;
mod load;
mod mock;
mod routing;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aigw-bench",
    version,
    about = "Benchmarks for the aigw gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a mock OpenAI-compatible upstream (`/v1/chat/completions`, `/v1/models`).
    Mock(mock::MockArgs),
    /// Send chat requests at a fixed rate (open loop) or from N workers (closed loop).
    Load(load::LoadArgs),
    /// Measure the mock directly and through aigw in one run, then check that
    /// every gateway request was recorded as events.
    Compare(compare::CompareArgs),
    /// Compare two request shapes through aigw at the same rate (failover,
    /// admission): success rates, latencies and the difference.
    Ab(ab::AbArgs),
    /// What translating between dialects costs: in process, and through
    /// aigw side by side with chat completions.
    Dialects(dialects::DialectsArgs),
    /// Submit many jobs (`POST /v1/jobs`) to build a backlog.
    Jobs(jobs::JobsArgs),
    /// Time the routing decision (`Router::plan`) for every strategy.
    Routing(routing::RoutingArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider; pick ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Mock(args) => mock::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Compare(args) => compare::run(args).await,
        Command::Ab(args) => ab::run(args).await,
        Command::Dialects(args) => dialects::run(args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Routing(args) => routing::run(args),
    }
}
