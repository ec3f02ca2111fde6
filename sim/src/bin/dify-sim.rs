//! `dify-sim`: runs the simulated Dify console API for people (the README's quick start, manual tests of the
//! exporter). Prints the base URL and credentials, then serves until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use chrono::NaiveDate;
use clap::Parser;
use dify_sim::{AuthMode, DifySim, Faults, SimConfig};

/// Simulated Dify console API on 127.0.0.1, generated from a seed.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seed of the generated workspace and of injected faults.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Dify version whose authentication to reproduce: 1.9.1, 1.9.2, 1.11.2 or admin-key.
    #[arg(long, default_value = "1.9.2")]
    auth: AuthMode,
    /// Name cookies `__Host-…` and mark them Secure (as Dify behind https).
    #[arg(long)]
    host_cookies: bool,
    /// First UTC day with usage (YYYY-MM-DD); default: `days` days before today.
    #[arg(long)]
    first_day: Option<NaiveDate>,
    /// Number of UTC days with usage.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Apps of each mode of `--modes`.
    #[arg(long, default_value_t = 2)]
    apps_per_mode: u32,
    /// Production runs (or messages) per app and day.
    #[arg(long, default_value_t = 5)]
    runs_per_app_per_day: u32,
    /// IANA timezone of the account (drives the statistics endpoints).
    #[arg(long, default_value = "Asia/Tokyo")]
    timezone: String,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Delay added before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Share of requests (0.0 to 1.0) answered with 500/502/503 or 429.
    #[arg(long, default_value_t = 0.0)]
    error_share: f64,
    /// Retry-After seconds of an injected 429.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Expire an access token after it has served this many requests.
    #[arg(long)]
    expire_token_after: Option<u64>,
    /// Messages per conversation (completion apps: always 1).
    #[arg(long, default_value_t = 3)]
    messages_per_conversation: u32,
    /// Give the first chat app one more end-user conversation with this many messages over all days.
    #[arg(long, default_value_t = 0)]
    long_conversation_messages: u32,
    /// App modes to generate, comma-separated: workflow, advanced-chat, chat, agent-chat, completion, agent.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "workflow,advanced-chat,chat,agent-chat,completion,agent"
    )]
    modes: Vec<String>,
    /// Add a message "now" to a page-2 conversation the first time page 1 of an app's chat-conversations
    /// is served, so it jumps pages while the client lists.
    #[arg(long)]
    bump_conversation_while_listing: bool,
    /// Write the workspace as rows of Dify's tables (a psql script of COPY blocks for the exporter's
    /// tests/data/dify-schema.sql) to stdout, then exit instead of serving.
    #[arg(long)]
    write_rows: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = SimConfig {
        seed: args.seed,
        auth: args.auth,
        host_prefixed_cookies: args.host_cookies,
        days: args.days,
        apps_per_mode: args.apps_per_mode,
        runs_per_app_per_day: args.runs_per_app_per_day,
        account_timezone: args.timezone,
        faults: Faults {
            error_share: args.error_share,
            retry_after_secs: args.retry_after_secs,
            delay: Duration::from_millis(args.delay_ms),
            expire_token_after_requests: args.expire_token_after,
            bump_conversation_while_listing: args.bump_conversation_while_listing,
        },
        messages_per_conversation: args.messages_per_conversation,
        long_conversation_messages: args.long_conversation_messages,
        modes: args.modes,
        port: args.port,
        ..SimConfig::default()
    };
    if let Some(day) = args.first_day {
        config.first_day = day;
    } else if let Some(day) = chrono::Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(args.days.into()))
    {
        config.first_day = day;
    }
    let sim = match DifySim::start(config) {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("dify-sim: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.write_rows {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        return match sim.write_database_rows(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("dify-sim: cannot write rows: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let c = sim.credentials();
    let cfg = sim.config();
    println!("dify-sim {} listening on {}", cfg.auth, sim.base_url());
    println!("  DIFY_API_URL={}", sim.base_url());
    println!("  DIFY_EMAIL={}", c.email);
    println!("  DIFY_PASSWORD={}", c.password);
    println!("  console token (Bearer): {}", c.console_token);
    if cfg.auth == AuthMode::AdminKey {
        println!(
            "  DIFY_API_TOKEN={} DIFY_WORKSPACE_ID={}",
            c.admin_api_key, c.workspace_id
        );
    }
    let base = sim.base_url();
    let last = cfg.first_day + chrono::Days::new(u64::from(cfg.days.saturating_sub(1)));
    println!("  UTC days {} .. {last}", cfg.first_day);
    println!(
        "  truth: {base}/_sim/truth?from={}&to={last}",
        cfg.first_day
    );
    println!(
        "  database truth: {base}/_sim/truth?source=database&from={}&to={last}",
        cfg.first_day
    );
    println!("  stats: {base}/_sim/stats");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("dify-sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = runtime.block_on(tokio::signal::ctrl_c()) {
        eprintln!("dify-sim: cannot wait for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    drop(sim);
    ExitCode::SUCCESS
}
