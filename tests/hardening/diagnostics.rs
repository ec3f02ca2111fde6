//! Item 8: messages that name the real cause.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use dify_sim::MeterFaults;
use nix::sys::signal::Signal;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::deliver::{dify, exporter, meter, state_dir, summary, yesterday};
use crate::support::{
    APPS_PATH, Announce, CANARIES, DIFY_TOKEN, EVENT_TIMEOUT, EXTERNAL_TOKEN, Exporter,
    serve_no_usage, slow_apps_page,
};

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
        reset.contains(&format!(
            "last error: POST {} (EXTERNAL_API_URL) could not be reached: connection closed before message completed",
            meter.url()
        )),
        "{reset}"
    );

    // Nothing listens on the discard port.
    let refused = run("http://127.0.0.1:9/usage", &[]);
    assert!(
        refused.contains(
            "POST http://127.0.0.1:9/usage (EXTERNAL_API_URL) could not be reached: connection refused"
        ),
        "{refused}"
    );

    meter.set_faults(MeterFaults {
        hang: true,
        ..MeterFaults::default()
    });
    let timeout = run(&meter.url(), &[("HTTP_TIMEOUT", "1")]);
    assert!(
        timeout.contains(&format!(
            "POST {} (EXTERNAL_API_URL) could not be reached: timed out after 1 s (HTTP_TIMEOUT)",
            meter.url()
        )),
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
