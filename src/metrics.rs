//! Prometheus metrics of a batch job (`docs/run.md#metrics`): written once at the end of every
//! `run` and `resend`, whatever the outcome, to node_exporter's textfile collector
//! (`METRICS_TEXTFILE`) and/or a Pushgateway (`PUSHGATEWAY_URL`).
//!
//! A run-once job has no endpoint to scrape, so it leaves its figures where Prometheus can find them.
//! `last_success_timestamp_seconds` is what the "no success for 26 h" alert needs, and a failed run
//! must not reset it, so it is kept in the state database. Metrics never change the exit code: the
//! run's data is safe in the state database, and a monitoring problem is one `warn` line.
//!
//! The text format comes from `prometheus-client` (the Prometheus project's Rust crate), without the
//! OpenMetrics `# EOF` trailer, because both consumers read the classic text format.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rust_decimal::prelude::ToPrimitive as _;
use tracing::warn;
use url::Url;

use crate::config::Config;
use crate::run::{RunReport, SinkReport};
use crate::secret::masked_url;
use crate::state::{Counts, State};

/// The metric name prefix.
const PREFIX: &str = "dify_usage_exporter";
/// The Pushgateway grouping key's `job`.
const JOB: &str = "dify_usage_exporter";

/// What the state database says after the run.
#[derive(Debug, Default, Clone)]
struct Kept {
    last_success: Option<DateTime<Utc>>,
    /// Per sink: the configured ones (zero when empty) and any other that holds batches.
    outbox: Option<BTreeMap<String, Counts>>,
    watermark: Option<NaiveDate>,
}

/// Keeps the success time in the state database (exit 0 only) and writes the metrics to every
/// configured target. Never fails: each problem is one `warn` line.
pub(crate) fn publish(config: &Config, report: &RunReport, state: Option<&State>) {
    let finished = Utc::now();
    if report.exit_code == 0
        && let Some(Err(err)) = state.map(|s| s.set_last_success(finished))
    {
        warn!(
            error = format!("{err:#}"),
            "cannot keep the success time in the state database"
        );
    }
    let targets = &config.metrics;
    if targets.textfile.is_none() && targets.pushgateway_url.is_none() {
        return;
    }
    let kept = match state.map(|state| kept(state, config)).transpose() {
        Ok(kept) => kept.unwrap_or_default(),
        Err(err) => {
            warn!(
                error = format!("{err:#}"),
                "cannot read the state database for the metrics; writing those of the run only"
            );
            Kept::default()
        }
    };
    let text = match encode(report, &kept, finished) {
        Ok(text) => text,
        Err(err) => {
            warn!(error = %err, "cannot encode the metrics");
            return;
        }
    };
    if let Some(path) = &targets.textfile
        && let Err(err) = write_textfile(path, &text)
    {
        warn!(
            error = format!("{err:#}"),
            "cannot write METRICS_TEXTFILE; the run's data is safe in the state database"
        );
    }
    if let Some(url) = &targets.pushgateway_url {
        let instance = targets.pushgateway_instance.as_deref();
        if let Err(err) = push(url, instance, None, text, config.http_timeout) {
            warn!(
                pushgateway = masked_url(url),
                // The Pushgateway's answer is quoted: it may echo a secret.
                error = config.masker.mask(&format!("{err:#}")),
                "cannot push the metrics to PUSHGATEWAY_URL; the run's data is safe in the state database"
            );
        }
    }
}

/// `exporter reconcile`'s figures, written to the same targets as the run's but beside them (their
/// own textfile, their own Pushgateway group), so that neither replaces the other. Never fails.
pub(crate) fn publish_reconcile(config: &Config, disagreeing: usize) {
    let targets = &config.metrics;
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register(
        "reconcile_disagreeing_app_days",
        "App-days the last `exporter reconcile` found disagreeing with Dify's statistics beyond the documented rule",
        whole(disagreeing as u64),
    );
    registry.register(
        "reconcile_timestamp_seconds",
        "End of the last `exporter reconcile` that compared, seconds since the Unix epoch",
        seconds(Utc::now()),
    );
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode_registry(&mut text, &registry) {
        warn!(error = %err, "cannot encode the metrics");
        return;
    }
    if let Some(path) = &targets.textfile {
        let path = reconcile_textfile(path);
        if let Err(err) = write_textfile(&path, &text) {
            warn!(
                error = format!("{err:#}"),
                "cannot write the reconcile metrics beside METRICS_TEXTFILE"
            );
        }
    }
    if let Some(url) = &targets.pushgateway_url {
        let instance = targets.pushgateway_instance.as_deref();
        if let Err(err) = push(
            url,
            instance,
            Some(RECONCILE_GROUP),
            text,
            config.http_timeout,
        ) {
            warn!(
                pushgateway = masked_url(url),
                error = config.masker.mask(&format!("{err:#}")),
                "cannot push the reconcile metrics to PUSHGATEWAY_URL"
            );
        }
    }
}

