//! The operator's first hour (issue 19): the log format at a terminal and in a pipe, the unedited
//! `.env.example`, a value Docker kept quoted, the either-or variables, addresses in errors, and
//! warnings that repeat.

use std::path::Path;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::deliver::{dify, state_dir, summary};
use crate::support::{EXTERNAL_TOKEN, Exporter, PASSWORD, find_tool, on_a_terminal, serve_apps};

/// The repository's own `.env.example`, as a new user copies it.
fn env_example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example")).unwrap()
}

const BAD_SCHEDULE: [&str; 3] = ["next-runs", "--schedule", "61 * * * *"];

#[test]
fn log_format_auto_writes_text_on_a_terminal_and_json_in_a_pipe() {
    let (finished, terminal) = on_a_terminal(Exporter::new().args(BAD_SCHEDULE));
    finished.code(1);
    let lines: Vec<&str> = terminal.lines().collect();
    assert_eq!(lines.len(), 1, "{terminal}");
    let line = lines[0].trim_end_matches('\r');
    // `timestamp level module: message key="value"`, not a JSON object.
    let (timestamp, rest) = line.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{line}"
    );
    assert!(rest.starts_with("error commands::next_runs: "), "{line}");
    assert!(rest.contains("minute"), "{line}");

    let piped = Exporter::new().args(BAD_SCHEDULE).run();
    piped.code(1);
    let lines = piped.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", piped.stderr);
    assert_eq!(lines[0]["level"], "error");
    assert_eq!(lines[0]["context"]["module"], "commands::next_runs");

    // An explicit format wins over the terminal.
    let (finished, terminal) =
        on_a_terminal(Exporter::new().env("LOG_FORMAT", "json").args(BAD_SCHEDULE));
    finished.code(1);
    let line: serde_json::Value = serde_json::from_str(terminal.trim_end()).unwrap();
    assert_eq!(line["level"], "error");
}

