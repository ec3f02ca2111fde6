//! The `file` sink: the simulator's world written as day files, read back by DuckDB and equal to
//! the truth exactly; FOCUS files accepted by the FinOps Foundation's validator.
//!
//! Needs a Python with the packages of `.ci/requirements-file-sink.txt`: `FILE_SINK_PYTHON`
//! (set by `.ci/run`), else `.venv/bin/python` in the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rust_decimal::Decimal;

use crate::deliver::{dify, state_dir, truth};
use crate::support::{Exporter, Row};

const INSTALL: &str =
    "python3 -m venv .venv && .venv/bin/pip install -r .ci/requirements-file-sink.txt";

fn python() -> PathBuf {
    let python = std::env::var_os("FILE_SINK_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} is missing: the file-sink tests need the PyPI packages duckdb and focus-validator; install them with `{INSTALL}` (or set FILE_SINK_PYTHON)",
        python.display()
    );
    python
}

/// Runs a Python snippet; fails naming the package when its import fails.
fn run_python(script: &str, cwd: Option<&Path>) -> std::process::Output {
    let mut command = Command::new(python());
    command.args(["-c", script]);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a PyPI package is missing ({stderr}); install with `{INSTALL}`"
    );
    output
}

/// The exporter against the simulator with only the file sink.
fn file_run(
    dify: &dify_sim::DifySim,
    state: &Path,
    out: &Path,
    format: &str,
    schema: &str,
) -> Exporter {
    let credentials = dify.credentials();
    Exporter::new()
        .env("DIFY_API_URL", &dify.base_url())
        .env("DIFY_API_TOKEN", &credentials.admin_api_key)
        .env("DIFY_WORKSPACE_ID", &credentials.workspace_id)
        .env_remove("EXTERNAL_API_URL")
        .env_remove("EXTERNAL_API_TOKEN")
        .env("SINK_FILE_DIR", out.to_str().unwrap())
        .env("SINK_FILE_FORMAT", format)
        .env("SINK_FILE_SCHEMA", schema)
        .env("STATE_DIR", state.to_str().unwrap())
        .env("DIFY_FETCH_DAYS", "3")
        .env("MAX_RETRY", "1")
        .args(["run"])
}

/// Every row of the day files in `dir`, as DuckDB reads them.
pub(crate) fn read_back(dir: &Path, format: &str) -> Vec<Row> {
    let glob = dir.join(format!("dify-usage-*.{format}"));
    let source = match format {
        "csv" => format!(
            "read_csv('{}', header=true, types={{'cost': 'DECIMAL(18,7)'}})",
            glob.display()
        ),
        "jsonl" => format!(
            "read_json('{}', format='newline_delimited')",
            glob.display()
        ),
        _ => format!("read_parquet('{}')", glob.display()),
    };
    let script = format!(
        "import duckdb, json\n\
         for r in duckdb.sql(\"\"\"SELECT usage_date::VARCHAR, app_id, app_name, coalesce(\"user\", ''), provider, model, currency, \
         input_tokens, output_tokens, total_tokens, request_count, CAST(cost AS DECIMAL(18,7))::VARCHAR, token_split \
         FROM {source}\"\"\").fetchall(): print(json.dumps(r, default=str))"
    );
    let output = run_python(&script, None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows: Vec<Row> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v.as_array().is_some_and(|a| a.iter().all(|c| !c.is_null())),
                "{line}"
            );
            let s = |i: usize| v[i].as_str().unwrap().to_owned();
            let n = |i: usize| v[i].as_u64().unwrap();
            Row {
                day: s(0),
                app_id: s(1),
                app_name: s(2),
                user: s(3),
                provider: s(4),
                model: s(5),
                currency: s(6),
                tokens: (n(7), n(8), n(9)),
                request_count: n(10),
                cost: s(11).parse::<Decimal>().unwrap(),
                token_split: s(12),
            }
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn every_format_holds_exactly_the_truth_as_duckdb_reads_it() {
    let dify = dify();
    let truth = truth(&dify);
    assert!(truth.len() > 20, "too small a workspace: {}", truth.len());
    for format in ["csv", "jsonl", "parquet"] {
        let (dir, state) = state_dir();
        let out = dir.path().join("files");
        file_run(&dify, &state, &out, format, "native")
            .run()
            .code(0);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "one file per day: {names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("dify-usage-") && n.ends_with(format)),
            "{names:?}"
        );
        assert_eq!(read_back(&out, format), truth, "{format}");
    }
}

#[test]
fn focus_files_pass_the_finops_validator() {
    let dify = dify();
    for format in ["csv", "parquet"] {
        let (dir, state) = state_dir();
        let out = dir.path().join("files");
        file_run(&dify, &state, &out, format, "focus").run().code(0);
        // The validator reads its currency list relative to the working directory: run it from
        // its installation's site-packages.
        let site = run_python(
            "import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))",
            None,
        );
        let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
        for entry in std::fs::read_dir(&out).unwrap() {
            let file = entry.unwrap().path();
            let script = format!(
                "import sys\nfrom focus_validator.main import main\nsys.argv = ['focus-validator', '--data-file', '{}', '--validate-version', '1.0']\nmain()",
                file.display()
            );
            let output = run_python(&script, Some(&site));
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{}: {stdout}\n{}",
                file.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!stdout.contains("FAILED"), "{}: {stdout}", file.display());
        }
    }
}