/// The Pushgateway grouping label that keeps reconcile's metrics apart from the run's.
const RECONCILE_GROUP: (&str, &str) = ("command", "reconcile");

/// `METRICS_TEXTFILE` with `-reconcile` before its `.prom` (node_exporter reads every `*.prom`).
fn reconcile_textfile(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".prom").unwrap_or(&name);
    path.with_file_name(format!("{stem}-reconcile.prom"))
}

fn kept(state: &State, config: &Config) -> Result<Kept> {
    let mut outbox = state.counts_per_sink()?;
    for sink in config.sinks.names() {
        outbox.entry(sink.to_owned()).or_default();
    }
    Ok(Kept {
        last_success: state.last_success()?,
        outbox: Some(outbox),
        watermark: state.watermark()?,
    })
}

/// The metrics in Prometheus' text format.
fn encode(
    report: &RunReport,
    kept: &Kept,
    finished: DateTime<Utc>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    let labelled = |label: &str, values: Vec<(String, f64)>| {
        with_labels(
            values
                .into_iter()
                .map(|(value, number)| (vec![(label.to_owned(), value)], number))
                .collect(),
        )
    };
    registry.register(
        "build_info",
        "Always 1; the version label is the exporter's version",
        labelled("version", vec![(env!("CARGO_PKG_VERSION").to_owned(), 1.0)]),
    );
    registry.register(
        "last_run_timestamp_seconds",
        "End of the last run, seconds since the Unix epoch",
        seconds(finished),
    );
    if let Some(success) = kept.last_success {
        registry.register(
            "last_success_timestamp_seconds",
            "End of the last run that exited 0, seconds since the Unix epoch (kept across failed runs)",
            seconds(success),
        );
    }
    registry.register(
        "last_run_exit_code",
        "Exit code of the last run (0 done, 1 failed or work left, 130/143 stopped)",
        whole(u64::from(report.exit_code)),
    );
    registry.register(
        "last_run_duration_seconds",
        "Wall time of the last run",
        float(Duration::from_millis(report.duration_ms).as_secs_f64()),
    );
    registry.register(
        "last_run_records",
        "Records collected by the last run",
        whole(report.records as u64),
    );
    registry.register(
        "last_run_tokens",
        "Tokens collected by the last run",
        whole(report.total_tokens),
    );
    registry.register(
        "last_run_cost",
        "Cost collected by the last run, per currency",
        labelled(
            "currency",
            report
                .cost
                .iter()
                .map(|(currency, cost)| (currency.clone(), cost.to_f64().unwrap_or(f64::NAN)))
                .collect(),
        ),
    );
    registry.register(
        "last_run_dify_requests",
        "Requests the last run made to Dify, retries included",
        whole(report.dify_requests),
    );
    registry.register(
        "last_run_retries",
        "Retried requests in the last run",
        whole(report.retries),
    );
    register_sinks(&mut registry, report, kept);
    if let Some(day) = kept.watermark.and_then(|d| d.succ_opt()) {
        registry.register(
            "watermark_timestamp_seconds",
            "00:00 UTC of the day after the watermark (the last day whose records are queued)",
            seconds(day.and_time(chrono::NaiveTime::MIN).and_utc()),
        );
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode_registry(&mut text, &registry)?;
    Ok(text)
}

/// What each sink was delivered, the outbox per sink, and the ledger's kept decreases.
fn register_sinks(registry: &mut Registry, report: &RunReport, kept: &Kept) {
    let per_sink = |figure: fn(&SinkReport) -> u64| {
        with_labels(
            report
                .sinks
                .iter()
                .map(|(sink, r)| (vec![("sink".to_owned(), sink.clone())], count(figure(r))))
                .collect(),
        )
    };
    registry.register(
        "last_run_batches_sent",
        "Batches the last run delivered, per sink",
        per_sink(|r| r.batches_sent),
    );
    registry.register(
        "last_run_records_sent",
        "Ledger rows the last run delivered, per sink",
        per_sink(|r| r.records_sent),
    );
    registry.register(
        "ledger_kept_decreases",
        "Records the last run found lower in Dify than in the ledger, or gone, whose exported totals the ledger kept (USAGE_DECREASES=keep)",
        whole(report.ledger_kept_decreases),
    );
    if let Some(outbox) = &kept.outbox {
        let mut values = Vec::new();
        for (sink, counts) in outbox {
            for (state, n) in [("queued", counts.queued), ("dead", counts.dead)] {
                values.push((
                    vec![
                        ("sink".to_owned(), sink.clone()),
                        ("state".to_owned(), state.to_owned()),
                    ],
                    count(n),
                ));
            }
        }
        registry.register(
            "outbox_batches",
            "Batches in the outbox after the last run, per sink: queued for the next run, or dead-lettered (need `exporter resend`)",
            with_labels(values),
        );
    }
}

/// A gauge family with one series per label set.
fn with_labels(
    values: Vec<(Vec<(String, String)>, f64)>,
) -> Family<Vec<(String, String)>, Gauge<f64, AtomicU64>> {
    let family = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    for (labels, number) in values {
        family.get_or_create(&labels).set(number);
    }
    family
}

/// A whole-number gauge holding `value`.
fn whole(value: u64) -> Gauge<i64> {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

/// A floating-point gauge holding `value`.
fn float(value: f64) -> Gauge<f64, AtomicU64> {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    gauge
}

fn seconds(at: DateTime<Utc>) -> Gauge<f64, AtomicU64> {
    // Milliseconds since the epoch stay far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    float(at.timestamp_millis() as f64 / 1000.0)
}

#[allow(clippy::cast_precision_loss)] // batch counts stay far below 2^52
fn count(n: u64) -> f64 {
    n as f64
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so the collector
/// never reads half a file; mode 0644 whatever the umask, because node_exporter runs as another user.
///
/// The temporary file is created by `tempfile`: a random name opened with `O_CREAT | O_EXCL`, so a
/// link planted beside the textfile can never make a root-run exporter write through it.
fn write_textfile(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("METRICS_TEXTFILE {} names no file", path.display()))?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        // Not ending in `.prom`, so the collector ignores it while it is being written.
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        file.as_file()
            .set_permissions(Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        // On failure the temporary file is removed when `file` is dropped.
        file.persist(path).map(drop).map_err(|err| err.error)
    };
    write().map_err(|err| {
        anyhow::Error::new(err).context(format!(
            "METRICS_TEXTFILE {}: cannot write it (its directory must exist and be writable)",
            path.display()
        ))
    })
}

/// PUTs the metrics to the Pushgateway group `job="dify_usage_exporter"` (plus `instance`), which
/// replaces the group's previous metrics: exactly what a batch job's last run should leave.
fn push(
    base: &Url,
    instance: Option<&str>,
    group: Option<(&str, &str)>,
    text: String,
    timeout: Duration,
) -> Result<()> {
    let url = group_url(base, instance, group)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime for the push")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .user_agent(concat!("dify-usage-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .context("cannot build the HTTP client for the push")?;
        // The URL may hold a password: errors are shown without it.
        let mut response = client
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(text)
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        let status = response.status();
        if !status.is_success() {
            // Only as much of an error page is read as is shown.
            let (body, _) = crate::http::read_body(&mut response, 1200)
                .await
                .unwrap_or_default();
            let body = crate::http::printable(&String::from_utf8_lossy(&body));
            let body: String = body.chars().take(300).collect();
            bail!("the Pushgateway answered {status}: {}", body.trim());
        }
        Ok(())
    })
}

