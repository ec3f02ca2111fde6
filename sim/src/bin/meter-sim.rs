//! `meter-sim`: runs the simulated metering API for people (the README's quick start, manual tests of the
//! exporter). Prints the URL and token to give the exporter, then serves until Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use dify_sim::{MeterConfig, MeterSim};

/// Simulated metering API on 127.0.0.1 that checks every request against docs/wire-format.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Bearer token the exporter must send.
    #[arg(long, default_value = "meter-token")]
    token: String,
    /// Require this `tenant_id` in every body.
    #[arg(long)]
    tenant_id: Option<String>,
    /// Most records accepted per batch.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = MeterConfig {
        token: args.token,
        tenant_id: args.tenant_id,
        max_batch: args.max_batch,
        port: args.port,
        ..MeterConfig::default()
    };
    let sim = match MeterSim::start(config) {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("meter-sim: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = sim.config();
    println!("meter-sim listening on {}", sim.url());
    println!("  EXTERNAL_API_URL={}", sim.url());
    println!("  EXTERNAL_API_TOKEN={}", cfg.token);
    if let Some(tenant) = &cfg.tenant_id {
        println!("  EXTERNAL_API_TENANT_ID={tenant}");
    }
    println!("  records: {}/_meter/records", sim.base_url());
    println!("  stats: {}/_meter/stats", sim.base_url());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("meter-sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = runtime.block_on(tokio::signal::ctrl_c()) {
        eprintln!("meter-sim: cannot wait for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    drop(sim);
    ExitCode::SUCCESS
}
