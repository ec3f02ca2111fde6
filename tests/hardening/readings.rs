//! Issue 18 classes 7 and 8 in the configuration and in what servers send: one reading of every
//! variable for every command, credentials beside a token, control characters and invalid UTF-8
//! from a server, `localhost.`, a variable given twice, values that are not UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::deliver::{dify, exporter, held, meter, truth, yesterday};
use crate::support::{APPS_PATH, Exporter, serve_no_usage, status};

#[test]
fn state_dir_with_a_trailing_space_is_one_directory_for_every_command() {
    let (dify, meter) = (dify(), meter());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spaced = format!("{} ", state.display());
    exporter(&dify, &meter, &state)
        .env("STATE_DIR", &spaced)
        .args(["run"])
        .run()
        .code(0);
    assert_eq!(held(&meter), truth(&dify));
    let shown = Exporter::new()
        .env("STATE_DIR", &spaced)
        .args(["watermark", "show"])
        .run();
    shown.code(0);
    assert_eq!(shown.stdout, format!("{}\n", yesterday()));
    assert!(status(&state, "text").contains(&format!("{}", state.join("state.db").display())));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state"], "no second state directory");
}

#[test]
fn a_value_that_is_not_utf8_is_a_configuration_error_naming_it() {
    let latin1 = OsStr::from_bytes(b"/tmp/caf\xe9");
    for (variable, args) in [
        ("STATE_DIR", &["run"][..]),
        ("STATE_DIR", &["status"]),
        ("STATE_DIR", &["watermark", "show"]),
        ("DIFY_API_TOKEN", &["validate-config"]),
    ] {
        let exporter = Exporter::configured("http://127.0.0.1:9").env_os(variable, latin1);
        let cwd = exporter.dir().to_path_buf();
        let finished = exporter.args(args).run();
        finished.code(1);
        let line = finished
            .stdout_lines()
            .into_iter()
            .chain(finished.stderr_lines())
            .find(|l| l["message"] == "cannot load the environment")
            .unwrap_or_else(|| panic!("{args:?}: {}{}", finished.stdout, finished.stderr));
        assert_eq!(
            line["context"]["error"],
            format!(
                "{variable}: its value is not valid UTF-8 (the value is not shown); set it as UTF-8 text"
            )
        );
        assert!(!cwd.join("data").exists(), "no state in ./data");
    }
}

#[test]
fn a_variable_given_twice_in_different_case_is_named_alone() {
    let finished = Exporter::configured("http://127.0.0.1:9")
        .file(".env", "LOG_LEVEL=debug\nlog_level=warn\n")
        .args(["validate-config"])
        .run();
    finished.code(1);
    let error = finished.stderr_lines()[0]["context"]["error"].clone();
    assert_eq!(
        error,
        "LOG_LEVEL is set twice in the env file ./.env, as `LOG_LEVEL` and `log_level`; keep one"
    );
    assert!(
        !finished.stderr.contains("required and not set"),
        "{}",
        finished.stderr
    );
}

#[test]
fn credentials_in_a_url_beside_a_token_are_refused_and_localhost_dot_is_loopback() {
    let finished = Exporter::configured("http://localhost.:9")
        .env(
            "EXTERNAL_API_URL",
            "https://user:meter-url-pw-1@meter.corp.test/x",
        )
        .args(["validate-config"])
        .run();
    finished.code(1);
    assert_eq!(
        finished.stdout,
        "configuration is invalid (1 problem):\n  EXTERNAL_API_URL: `https://user:***@meter.corp.test/x` carries \
         `user:password@` while requests authenticate with EXTERNAL_API_TOKEN; a request carries one Authorization \
         header: remove the credentials from the URL\n"
    );
    assert!(!finished.stderr.contains("meter-url-pw-1"));
    Exporter::configured("http://localhost.:9")
        .args(["validate-config"])
        .run()
        .code(0);
}

#[tokio::test]
async fn invalid_utf8_from_dify_is_refused_naming_the_endpoint() {
    let dify = MockServer::start().await;
    serve_no_usage(&dify).await;
    let mut body =
        br#"{"page":1,"limit":100,"total":1,"has_more":false,"data":[{"id":"a1","name":"caf"#
            .to_vec();
    body.extend_from_slice(b"\xe9\",\"mode\":\"chat\"}]}");
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri())
        .env("MAX_RETRY", "0")
        .args(["run", "--dry-run"])
        .run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains(
            "GET /console/api/apps answered with a body that is not valid UTF-8 (at byte 79); it is refused"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn status_escapes_control_characters_a_receiver_sent() {
    let dify = dify();
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_string("\u{1b}[2J\u{1b}[31mrefused\nqueued   #1 forged line\u{7}"),
        )
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let meter = meter();
    let finished = exporter(&dify, &meter, &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", receiver.uri()))
        .args(["run"])
        .run();
    finished.code(1);
    let shown = status(&state, "text");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(
        shown.contains(r"\u{1b}[2J\u{1b}[31mrefused\nqueued   #1 forged line\u{7}"),
        "{shown}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("queued   #1 forged")),
        "{shown}"
    );
}
