//! Metrics of batch runs: a real Prometheus Pushgateway (Debian `prometheus-pushgateway`) holds the
//! right values after a successful and after a failed run; the textfile passes `promtool check
//! metrics`; the alert rules pass `promtool check rules` and their unit tests; and a metrics target
//! that does not work is a warning that leaves the exit code alone.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use rust_decimal::Decimal;
use tempfile::TempDir;

use crate::deliver::{dify, exporter, meter, state_dir, summary, yesterday};
use crate::support::{EVENT_TIMEOUT, Exporter, Finished, status};

/// The messages of a run's `warn` lines, but for the simulator's `agent` app, which this version
/// does not collect and names in a warning of its own.
fn unexpected_warnings(finished: &Finished) -> Vec<String> {
    finished
        .stdout_lines()
        .into_iter()
        .filter(|line| {
            line["level"] == "warn"
                && line["message"] != "app not collected: this version does not know its mode"
        })
        .map(|line| line["message"].as_str().unwrap().to_owned())
        .collect()
}

/// A binary from a Debian package, which the test needs (and `.ci/run` installs): never skipped.
fn tool(name: &str, package: &str) -> PathBuf {
    crate::support::tool(name, package, &crate::support::debian_bin_dirs())
}

/// A Pushgateway on a free 127.0.0.1 port, stopped when dropped.
struct Pushgateway {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Pushgateway {
    fn start() -> Pushgateway {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(tool("prometheus-pushgateway", "prometheus-pushgateway"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("persistence").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut gateway = Pushgateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Ready is an event the gateway announces on /-/ready: poll for it, bounded.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(status) = gateway.child.try_wait().unwrap() {
                panic!("the Pushgateway exited at start: {status}");
            }
            if get(&format!("{}/-/ready", gateway.url)).is_some_and(|(code, _)| code == 200) {
                return gateway;
            }
            assert!(
                Instant::now() < deadline,
                "the Pushgateway never became ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        let (status, body) =
            get(&format!("{}/metrics", self.url)).expect("the Pushgateway answers");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET's status and body; `None` when nothing answers.
fn get(url: &str) -> Option<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::get(url).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    })
}

/// The value of the one series `name` whose labels include every one of `labels`.
#[track_caller]
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let found: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let series_name = series.split('{').next().unwrap_or_default();
            series_name == name
                && labels
                    .iter()
                    .all(|(label, value)| series.contains(&format!("{label}=\"{value}\"")))
        })
        .map(|(_, value)| value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{text}");
    found[0].to_owned()
}

/// The http sink's delivery figure equals the run's, and the ledger kept no decrease.
fn assert_sink_figures(text: &str, group: &[(&str, &str)], summary: &serde_json::Value) {
    let sent = value(
        text,
        "dify_usage_exporter_last_run_records_sent",
        &[group[0], group[1], ("sink", "http")],
    );
    assert_ne!(sent, "0");
    assert_eq!(summary["records_sent"], sent.parse::<u64>().unwrap());
    let kept = value(text, "dify_usage_exporter_ledger_kept_decreases", group);
    assert_eq!(kept, "0");
}

fn number(text: &str) -> f64 {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The summary figure as a metric's text: integers print without a fraction.
fn figure(summary: &serde_json::Value, key: &str) -> String {
    summary[key].as_u64().unwrap().to_string()
}

const INSTANCE: &str = "exporter/test 1";

#[test]
fn a_pushgateway_holds_the_runs_metrics_and_a_failed_run_keeps_the_last_success() {
    let gateway = Pushgateway::start();
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let with_gateway = |exporter: Exporter| {
        exporter
            .env("PUSHGATEWAY_URL", &gateway.url)
            .env("PUSHGATEWAY_INSTANCE", INSTANCE)
    };
    let group = [("job", "dify_usage_exporter"), ("instance", INSTANCE)];
    let metric =
        |text: &str, name: &str| value(text, &format!("dify_usage_exporter_{name}"), &group);

    let before = Utc::now();
    let ok = with_gateway(exporter(&dify, &meter, &state))
        .args(["run"])
        .run();
    let after = Utc::now();
    ok.code(0);
    assert!(unexpected_warnings(&ok).is_empty(), "{}", ok.stdout);
    let s = summary(&ok);
    let text = gateway.metrics();
    assert_eq!(metric(&text, "last_run_exit_code"), "0");
    assert_eq!(metric(&text, "last_run_records"), figure(&s, "records"));
    assert_eq!(metric(&text, "last_run_tokens"), figure(&s, "total_tokens"));
    assert_eq!(
        metric(&text, "last_run_dify_requests"),
        figure(&s, "dify_requests")
    );
    assert_eq!(metric(&text, "last_run_retries"), "0");
    let cost = value(
        &text,
        "dify_usage_exporter_last_run_cost",
        &[group[0], group[1], ("currency", "USD")],
    );
    assert_eq!(
        Decimal::from_str(&cost).unwrap(),
        Decimal::from_str(s["cost"]["USD"].as_str().unwrap()).unwrap()
    );
    let outbox = |text: &str, state: &str| {
        value(
            text,
            "dify_usage_exporter_outbox_batches",
            &[group[0], group[1], ("sink", "http"), ("state", state)],
        )
    };
    assert_eq!(outbox(&text, "queued"), "0");
    assert_eq!(outbox(&text, "dead"), "0");
    assert_sink_figures(&text, &group, &s);
    let build = value(
        &text,
        "dify_usage_exporter_build_info",
        &[group[0], group[1], ("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(build, "1");
    let midnight_after_watermark = (yesterday() + Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    // Whole seconds print without a fraction, whatever notation the gateway used.
    assert_eq!(
        number(&metric(&text, "watermark_timestamp_seconds")).to_string(),
        midnight_after_watermark.to_string()
    );
    let success = metric(&text, "last_success_timestamp_seconds");
    let finished = number(&metric(&text, "last_run_timestamp_seconds"));
    #[allow(clippy::cast_precision_loss)]
    let (from, to) = (
        before.timestamp_millis() as f64 / 1000.0,
        after.timestamp_millis() as f64 / 1000.0,
    );
    assert!(
        from <= finished && finished <= to,
        "{from} <= {finished} <= {to}"
    );
    assert!(
        (number(&success) - finished).abs() < 1.0,
        "{success} vs {finished}"
    );
    let duration = number(&metric(&text, "last_run_duration_seconds"));
    assert!(
        duration > 0.0 && duration <= to - from + 0.001,
        "{duration}"
    );

    // Dify unreachable: the run fails, and the success time stays that of the first run.
    let failed = with_gateway(exporter(&dify, &meter, &state))
        .env("DIFY_API_URL", "http://127.0.0.1:9")
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    failed.code(1);
    let text = gateway.metrics();
    assert_eq!(metric(&text, "last_run_exit_code"), "1");
    assert_eq!(metric(&text, "last_run_records"), "0");
    assert_eq!(metric(&text, "last_success_timestamp_seconds"), success);
    assert!(number(&metric(&text, "last_run_timestamp_seconds")) > number(&success));
    assert_eq!(outbox(&text, "queued"), "0");
}

#[test]
fn the_textfile_is_complete_readable_by_all_and_passes_promtool() {
    let (dify, meter) = (dify(), meter());
    let (dir, state) = state_dir();
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    let textfile = textfile_dir.join("dify_usage_exporter.prom");
    let ok = exporter(&dify, &meter, &state)
        .env("METRICS_TEXTFILE", textfile.to_str().unwrap())
        .args(["run"])
        .run();
    ok.code(0);
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = std::fs::read_dir(&textfile_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [textfile.file_name().unwrap()], "no temp file left");
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        value(&text, "dify_usage_exporter_last_run_exit_code", &[]),
        "0"
    );
    assert_eq!(
        value(&text, "dify_usage_exporter_last_run_records", &[]),
        figure(&summary(&ok), "records")
    );
    assert!(
        !text.contains("# EOF"),
        "classic text format expected:\n{text}"
    );

    // `resend` leaves its metrics too: nothing collected, its own exit code.
    let resend = exporter(&dify, &meter, &state)
        .env("METRICS_TEXTFILE", textfile.to_str().unwrap())
        .args(["resend", "--all-dead"])
        .run();
    resend.code(0);
    let after_resend = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        value(&after_resend, "dify_usage_exporter_last_run_records", &[]),
        "0"
    );
    assert_eq!(
        value(&after_resend, "dify_usage_exporter_last_run_exit_code", &[]),
        "0"
    );
    assert_ne!(
        value(
            &after_resend,
            "dify_usage_exporter_last_run_timestamp_seconds",
            &[]
        ),
        value(&text, "dify_usage_exporter_last_run_timestamp_seconds", &[])
    );

    let checked = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&textfile).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn unusable_metrics_targets_are_one_warning_each_and_keep_the_exit_code() {
    let (dify, meter) = (dify(), meter());
    let (dir, state) = state_dir();
    let missing = dir.path().join("no-such-dir/dify_usage_exporter.prom");
    let finished = exporter(&dify, &meter, &state)
        .env("METRICS_TEXTFILE", missing.to_str().unwrap())
        .env(
            "PUSHGATEWAY_URL",
            "http://user:pw-canary-93d1e0aa@127.0.0.1:9",
        )
        .args(["run"])
        .run();
    finished.code(0);
    let warnings = unexpected_warnings(&finished);
    assert_eq!(
        warnings,
        [
            "cannot write METRICS_TEXTFILE; the run's data is safe in the state database",
            "cannot push the metrics to PUSHGATEWAY_URL; the run's data is safe in the state database",
        ]
    );
    let push = finished.log(&warnings[1]);
    assert_eq!(
        push["context"]["pushgateway"],
        "http://user:***@127.0.0.1:9"
    );
    // The success time was still kept.
    let report: serde_json::Value = serde_json::from_str(&status(&state, "json")).unwrap();
    assert!(report["last_success"].is_string(), "{report}");
}

#[test]
fn metrics_variables_are_validated_and_shown() {
    let invalid = Exporter::configured("http://127.0.0.1:9")
        .env("METRICS_TEXTFILE", "/var/lib/node_exporter/metrics.txt")
        .env("PUSHGATEWAY_INSTANCE", "host-1")
        .args(["validate-config"])
        .run();
    invalid.code(1);
    assert!(
        invalid.stdout.contains("METRICS_TEXTFILE: `/var/lib/node_exporter/metrics.txt` is not a file name ending in `.prom`"),
        "{}",
        invalid.stdout
    );
    assert!(
        invalid
            .stdout
            .contains("PUSHGATEWAY_INSTANCE: is set but PUSHGATEWAY_URL is not"),
        "{}",
        invalid.stdout
    );
    let clear_text_password = Exporter::configured("http://127.0.0.1:9")
        .env("PUSHGATEWAY_URL", "http://ops:secret-pw@gw.example.com")
        .args(["validate-config"])
        .run();
    clear_text_password.code(1);
    assert!(
        clear_text_password
            .stdout
            .contains("PUSHGATEWAY_URL: `http://ops:***@gw.example.com` uses plain http"),
        "{}",
        clear_text_password.stdout
    );
    assert!(!clear_text_password.stdout.contains("secret-pw"));
    let in_cluster = Exporter::configured("http://127.0.0.1:9")
        .env("PUSHGATEWAY_URL", "http://pushgateway.monitoring.svc:9091")
        .args(["validate-config"])
        .run();
    in_cluster.code(0);
    let valid = Exporter::configured("http://127.0.0.1:9")
        .env("METRICS_TEXTFILE", "/var/lib/node_exporter/dify.prom")
        .env("PUSHGATEWAY_URL", "https://ops:secret-pw@gw.example.com/")
        .env("PUSHGATEWAY_INSTANCE", "host-1")
        .args(["validate-config", "--output", "json"])
        .run();
    valid.code(0);
    let report: serde_json::Value = serde_json::from_str(&valid.stdout).unwrap();
    let config = &report["config"];
    assert_eq!(
        config["METRICS_TEXTFILE"],
        "/var/lib/node_exporter/dify.prom"
    );
    assert_eq!(config["PUSHGATEWAY_URL"], "https://ops:***@gw.example.com");
    assert_eq!(config["PUSHGATEWAY_INSTANCE"], "host-1");
    assert!(!valid.stdout.contains("secret-pw"));
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let promtool = tool("promtool", "prometheus");
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yaml"],
        ["test", "rules", "deploy/prometheus/alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