/// `BASE/metrics/job/dify_usage_exporter[/instance@base64/…]`; base64url lets any instance value
/// (even one with `/`) through.
fn group_url(base: &Url, instance: Option<&str>, group: Option<(&str, &str)>) -> Result<Url> {
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("PUSHGATEWAY_URL cannot take a path"))?;
        segments.pop_if_empty().extend(["metrics", "job", JOB]);
        if let Some(instance) = instance {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(instance);
            segments.extend(["instance@base64", encoded.as_str()]);
        }
        if let Some((label, value)) = group {
            segments.extend([label, value]);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_url_keeps_a_path_prefix_and_encodes_the_instance() {
        let base = Url::parse("https://gw.example.com/prefix/").unwrap();
        assert_eq!(
            group_url(&base, Some("host/1"), None).unwrap().as_str(),
            "https://gw.example.com/prefix/metrics/job/dify_usage_exporter/instance@base64/aG9zdC8x"
        );
        let root = Url::parse("http://127.0.0.1:9091").unwrap();
        assert_eq!(
            group_url(&root, None, Some(RECONCILE_GROUP))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9091/metrics/job/dify_usage_exporter/command/reconcile"
        );
        assert_eq!(
            reconcile_textfile(Path::new("/var/lib/node/dify.prom")),
            Path::new("/var/lib/node/dify-reconcile.prom")
        );
    }
}