/// The exporter against the database world of `tests/difydb.rs`, the file sink alone, over the
/// world's three days.
fn world_run(cluster: &crate::pg::Cluster, database: &str, state: &Path, out: &Path) -> Exporter {
    crate::difydb::exporter(cluster, crate::pg::SUPERUSER, database)
        .env_remove("EXTERNAL_API_URL")
        .env_remove("EXTERNAL_API_TOKEN")
        .env("SINK_FILE_DIR", out.to_str().unwrap())
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["run", "--from", "2026-11-01", "--to", "2026-11-03"])
}

/// Each visible file by name: (inode, modification time, content).
fn files(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            (
                entry.file_name().into_string().unwrap(),
                (
                    meta.ino(),
                    meta.modified().unwrap(),
                    std::fs::read(entry.path()).unwrap(),
                ),
            )
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect()
}

/// A message Dify logs late for the world's day 2026-11-02 (chat app Bot, end user sess-1, gpt-4o).
const LATE_MESSAGE: &str = "INSERT INTO messages (app_id, conversation_id, from_end_user_id, model_provider, \
     model_id, query, message, message_tokens, message_unit_price, answer, answer_tokens, answer_unit_price, \
     total_price, currency, from_source, invoke_from, created_at) VALUES ('a0000000-0000-4000-8000-000000000002', \
     'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', 'langgenius/openai/openai', \
     'gpt-4o', 'q', '[]', 1000, 0, 'a', 100, 0, 0.0050000, 'USD', 'api', 'web-app', '2026-11-02 18:00:00')";

#[test]
fn a_correction_rewrites_its_day_file_and_leaves_the_other_days_untouched() {
    let cluster = crate::pg::shared();
    let database = crate::difydb::world(cluster);
    let (dir, state) = state_dir();
    let out = dir.path().join("files");
    world_run(cluster, &database, &state, &out).run().code(0);
    let before = files(&out);
    assert_eq!(before.len(), 3, "{:?}", before.keys());
    let bot = |rows: &[Row]| {
        rows.iter()
            .find(|r| {
                r.day == "2026-11-02"
                    && r.user == "sess-1"
                    && r.model == "gpt-4o"
                    && r.app_name == "Bot"
            })
            .map(|r| (r.tokens, r.cost))
            .unwrap()
    };
    assert_eq!(
        bot(&read_back(&out, "csv")),
        ((150, 30, 180), "0.000675".parse().unwrap())
    );

    cluster.psql(&database, LATE_MESSAGE);
    world_run(cluster, &database, &state, &out).run().code(0);
    let after = files(&out);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, (inode, modified, content)) in &before {
        let (new_inode, new_modified, new_content) = &after[name];
        if name == "dify-usage-2026-11-02.csv" {
            assert_ne!(
                new_inode, inode,
                "{name} is replaced by a rename, not rewritten in place"
            );
            assert_ne!(new_content, content, "{name}");
        } else {
            assert_eq!(
                (new_inode, new_modified, new_content),
                (inode, modified, content),
                "{name} untouched"
            );
        }
    }
    assert_eq!(
        bot(&read_back(&out, "csv")),
        ((1150, 130, 1280), "0.005675".parse().unwrap())
    );
}

/// `strace`, which stops the exporter with SIGKILL at an exact system call.
fn strace() -> PathBuf {
    let path = Path::new("/usr/bin/strace");
    assert!(
        path.exists(),
        "{} is missing: install the Debian package strace",
        path.display()
    );
    path.to_owned()
}

#[test]
fn a_kill_at_a_file_rename_leaves_no_partial_file_and_the_next_run_completes_exactly() {
    let cluster = crate::pg::shared();
    let database = crate::difydb::world(cluster);
    let (reference_dir, reference_state) = state_dir();
    let reference = reference_dir.path().join("files");
    world_run(cluster, &database, &reference_state, &reference)
        .run()
        .code(0);
    let truth = read_back(&reference, "csv");

    let (dir, state) = state_dir();
    let out = dir.path().join("files");
    // SIGKILL as the second day file is about to be renamed into place: the first is written,
    // the second's temp file is complete, the third not started.
    let killed = world_run(cluster, &database, &state, &out)
        .under(
            &strace(),
            &[
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=rename,renameat,renameat2",
                "-e",
                "inject=rename,renameat,renameat2:signal=KILL:when=2",
            ],
        )
        .run();
    // strace ends itself with the signal that ended the exporter.
    assert_eq!(
        killed.code, None,
        "killed by SIGKILL under strace: {}{}",
        killed.stdout, killed.stderr
    );
    let visible = files(&out);
    assert_eq!(
        visible.len(),
        1,
        "one day renamed before the kill: {:?}",
        visible.keys()
    );
    let hidden: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert_eq!(
        hidden.len(),
        1,
        "the interrupted day's temp file: {hidden:?}"
    );
    let written = read_back(&out, "csv");
    let first_day = &written[0].day;
    assert!(written.iter().all(|r| &r.day == first_day));
    let truth_of_day: Vec<Row> = truth
        .iter()
        .filter(|r| &r.day == first_day)
        .cloned()
        .collect();
    assert_eq!(
        written, truth_of_day,
        "the file written before the kill is complete"
    );

    world_run(cluster, &database, &state, &out).run().code(0);
    assert_eq!(read_back(&out, "csv"), truth);
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        3,
        "no temp file is left"
    );
}
