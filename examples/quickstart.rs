//! The local quick start: `cargo run --release --locked --example quickstart` (or, after `cargo build
//! --release --locked --bin exporter --example quickstart`, `target/release/examples/quickstart`).
//!
//! Starts a simulated Dify (three days of usage ending yesterday, every app mode) and a simulated
//! metering API on 127.0.0.1, runs the real `exporter run` once with its state in a temporary
//! directory, then prints what the meter received next to the simulator's truth, day by day. Exits
//! non-zero if they differ by a single token or a single cent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use chrono::{Days, NaiveDate, Utc};
use dify_sim::{AuthMode, DifySim, MeterConfig, MeterSim, SimConfig, TruthRecord};
use rust_decimal::Decimal;

const METER_TOKEN: &str = "quickstart-meter-token";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("quickstart: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let exporter = build_exporter()?;
    let dify = DifySim::start(SimConfig {
        auth: AuthMode::V1_11_2,
        ..SimConfig::default()
    })?;
    let meter = MeterSim::start(MeterConfig {
        token: METER_TOKEN.to_owned(),
        ..MeterConfig::default()
    })?;
    let state = tempfile::tempdir()?;
    println!(
        "simulated Dify   {} (1.11.2, login {})",
        dify.base_url(),
        dify.credentials().email
    );
    println!("simulated meter  {}", meter.url());
    println!("state directory  {}\n", state.path().display());

    let credentials = dify.credentials();
    let status = Command::new(&exporter)
        .arg("run")
        .env_clear()
        .env("DIFY_API_URL", dify.base_url())
        .env("DIFY_EMAIL", &credentials.email)
        .env("DIFY_PASSWORD", &credentials.password)
        .env("EXTERNAL_API_URL", meter.url())
        .env("EXTERNAL_API_TOKEN", METER_TOKEN)
        .env("STATE_DIR", state.path())
        .env("DIFY_FETCH_DAYS", "3")
        .env("LOG_FORMAT", "text")
        .status()?;
    println!("\nexporter exited with {status}\n");

    Ok(compare(&dify, &meter) && status.success())
}

/// Prints delivered and true totals per day and compares every record field by field.
fn compare(dify: &DifySim, meter: &MeterSim) -> bool {
    let today = Utc::now().date_naive();
    let (first, last) = (today - Days::new(3), today - Days::new(1));
    let mut truth_records = dify.truth(first, last);
    let mut delivered_records: Vec<TruthRecord> =
        meter.records().into_iter().map(TruthRecord::from).collect();
    let per_day = |records: &[TruthRecord]| {
        let mut days: BTreeMap<NaiveDate, Totals> = BTreeMap::new();
        for r in records {
            days.entry(r.usage_date)
                .or_default()
                .add(r.total_tokens, &r.currency, r.cost);
        }
        days
    };
    let (truth, delivered) = (per_day(&truth_records), per_day(&delivered_records));
    let order = |a: &TruthRecord, b: &TruthRecord| {
        (
            a.usage_date,
            &a.app_id,
            &a.user,
            &a.provider,
            &a.model,
            &a.currency,
        )
            .cmp(&(
                b.usage_date,
                &b.app_id,
                &b.user,
                &b.provider,
                &b.model,
                &b.currency,
            ))
    };
    truth_records.sort_by(order);
    delivered_records.sort_by(order);

    println!(
        "{:<12} {:>50}   {:>50}",
        "", "delivered to the meter", "truth of the simulated Dify"
    );
    println!(
        "{:<12} {:>8} {:>12} {:>28}   {:>8} {:>12} {:>28}",
        "day", "records", "tokens", "cost", "records", "tokens", "cost"
    );
    let mut same = true;
    for day in first.iter_days().take_while(|d| *d <= last) {
        let got = delivered.get(&day).cloned().unwrap_or_default();
        let want = truth.get(&day).cloned().unwrap_or_default();
        let mark = if got == want { "" } else { "   <- DIFFERS" };
        same &= got == want;
        println!(
            "{day:<12} {:>8} {:>12} {:>28}   {:>8} {:>12} {:>28}{mark}",
            got.records,
            got.tokens,
            got.cost_text(),
            want.records,
            want.tokens,
            want.cost_text()
        );
    }
    let differing = truth_records
        .iter()
        .filter(|r| !delivered_records.contains(r))
        .count()
        + delivered_records
            .iter()
            .filter(|r| !truth_records.contains(r))
            .count();
    same &= differing == 0;
    println!(
        "\n{} ({} records compared field by field, {differing} differ)",
        if same {
            "delivered == truth"
        } else {
            "delivered != truth"
        },
        truth_records.len()
    );
    same
}

/// A day's totals (records, tokens, cost per currency).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    records: u64,
    tokens: u64,
    cost: BTreeMap<String, Decimal>,
}

impl Totals {
    fn add(&mut self, tokens: u64, currency: &str, cost: Decimal) {
        self.records += 1;
        self.tokens += tokens;
        *self.cost.entry(currency.to_owned()).or_default() += cost;
    }

    fn cost_text(&self) -> String {
        let parts: Vec<String> = self
            .cost
            .iter()
            .map(|(currency, cost)| format!("{currency} {}", cost.normalize()))
            .collect();
        parts.join(" ")
    }
}

/// Builds the `exporter` binary in the same profile as this example and returns its path.
///
/// The example is named in the build as well: cargo then resolves the dependencies' features as it
/// did for the example (dev-dependencies included), so the binary reuses every compiled crate
/// instead of building most of the tree a second time with other features.
fn build_exporter() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let profile_dir = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(PathBuf::from)
        .ok_or("cannot find the target directory")?;
    let release = profile_dir.ends_with("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--locked",
        "--bin",
        "exporter",
        "--example",
        "quickstart",
    ]);
    if release {
        build.arg("--release");
    }
    let started = std::time::Instant::now();
    if !build.status()?.success() {
        return Err("building the exporter failed".into());
    }
    println!(
        "exporter built in {:.1} s: {}\n",
        started.elapsed().as_secs_f64(),
        profile_dir.join("exporter").display()
    );
    Ok(profile_dir.join("exporter"))
}
