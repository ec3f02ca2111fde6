//! Hostile inputs and a broken network (issue 9): each test drives the binary against a loopback
//! server that misbehaves in exactly one way, and checks the exit code, the message, that no
//! secret leaks (every `Finished` checks the canaries) and, where data is involved, that the meter
//! ends up holding exactly the truth. docs/robustness.md lists every input tested here.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{Days, NaiveDate};
use dify_sim::{AuthMode, DifySim, Faults, MeterConfig, MeterFaults, MeterSim, SimConfig};
use nix::sys::signal::Signal;
use serde_json::Value;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::deliver::{dify, exporter, held, meter, state_dir, summary, yesterday};
use crate::support::{
    APPS_PATH, Announce, CANARIES, DIFY_TOKEN, EVENT_TIMEOUT, EXTERNAL_TOKEN, Exporter, PASSWORD,
    Row, json_lines, serve_no_usage, slow_apps_page, truth_row,
};

/// Answers `status` with the request's headers and body in its own body: a debugging proxy or an
/// error page that echoes what it was sent, secrets included.
struct Echo(u16);

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        let echoed = format!(
            "request was: {} | {}",
            String::from_utf8_lossy(&request.body),
            headers.join(" | ")
        );
        ResponseTemplate::new(self.0).set_body_json(serde_json::json!({ "message": echoed }))
    }
}

/// A state database's bytes, with its journal, as text to search for secrets.
fn database_text(state: &Path) -> String {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|name| std::fs::read(state.join(name)).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

fn status(state: &Path, format: &str) -> crate::support::Finished {
    Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .args(["status", "--output", format])
        .run()
}

// Item 1: a value that cannot be an HTTP header.

#[tokio::test]
async fn a_token_that_cannot_be_a_header_is_refused_before_any_request() {
    let dify = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&dify)
        .await;
    let injected = format!("{DIFY_TOKEN}\nX-Injected: 1");

    let validate = Exporter::configured(&dify.uri())
        .env("DIFY_API_TOKEN", &injected)
        .args(["validate-config"])
        .run();
    validate.code(1);
    assert!(
        validate.stdout.contains(
            "DIFY_API_TOKEN: contains a character that cannot be sent in an HTTP header (character 21 of 34"
        ),
        "{}",
        validate.stdout
    );

    let run = Exporter::configured(&dify.uri())
        .env("DIFY_API_TOKEN", &injected)
        .env("EXTERNAL_API_TOKEN", &format!("{EXTERNAL_TOKEN}\u{1}x"))
        .args(["run"])
        .run();
    run.code(1);
    let problems = run
        .stdout_lines()
        .into_iter()
        .chain(run.stderr_lines())
        .find(|l| {
            l["message"] == "configuration is invalid; fix the variables named in `problems`"
        });
    let problems = problems.expect("a configuration error line")["context"]["problems"].to_string();
    assert!(
        problems.contains("DIFY_API_TOKEN: contains a character"),
        "{problems}"
    );
    assert!(
        problems.contains("EXTERNAL_API_TOKEN: contains a character"),
        "{problems}"
    );
}

// Item 5: secrets echoed back by a server.

#[tokio::test]
async fn a_dify_error_that_echoes_the_token_or_the_password_is_masked() {
    let dify = MockServer::start().await;
    Mock::given(any())
        .respond_with(Echo(500))
        .mount(&dify)
        .await;

    let token = Exporter::configured(&dify.uri())
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    token.code(1);
    let error = token.failure();
    assert!(
        error.contains("answered 500 Internal Server Error"),
        "{error}"
    );
    assert!(error.contains("authorization: Bearer ***"), "{error}");

    // The login sends the password base64-encoded (Dify >= 1.11.2): that form is a secret too.
    let encoded = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    let login = Exporter::configured(&dify.uri())
        .env_remove("DIFY_API_TOKEN")
        .env("DIFY_EMAIL", "owner@example.com")
        .env("DIFY_PASSWORD", PASSWORD)
        .env("DIFY_PASSWORD_ENCODING", "base64")
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    login.code(1);
    let error = login.failure();
    assert!(error.contains("\"password\":\"***\""), "{error}");
    assert!(!login.stdout.contains(&encoded), "{}", login.stdout);
}