#[test]
fn the_unedited_example_is_valid_with_a_warning_for_each_placeholder() {
    let finished = Exporter::new()
        .file("example.env", &env_example())
        .args(["--env-file", "example.env", "validate-config"])
        .run();
    finished.code(0);
    assert!(
        finished.stdout.starts_with("configuration is valid\n"),
        "{}",
        finished.stdout
    );
    let warnings: Vec<&str> = finished
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .collect();
    let placeholder = |variable: &str, shown: &str| {
        format!("{variable} is still a placeholder of .env.example ({shown}): set your own value")
    };
    assert_eq!(
        warnings,
        [
            placeholder("DIFY_API_URL", "`https://dify.example.com`"),
            placeholder("DIFY_API_TOKEN", "***"),
            placeholder(
                "EXTERNAL_API_URL",
                "`https://metering.example.com/v1/usage`"
            ),
            placeholder("EXTERNAL_API_TOKEN", "***"),
        ]
    );
    // The same on the log stream, as one warning line.
    let logged = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["message"] == "values are still placeholders of .env.example; set your own")
        .unwrap();
    assert_eq!(logged["level"], "warn");
    assert_eq!(
        logged["context"]["placeholders"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn a_value_docker_kept_in_quotes_says_remove_the_quotes() {
    // What `docker run --env-file .env` hands over for `CRON_SCHEDULE="15 0 * * *"`.
    let finished = Exporter::configured("https://dify.internal")
        .env("CRON_SCHEDULE", "\"15 0 * * *\"")
        .args(["validate-config"])
        .run();
    finished.code(1);
    assert_eq!(
        finished.stdout,
        "configuration is invalid (1 problem):\n  CRON_SCHEDULE: `\"15 0 * * *\"` is wrapped in quotes, \
         which `docker run --env-file` and Kubernetes keep as part of the value: remove the quotes\n"
    );
}

#[test]
fn logging_in_as_the_example_suggests_draws_no_missing_token_warning() {
    let finished = Exporter::new()
        .file(".env.example", &env_example())
        .file(
            ".env",
            &format!(
                "DIFY_API_URL=https://dify.internal\nDIFY_EMAIL=exporter@corp.internal\n\
                 DIFY_PASSWORD={PASSWORD}\nEXTERNAL_API_URL=https://meter.internal/usage\n\
                 EXTERNAL_API_TOKEN={EXTERNAL_TOKEN}\nCRON_SCHEDULE=\"15 0 * * *\"\n"
            ),
        )
        .args(["validate-config", "--output", "json"])
        .run();
    finished.code(0);
    let report: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["warnings"], json!([]), "{}", finished.stdout);
    assert!(
        !finished.stderr.contains("DIFY_API_TOKEN"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn a_login_at_the_wrong_address_says_check_dify_api_url() {
    let wrong_host = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/console/api/login"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&wrong_host)
        .await;
    let finished = Exporter::configured(&wrong_host.uri())
        .env_remove("DIFY_API_TOKEN")
        .env("DIFY_EMAIL", "exporter@corp.internal")
        .env("DIFY_PASSWORD", PASSWORD)
        .args(["run"])
        .run();
    finished.code(1);
    assert_eq!(
        finished.failure(),
        format!(
            "check DIFY_API_URL: {} has no Dify console login; it must be the base URL of Dify, the host \
             that serves /console/api: POST /console/api/login answered 405 Method Not Allowed",
            wrong_host.uri()
        )
    );

    let unreachable = Exporter::configured("http://127.0.0.1:9")
        .env_remove("DIFY_API_TOKEN")
        .env("DIFY_EMAIL", "exporter@corp.internal")
        .env("DIFY_PASSWORD", PASSWORD)
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    unreachable.code(1);
    assert!(
        unreachable.failure().starts_with(
            "check DIFY_API_URL (http://127.0.0.1:9) and that Dify is reachable: POST /console/api/login could not be reached"
        ),
        "{}",
        unreachable.failure()
    );
}

#[tokio::test]
async fn an_app_of_an_unknown_mode_is_warned_about_once_per_run() {
    let dify = MockServer::start().await;
    serve_apps(
        &dify,
        &[json!({"id": "rag-1", "name": "Pipeline", "mode": "rag-pipeline"})],
    )
    .await;
    let finished = Exporter::configured(&dify.uri())
        .env("DIFY_FETCH_DAYS", "3")
        .env("COLLECT_CHUNK_DAYS", "1")
        .args(["run"])
        .run();
    finished.code(0);
    let lines = finished.stdout_lines();
    let chunks = lines
        .iter()
        .filter(|l| l["message"] == "apps listed")
        .count();
    let warnings = lines
        .iter()
        .filter(|l| l["message"] == "app not collected: this version does not know its mode")
        .count();
    assert_eq!((chunks, warnings), (3, 1));
}

#[tokio::test]
async fn a_batch_the_meter_already_holds_is_delivered_without_an_error_looking_line() {
    let dify = dify();
    let meter = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(409).set_body_string("duplicate idempotency key"))
        .mount(&meter)
        .await;
    let (_dir, state) = state_dir();
    let finished = crate::deliver::exporter(&dify, &crate::deliver::meter(), &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", meter.uri()))
        .args(["run"])
        .run();
    finished.code(0);
    let sent = summary(&finished)["batches_sent"].as_u64().unwrap();
    assert!(sent > 0);
    let delivered = finished
        .stdout_lines()
        .into_iter()
        .filter(|l| l["message"] == "batch delivered" && l["level"] == "info")
        .count();
    assert_eq!(u64::try_from(delivered).unwrap(), sent);
    assert!(
        !finished.stdout.contains("409") && !finished.stdout.contains("duplicate"),
        "{}",
        finished.stdout
    );
}

#[test]
fn the_text_run_starting_line_is_short() {
    let dify = dify();
    let meter = crate::deliver::meter();
    let (_dir, state) = state_dir();
    let finished = crate::deliver::exporter(&dify, &meter, &state)
        .env("LOG_FORMAT", "text")
        .args(["run"])
        .run();
    finished.code(0);
    let start = finished
        .stdout
        .lines()
        .find(|l| l.contains(" commands::run: run starting "))
        .unwrap();
    assert!(start.len() < 300, "{} characters: {start}", start.len());
    assert!(
        start.contains(" source=\"console-api\" sinks=\"http\" "),
        "{start}"
    );
}

#[test]
fn test_tools_are_found_on_path_before_debian_directories() {
    use std::os::unix::fs::PermissionsExt as _;
    let (on_path, debian) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let place = |dir: &Path, mode: u32| {
        let tool = dir.join("promtool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(mode)).unwrap();
        tool
    };
    let in_debian = place(debian.path(), 0o755);
    let fallback = [debian.path().to_path_buf()];
    let path = std::env::join_paths([on_path.path()]).unwrap();
    // Not executable on PATH: the Debian directory's one.
    let not_executable = place(on_path.path(), 0o644);
    assert_eq!(
        find_tool("promtool", Some(&path), &fallback),
        Some(in_debian)
    );
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        find_tool("promtool", Some(&path), &fallback),
        Some(not_executable)
    );
    assert_eq!(find_tool("initdb", Some(&path), &fallback), None);
}
