//! Fire times against the reference data computed by the library Kubernetes uses, the rejection
//! list, and `validate-config --check-deploy`.

use std::path::Path;

use crate::support::Exporter;

/// The reference data lives in the repository (`tests/data/`), so a fresh clone tests itself.
fn testdata(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn next_runs_reproduces_every_reference_line() {
    let reference = testdata("cron-reference.tsv");
    let mut checked = 0;
    for line in reference
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let [expression, start, expected] = columns[..] else {
            panic!("bad reference line {line:?}");
        };
        let finished = Exporter::new()
            .args([
                "next-runs",
                "-n",
                "5",
                "--from",
                start,
                "--schedule",
                expression,
            ])
            .run();
        finished.code(0);
        let got: Vec<&str> = finished.stdout.lines().collect();
        let want: Vec<&str> = expected.split(' ').collect();
        assert_eq!(got, want, "{expression} after {start}");
        checked += 1;
    }
    assert_eq!(checked, 101);
}

#[test]
fn next_runs_reads_cron_schedule_from_the_environment() {
    let finished = Exporter::new()
        .env("CRON_SCHEDULE", "@weekly")
        .args(["next-runs", "-n", "2", "--from", "2026-11-28T12:00:00Z"])
        .run();
    finished.code(0);
    assert_eq!(
        finished.stdout,
        "2026-11-29T00:00:00Z\n2026-12-06T00:00:00Z\n"
    );
}

#[test]
fn next_runs_defaults_to_midnight_utc() {
    let finished = Exporter::new()
        .args(["next-runs", "-n", "1", "--from", "2026-11-28T12:00:00Z"])
        .run();
    finished.code(0);
    assert_eq!(finished.stdout, "2026-11-29T00:00:00Z\n");
}

#[test]
fn every_rejected_schedule_fails_with_a_reason() {
    let rejects = testdata("cron-reject.txt");
    let mut checked = 0;
    for expression in rejects.lines().filter(|l| !l.starts_with('#')) {
        // Through --schedule and through CRON_SCHEDULE (validate-config), both exit 1.
        let finished = Exporter::new()
            .args(["next-runs", "--schedule", expression])
            .run();
        finished.code(1);
        assert!(
            finished.stdout.is_empty(),
            "{expression:?} printed {}",
            finished.stdout
        );
        let line = &finished.stderr_lines()[0];
        assert_eq!(line["message"], "invalid schedule");
        let problem = line["context"]["problem"].as_str().unwrap();
        assert!(problem.starts_with("--schedule: "), "{problem}");
        assert!(
            problem.len() > "--schedule: ``".len() + expression.len() + 10,
            "no reason: {problem}"
        );

        let validated = Exporter::configured("http://127.0.0.1:9")
            .env("CRON_SCHEDULE", expression)
            .args(["validate-config"])
            .run();
        validated.code(1);
        assert!(
            validated.stdout.contains("CRON_SCHEDULE: "),
            "{expression:?}: {}",
            validated.stdout
        );
        checked += 1;
    }
    assert_eq!(checked, 35);
}

#[test]
fn a_schedule_starting_with_a_dash_gets_the_schedule_error_not_a_usage_error() {
    let finished = Exporter::new()
        .args(["next-runs", "--schedule", "-1 * * * *"])
        .run();
    finished.code(1);
    assert!(finished.stdout.is_empty(), "{}", finished.stdout);
    let line = &finished.stderr_lines()[0];
    assert_eq!(line["message"], "invalid schedule");
    assert_eq!(
        line["context"]["problem"],
        "--schedule: `-1 * * * *` minute item `-1` is malformed; items are `*`, `*/S`, `N`, `A-B` or `A-B/S`"
    );
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_shipped_deploy_files_carry_the_schedule_of_env_example() {
    let finished = Exporter::new()
        .args(["--env-file"])
        .args([repo().join(".env.example")])
        .args(["validate-config", "--check-deploy"])
        .args([repo().join("deploy")])
        .run();
    finished.code(0);
    for file in [
        "kubernetes/cronjob.yaml",
        "crontab/dify-usage-exporter",
        "crontab/user-crontab.txt",
    ] {
        let expected = format!(
            "{} schedule `15 0 * * *` matches",
            repo().join("deploy").join(file).display()
        );
        assert!(
            finished.stdout.contains(&expected),
            "{expected}\n{}",
            finished.stdout
        );
    }
}

#[test]
fn a_deploy_file_with_another_schedule_is_named() {
    let copy = tempfile::tempdir().unwrap();
    for sub in ["kubernetes", "crontab"] {
        std::fs::create_dir(copy.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(repo().join("deploy").join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    let cron_d = copy.path().join("crontab/dify-usage-exporter");
    let text = std::fs::read_to_string(&cron_d)
        .unwrap()
        .replace("15 0 * * *", "30 0 * * *");
    std::fs::write(&cron_d, text).unwrap();

    // `@daily`-style equivalence: the configured schedule written differently still matches.
    let finished = Exporter::configured("http://127.0.0.1:9")
        .env("CRON_SCHEDULE", "15 0 * * SUN-SAT")
        .args(["validate-config", "--check-deploy"])
        .args([copy.path()])
        .run();
    finished.code(1);
    let expected = format!(
        "deploy: {}: schedule `30 0 * * *` differs from CRON_SCHEDULE `15 0 * * SUN-SAT`",
        cron_d.display()
    );
    assert!(finished.stdout.contains(&expected), "{}", finished.stdout);
    assert!(
        finished
            .stdout
            .contains("cronjob.yaml schedule `15 0 * * *` matches"),
        "{}",
        finished.stdout
    );
}