#[tokio::test]
async fn a_meter_rejection_that_echoes_the_token_is_masked_in_logs_status_and_the_database() {
    let dify = dify();
    let echoing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Echo(400))
        .mount(&echoing)
        .await;
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter(), &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", echoing.uri()))
        .args(["run"])
        .run();
    run.code(1);
    let dead = run.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    let reason = dead["context"]["reason"].as_str().unwrap();
    assert!(reason.contains("answered 400 Bad Request"), "{reason}");
    assert!(reason.contains("authorization: Bearer ***"), "{reason}");

    let text = status(&state, "text");
    text.code(0);
    assert!(text.stdout.contains("Bearer ***"), "{}", text.stdout);
    status(&state, "json").code(0);
    let stored = database_text(&state);
    assert!(stored.contains("Bearer ***"), "the error is stored");
    for canary in CANARIES {
        assert!(!stored.contains(canary), "{canary} in state.db");
    }
}

// Item 6: unbounded windows, and progress kept chunk by chunk.

#[test]
fn a_window_beyond_the_maximum_is_refused_with_the_steps_to_backfill() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter, &state)
        .args(["run", "--from", "1900-01-01", "--to"])
        .args([yesterday().to_string()])
        .run();
    run.code(1);
    let line = run.log("invalid --from/--to");
    let error = line["context"]["error"].as_str().unwrap();
    assert!(
        error.contains("more than the 366 one run may collect; backfill in steps of at most 366 days, oldest first: `exporter run --from 1900-01-01 --to 1901-01-01`"),
        "{error}"
    );
    assert_eq!(dify.stats().requests_total, 0, "nothing was collected");

    let set = |day: NaiveDate| {
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["watermark", "set", &day.to_string(), "--yes"])
            .run()
    };
    let far = set("1900-01-01".parse().unwrap());
    far.code(1);
    let refused = json_lines(&far.stderr)
        .into_iter()
        .find(|l| l["message"] == "watermark too far back")
        .expect("a refusal");
    assert!(
        refused["context"]["error"]
            .as_str()
            .unwrap()
            .contains("backfill in steps"),
        "{refused}"
    );
    set(yesterday() - Days::new(367)).code(1);
    set(yesterday() - Days::new(366)).code(0);
}

