//! Configuration: every required variable, malformed values, all problems at once, masking, and
//! where values come from. Every invocation is also checked for the canary secrets (support.rs).

use serde_json::Value;

use crate::support::{DIFY_TOKEN, Exporter, PASSWORD};

const LOOPBACK_DIFY: &str = "http://127.0.0.1:9";

/// `validate-config --output json` on stdout.
#[track_caller]
fn report(exporter: Exporter) -> (Option<i32>, Value) {
    let finished = exporter.args(["validate-config", "--output", "json"]).run();
    let report = serde_json::from_str(finished.stdout.trim()).unwrap();
    (finished.code, report)
}

fn problem_variables(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["variable"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_required_variable_missing_is_named_by_both_commands() {
    for variable in [
        "DIFY_API_URL",
        "DIFY_API_TOKEN",
        "EXTERNAL_API_URL",
        "EXTERNAL_API_TOKEN",
    ] {
        let (code, report) = report(Exporter::configured(LOOPBACK_DIFY).env_remove(variable));
        assert_eq!(code, Some(1), "{variable}");
        assert_eq!(report["valid"], false);
        assert_eq!(problem_variables(&report), [variable]);

        let run = Exporter::configured(LOOPBACK_DIFY)
            .env_remove(variable)
            .args(["run"])
            .run();
        run.code(1);
        let line = run.log("configuration is invalid; fix the variables named in `problems`");
        assert_eq!(line["level"], "error");
        let problems = line["context"]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{variable}: {problems:?}");
        assert!(
            problems[0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{variable}: "))
        );
    }
}

#[test]
fn malformed_values_are_rejected_with_the_variable_and_the_rule() {
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = not_a_dir.path().to_str().unwrap().to_owned();
    let cases: &[(&str, &str, &str)] = &[
        ("DIFY_API_URL", "not a url", "is not an absolute URL"),
        (
            "DIFY_API_URL",
            "ftp://dify.example.com",
            "only http and https are allowed",
        ),
        (
            "DIFY_API_URL",
            "https://dify.example.com/?x=1",
            "must not have a query string",
        ),
        (
            "DIFY_API_URL",
            "http://dify.example.com",
            "ALLOW_INSECURE_HTTP=true",
        ),
        ("EXTERNAL_API_URL", "/usage", "is not an absolute URL"),
        (
            "EXTERNAL_API_URL",
            "http://10.0.0.5/usage",
            "plain http to a non-loopback host",
        ),
        ("LOG_LEVEL", "verbose", "allowed: error, warn, info, debug"),
        ("LOG_FORMAT", "yaml", "allowed: auto, json, text"),
        (
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            "0",
            "is not a whole number from 1 to 3600",
        ),
        (
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            "abc",
            "is not a whole number from 1 to 3600",
        ),
        (
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            "3601",
            "is not a whole number from 1 to 3600",
        ),
        ("MAX_RETRY", "11", "is not a whole number from 0 to 10"),
        ("MAX_RETRY", "-1", "is not a whole number from 0 to 10"),
        ("HTTP_TIMEOUT", "0", "is not a whole number from 1 to 600"),
        ("CRON_SCHEDULE", "0 0 * * 7", "Kubernetes rejects 7"),
        ("CRON_SCHEDULE", "@every 1h", "@every"),
        ("CRON_SCHEDULE", "0 0 31 2 *", "never"),
        ("DIFY_WORKSPACE_ID", "workspace-1", "is not a UUID"),
        ("ALLOW_INSECURE_HTTP", "yes", "allowed: true, false"),
        ("STATE_DIR", &not_a_dir, "is not a directory"),
        (
            "DIFY_EMAIL",
            "ops@example.com",
            "must be set together with DIFY_EMAIL",
        ),
        (
            "DIFY_PASSWORD",
            PASSWORD,
            "must be set together with DIFY_PASSWORD",
        ),
    ];
    for &(variable, value, rule) in cases {
        // The pair rules are about the login, so drop the token for those two cases.
        let mut exporter = Exporter::configured(LOOPBACK_DIFY).env(variable, value);
        if variable.starts_with("DIFY_EMAIL") || variable == "DIFY_PASSWORD" {
            exporter = exporter.env_remove("DIFY_API_TOKEN");
        }
        let finished = exporter.args(["validate-config"]).run();
        finished.code(1);
        let expected_variable = match variable {
            "DIFY_EMAIL" => "DIFY_PASSWORD",
            "DIFY_PASSWORD" => "DIFY_EMAIL",
            other => other,
        };
        let line = finished
            .stdout
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{expected_variable}: "))
            })
            .unwrap_or_else(|| panic!("{variable}={value}: not named in\n{}", finished.stdout));
        assert!(
            line.contains(rule),
            "{variable}={value}: {line:?} lacks {rule:?}"
        );
        assert!(
            finished
                .stdout
                .starts_with("configuration is invalid (1 problem):"),
            "{}",
            finished.stdout
        );
    }
}

#[test]
fn three_problems_at_once_are_all_reported() {
    let exporter = Exporter::configured(LOOPBACK_DIFY)
        .env_remove("EXTERNAL_API_TOKEN")
        .env("LOG_LEVEL", "loud")
        .env("MAX_RETRY", "99");
    let (code, report) = report(exporter);
    assert_eq!(code, Some(1));
    assert_eq!(
        problem_variables(&report),
        ["EXTERNAL_API_TOKEN", "LOG_LEVEL", "MAX_RETRY"]
    );

    let exporter = Exporter::configured(LOOPBACK_DIFY)
        .env_remove("EXTERNAL_API_TOKEN")
        .env("LOG_LEVEL", "loud")
        .env("MAX_RETRY", "99");
    let run = exporter.args(["run"]).run();
    run.code(1);
    let problems = &run.log("configuration is invalid; fix the variables named in `problems`")["context"]
        ["problems"];
    assert_eq!(problems.as_array().unwrap().len(), 3, "{problems}");
}

#[test]
fn the_effective_configuration_is_printed_with_secrets_masked() {
    let (code, report) = report(
        Exporter::configured("https://dify.example.com/")
            .env(
                "PUSHGATEWAY_URL",
                "https://user:urlpass-canary@gw.example.com/",
            )
            .env("DIFY_WORKSPACE_ID", "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47")
            .env("CRON_SCHEDULE", "@daily"),
    );
    assert_eq!(code, Some(0));
    let config = &report["config"];
    assert_eq!(config["DIFY_API_URL"], "https://dify.example.com");
    assert_eq!(config["PUSHGATEWAY_URL"], "https://user:***@gw.example.com");
    assert_eq!(config["DIFY_API_TOKEN"], "***");
    assert_eq!(config["EXTERNAL_API_TOKEN"], "***");
    assert_eq!(
        config["DIFY_WORKSPACE_ID"],
        "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47"
    );
    assert_eq!(config["CRON_SCHEDULE"], "@daily");
    assert_eq!(config["MAX_RETRY"], "3");
    assert_eq!(config["GRACEFUL_SHUTDOWN_TIMEOUT"], "30");
    assert!(!report.to_string().contains("urlpass-canary"));
}

#[test]
fn secrets_in_invalid_values_are_never_echoed() {
    // A password where a URL belongs, and the canaries in every secret variable.
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .env(
            "EXTERNAL_API_URL",
            &format!("https://user:{PASSWORD}@meter example.com"),
        )
        .env("DIFY_EMAIL", "ops@example.com")
        .env("DIFY_PASSWORD", PASSWORD)
        .args(["validate-config"])
        .run();
    finished.code(1);
    // support::Finished already asserted that no canary is printed; the token is named, not shown.
    assert!(
        finished
            .stdout
            .contains("DIFY_API_TOKEN: is set together with DIFY_EMAIL"),
        "{}",
        finished.stdout
    );
    assert!(!finished.stdout.contains(DIFY_TOKEN));
}

#[test]
fn a_secret_shorter_than_8_characters_is_refused_by_validate_config() {
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .env("EXTERNAL_API_TOKEN", "t")
        .args(["validate-config"])
        .run();
    finished.code(1);
    assert!(
        finished.stdout.contains(
            "EXTERNAL_API_TOKEN: holds a secret of 1 character(s); at least 8 are required"
        ),
        "{}",
        finished.stdout
    );
}

#[test]
fn env_file_values_lose_to_the_process_environment() {
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .file(".env", "MAX_RETRY=7\nLOG_LEVEL=debug\n")
        .env_remove("MAX_RETRY")
        .env("LOG_LEVEL", "warn")
        .args(["validate-config", "--output", "json"])
        .run();
    finished.code(0);
    let report: Value = serde_json::from_str(&finished.stdout).unwrap();
    assert_eq!(report["config"]["MAX_RETRY"], "7");
    assert_eq!(report["config"]["LOG_LEVEL"], "warn");
}

#[test]
fn a_named_env_file_must_exist() {
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .args(["--env-file", "missing.env", "validate-config"])
        .run();
    finished.code(1);
    assert!(
        finished
            .stderr
            .contains("--env-file missing.env: no such file"),
        "{}",
        finished.stderr
    );
}

#[test]
fn keys_of_env_example_missing_from_the_environment_are_a_warning() {
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .file(".env", "LOG_FORMAT=json\n")
        .file(
            ".env.example",
            "LOG_FORMAT=json\nHTTP_TIMEOUT=30\n# MAX_RETRY=3\n",
        )
        .args(["validate-config"])
        .run();
    finished.code(0);
    assert!(
        finished
            .stdout
            .contains("warning: HTTP_TIMEOUT is listed in .env.example but not set")
    );
    let warning = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["level"] == "warn")
        .expect("a warn log line");
    assert_eq!(
        warning["context"]["keys"],
        serde_json::json!(["HTTP_TIMEOUT"])
    );
}

#[test]
fn text_logs_are_for_people() {
    let finished = Exporter::configured(LOOPBACK_DIFY)
        .env("LOG_FORMAT", "text")
        .args(["validate-config"])
        .run();
    finished.code(0);
    let line = finished.stderr.lines().next().unwrap();
    assert!(
        line.ends_with(" info commands::validate_config: configuration is valid"),
        "{line}"
    );
}

#[test]
fn usage_errors_keep_clap_exit_code_2() {
    Exporter::new().args(["run", "--bogus"]).run().code(2);
    Exporter::new().args(["next-runs", "-n", "0"]).run().code(2);
}
