//! `collector-sim`: runs the simulated CloudEvents collector (OpenMeter's ingestion rules) for benchmarks and
//! manual tests of the `cloudevents` sink. Prints the variables to give the exporter, then serves until Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use dify_sim::{CollectorConfig, CollectorSim};

/// Simulated OpenMeter event ingestion on a free port of 127.0.0.1.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Bearer token the exporter must send; none required when unset.
    #[arg(long)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sim = match CollectorSim::start(CollectorConfig {
        token: args.token.clone(),
    }) {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("collector-sim: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("collector-sim listening on {}", sim.url());
    println!("  SINK_CLOUDEVENTS_URL={}", sim.url());
    if let Some(token) = &args.token {
        println!("  SINK_CLOUDEVENTS_TOKEN={token}");
    }
    println!(
        "  stats: {}",
        sim.url().replace("/api/v1/events", "/_collector/stats")
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("collector-sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = runtime.block_on(tokio::signal::ctrl_c()) {
        eprintln!("collector-sim: cannot wait for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    drop(sim);
    ExitCode::SUCCESS
}