#[test]
fn a_long_collection_keeps_its_progress_and_resumes_where_it_stopped() {
    let first_day = yesterday() - Days::new(5);
    let dify = DifySim::start(SimConfig {
        seed: 9,
        auth: AuthMode::AdminKey,
        apps_per_mode: 1,
        runs_per_app_per_day: 2,
        first_day,
        days: 6,
        // Slow enough that the signal lands while chunks remain.
        faults: Faults {
            delay: std::time::Duration::from_millis(40),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .unwrap();
    let meter = meter();
    let (_dir, state) = state_dir();
    let chunked = |exporter: Exporter| {
        exporter
            .env("COLLECT_CHUNK_DAYS", "1")
            .env("DIFY_FETCH_DAYS", "6")
            .env("EXPORT_LOOKBACK_DAYS", "0")
    };

    let mut running = chunked(exporter(&dify, &meter, &state))
        .args(["run"])
        .spawn();
    running.wait_for_line("\"records queued\"");
    running.signal(Signal::SIGTERM);
    let stopped = running.wait();
    stopped.code(143);
    let first = summary(&stopped);
    assert_eq!(first["outcome"], "stopped");
    assert_eq!(first["from"], first_day.to_string());
    assert_eq!(first["to"], yesterday().to_string());
    assert!(first["dify_requests"].as_u64().unwrap() > 0, "{first}");
    let start = stopped.log("run starting")["context"].clone();
    assert_eq!(
        (start["from"].clone(), start["days"].clone()),
        (first_day.to_string().into(), 6.into())
    );

    let report: Value = serde_json::from_str(&status(&state, "json").stdout).unwrap();
    let watermark: NaiveDate = report["watermark"].as_str().unwrap().parse().unwrap();
    assert!(
        watermark >= first_day && watermark < yesterday(),
        "stopped after some chunks, not all: {watermark}"
    );

    let resumed = chunked(exporter(&dify, &meter, &state)).args(["run"]).run();
    resumed.code(0);
    assert_eq!(
        summary(&resumed)["from"],
        (watermark + Days::new(1)).to_string(),
        "the next run starts after the last chunk queued"
    );
    let mut truth: Vec<Row> = dify
        .truth(first_day, yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    truth.sort();
    assert!(truth.len() > 20, "{}", truth.len());
    assert_eq!(held(&meter), truth);
}

// Item 7: batches the meter refuses for their size.

/// A metering API that accepts at most 20 records per POST and answers 413 above; it keeps what
/// it accepted, by `source_event_id`, as a receiver that upserts does.
#[derive(Clone, Default)]
struct SmallMeter(Arc<Mutex<std::collections::BTreeMap<String, Value>>>);

impl Respond for SmallMeter {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let records = body["records"].as_array().unwrap();
        if records.len() > 20 {
            return ResponseTemplate::new(413).set_body_string("at most 20 records per request");
        }
        let mut held = self.0.lock().unwrap();
        for record in records {
            let id = record["metadata"]["source_event_id"].as_str().unwrap();
            held.insert(id.to_owned(), record.clone());
        }
        ResponseTemplate::new(200)
    }
}

fn big_day() -> DifySim {
    DifySim::start(SimConfig {
        seed: 5,
        auth: AuthMode::AdminKey,
        apps_per_mode: 4,
        runs_per_app_per_day: 6,
        first_day: yesterday(),
        days: 1,
        ..SimConfig::default()
    })
    .unwrap()
}

/// The compared fields of the truth and of wire records.
fn key(
    day: &str,
    app: &str,
    user: &str,
    model: &str,
    tokens: u64,
) -> (String, String, String, String, u64) {
    (
        day.to_owned(),
        app.to_owned(),
        user.to_owned(),
        model.to_owned(),
        tokens,
    )
}

#[tokio::test]
async fn a_413_splits_the_batch_in_halves_until_the_meter_accepts_it() {
    let dify = big_day();
    let small = SmallMeter::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/usage"))
        .respond_with(small.clone())
        .mount(&server)
        .await;
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter(), &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", server.uri()))
        .env("BATCH_SIZE", "43")
        .env("DIFY_FETCH_DAYS", "1")
        .args(["run"])
        .run();
    run.code(0);
    let split =
        run.log("batch too large for the metering API (413); split in halves and sent again");
    assert_eq!(split["context"]["records"], 43);
    let s = summary(&run);
    assert_eq!(
        (s["batches_queued"].clone(), s["batches_dead"].clone()),
        (0.into(), 0.into())
    );

    let truth = dify.truth(yesterday(), yesterday());
    assert!(truth.len() > 43, "{}", truth.len());
    let mut want: Vec<_> = truth
        .iter()
        .map(|r| {
            key(
                &r.usage_date.to_string(),
                &r.app_id,
                &r.user,
                &r.model,
                r.total_tokens,
            )
        })
        .collect();
    let mut got: Vec<_> = small
        .0
        .lock()
        .unwrap()
        .values()
        .map(|r| {
            key(
                r["usage_date"].as_str().unwrap(),
                r["metadata"]["source_app_id"].as_str().unwrap(),
                r["metadata"]["user"].as_str().unwrap(),
                r["model"].as_str().unwrap(),
                r["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn resend_rebatches_to_the_current_batch_size_and_discard_clears_a_dead_letter() {
    let dify = big_day();
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        max_batch: 20,
        ..MeterConfig::default()
    })
    .unwrap();
    let (_dir, state) = state_dir();
    let run = |batch_size: &str, args: &[&str]| {
        exporter(&dify, &meter, &state)
            .env("BATCH_SIZE", batch_size)
            .env("DIFY_FETCH_DAYS", "1")
            .args(args)
            .run()
    };
    let first = run("43", &["run"]);
    first.code(1);
    let dead = summary(&first)["batches_dead"].as_u64().unwrap();
    assert!(dead >= 1, "{dead}");

    let resend = run("20", &["resend", "--all-dead"]);
    resend.code(0);
    let done = resend.log("resend finished")["context"].clone();
    assert_eq!(done["batches_revived"], dead);
    assert_eq!(done["batches_rebatched"], dead);
    assert_eq!(done["batches_dead"], 0);
    let mut truth: Vec<Row> = dify
        .truth(yesterday(), yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    truth.sort();
    assert_eq!(held(&meter), truth);

    // A batch the receiver will never take: discard it, on the record.
    meter.set_faults(MeterFaults {
        reject_next: 1,
        ..MeterFaults::default()
    });
    // Queued again under other keys by a smaller BATCH_SIZE; one of them is refused for good.
    let day = yesterday().to_string();
    let rejected = run("19", &["run", "--from", &day, "--to", &day]);
    rejected.code(1);
    assert_eq!(summary(&rejected)["batches_dead"], 1);
    let report: Value = serde_json::from_str(&status(&state, "json").stdout).unwrap();
    let id = report["dead"][0]["id"].as_i64().unwrap();
    let discard = |args: &[&str]| {
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["discard"])
            .args(args)
            .run()
    };
    let unconfirmed = discard(&["--batch", &id.to_string()]);
    unconfirmed.code(1);
    assert!(
        unconfirmed
            .stdout
            .contains(&format!("would discard batch #{id} (")),
        "{}",
        unconfirmed.stdout
    );
    discard(&["--batch", "999999", "--yes"]).code(1);
    let done = discard(&["--batch", &id.to_string(), "--yes"]);
    done.code(0);
    let line = json_lines(&done.stderr)
        .into_iter()
        .find(|l| {
            l["message"] == "dead batch discarded by the operator; its records will not be sent"
        })
        .expect("the discard is logged");
    assert_eq!(line["context"]["batch_id"], id);

    let text = status(&state, "text");
    assert!(
        text.stdout
            .contains("discarded by the operator (never sent):"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("  #{id:<6}")),
        "{}",
        text.stdout
    );
    // The discarded dead letter no longer fails every run, and the meter still holds the truth.
    run("19", &["run"]).code(0);
    assert_eq!(held(&meter), truth);
}

// Item 8: messages that name the real cause.

#[test]
fn an_env_file_with_a_byte_order_mark_is_read_and_a_directory_is_named() {
    let bom = Exporter::new()
        .file(
            "bom.env",
            &format!(
                "\u{feff}DIFY_API_URL=http://127.0.0.1:1\nDIFY_API_TOKEN={DIFY_TOKEN}\n\
                 EXTERNAL_API_URL=http://127.0.0.1:9/usage\nEXTERNAL_API_TOKEN={EXTERNAL_TOKEN}\n"
            ),
        )
        .args(["--env-file", "bom.env", "validate-config"])
        .run();
    bom.code(0);
    assert!(
        bom.stdout.starts_with("configuration is valid"),
        "{}",
        bom.stdout
    );

    let exporter = Exporter::new();
    std::fs::create_dir(exporter.dir().join("conf")).unwrap();
    let directory = exporter
        .args(["--env-file", "conf", "validate-config"])
        .run();
    directory.code(1);
    assert!(
        directory
            .stderr
            .contains("--env-file conf: is a directory; name the env file inside it"),
        "{}",
        directory.stderr
    );
}

/// `exporter` as an unprivileged user (root reads everything, so permission tests drop to
/// `nobody` with setpriv when run as root).
fn unprivileged_status(state: &Path) -> (Option<i32>, String, String) {
    let binary = assert_cmd::cargo::cargo_bin!("exporter");
    let mut command = if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary);
        command
    } else {
        Command::new(binary)
    };
    let output = command
        .env_clear()
        .env("STATE_DIR", state)
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .current_dir("/")
        .args(["status"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    for canary in CANARIES {
        assert!(!stdout.contains(canary) && !stderr.contains(canary));
    }
    (output.status.code(), stdout, stderr)
}

#[test]
fn status_names_permission_problems_instead_of_no_state_or_a_damaged_database() {
    let (dir, state) = state_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["watermark", "set", &yesterday().to_string(), "--yes"])
        .run()
        .code(0);

    // STATE_DIR is 0700 and someone else's: nothing can be looked up in it.
    let (code, stdout, stderr) = unprivileged_status(&state);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("no state yet"), "{stdout}");
    assert!(stderr.contains("cannot look into STATE_DIR"), "{stderr}");
    assert!(stderr.contains(": permission denied"), "{stderr}");

    // Readable, but neither the file nor the directory is writable by this user.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("state.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, _, stderr) = unprivileged_status(&state);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("move it aside"), "{stderr}");
    assert!(
        stderr.contains(": STATE_DIR is read-only for this user (SQLite creates state.db-wal"),
        "{stderr}"
    );

    // Not readable at all.
    std::fs::set_permissions(
        state.join("state.db"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (code, _, stderr) = unprivileged_status(&state);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("move it aside"), "{stderr}");
    assert!(
        stderr.contains(": permission denied; the database itself was not touched"),
        "{stderr}"
    );
}

#[tokio::test]
async fn meter_transport_failures_name_their_cause() {
    let (dify, meter) = (dify(), meter());
    let run = |meter_url: &str, extra: &[(&str, &str)]| {
        let (dir, state) = state_dir();
        let mut exporter = exporter(&dify, &meter, &state)
            .env("EXTERNAL_API_URL", meter_url)
            .env("MAX_RETRY", "0");
        for (key, value) in extra {
            exporter = exporter.env(key, value);
        }
        let finished = exporter.args(["run"]).run();
        drop(dir);
        finished.code(1);
        finished.failure()
    };

    meter.set_faults(MeterFaults {
        reset_connections: true,
        ..MeterFaults::default()
    });
    let reset = run(&meter.url(), &[]);
    assert!(
        reset.contains(
            "last error: POST EXTERNAL_API_URL could not be reached: connection closed before message completed"
        ),
        "{reset}"
    );

    // Nothing listens on the discard port.
    let refused = run("http://127.0.0.1:9/usage", &[]);
    assert!(
        refused.contains("POST EXTERNAL_API_URL could not be reached: connection refused"),
        "{refused}"
    );

    meter.set_faults(MeterFaults {
        hang: true,
        ..MeterFaults::default()
    });
    let timeout = run(&meter.url(), &[("HTTP_TIMEOUT", "1")]);
    assert!(
        timeout.contains(
            "POST EXTERNAL_API_URL could not be reached: timed out after 1 s (HTTP_TIMEOUT)"
        ),
        "{timeout}"
    );
    meter.set_faults(MeterFaults::default());

    let redirecting = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "Location",
            format!("http://user:{EXTERNAL_TOKEN}@127.0.0.1:1/elsewhere").as_str(),
        ))
        .mount(&redirecting)
        .await;
    let redirect = run(&format!("{}/usage", redirecting.uri()), &[]);
    assert!(redirect.contains("check EXTERNAL_API_URL"), "{redirect}");
    assert!(
        redirect.contains("answered 307 Temporary Redirect: a redirect to http://127.0.0.1:1/elsewhere, which is not followed"),
        "{redirect}"
    );
}

#[tokio::test]
async fn failed_and_stopped_runs_report_their_requests_and_window() {
    let failing = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let failed = Exporter::configured(&failing.uri())
        .env("MAX_RETRY", "2")
        .args(["run"])
        .run();
    failed.code(1);
    let s = summary(&failed);
    assert_eq!(s["outcome"], "failed");
    assert_eq!(
        (s["dify_requests"].clone(), s["retries"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(
        (s["from"].clone(), s["to"].clone()),
        (
            yesterday().to_string().into(),
            yesterday().to_string().into()
        )
    );

    let slow = MockServer::start().await;
    serve_no_usage(&slow).await;
    let (announce, arrived) = Announce::new(slow_apps_page(std::time::Duration::from_millis(500)));
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(announce)
        .mount(&slow)
        .await;
    let running = Exporter::configured(&slow.uri()).args(["run"]).spawn();
    arrived
        .recv_timeout(EVENT_TIMEOUT)
        .expect("the request reached Dify");
    running.signal(Signal::SIGTERM);
    let stopped = running.wait();
    stopped.code(143);
    let s = summary(&stopped);
    assert_eq!(s["outcome"], "stopped");
    assert_eq!(
        (s["dify_requests"].clone(), s["retries"].clone()),
        (1.into(), 0.into())
    );
    assert_eq!(s["from"], yesterday().to_string());
}
