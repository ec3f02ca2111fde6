//! Several sinks at once: the http, postgres and file sinks fed by one run, with the HTTP receiver
//! down. Each sink has its own queue: the other two get everything, the HTTP queue keeps its batches
//! for the next run.

use serde_json::Value;

use crate::deliver::{dify, held, meter, state_dir, summary, truth};
use crate::file_sink::read_back;
use crate::pg;
use crate::sinkpg::{database, table};
use crate::support::{EXTERNAL_TOKEN, Exporter, Row, status};

#[test]
fn a_receiver_that_is_down_holds_back_only_its_own_sink() {
    let (dify, meter) = (dify(), meter());
    let cluster = pg::shared();
    let db = database();
    let (dir, state) = state_dir();
    let files = dir.path().join("files");
    let credentials = dify.credentials();
    let exporter = |meter_url: &str| {
        Exporter::new()
            .env("DIFY_API_URL", &dify.base_url())
            .env("DIFY_API_TOKEN", &credentials.admin_api_key)
            .env("DIFY_WORKSPACE_ID", &credentials.workspace_id)
            .env("EXTERNAL_API_URL", meter_url)
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .env("SINK_POSTGRES_URL", &cluster.url(pg::SUPERUSER, &db))
            .env("SINK_FILE_DIR", files.to_str().unwrap())
            .env("STATE_DIR", state.to_str().unwrap())
            .env("DIFY_FETCH_DAYS", "3")
            .env("MAX_RETRY", "0")
            .env("BATCH_SIZE", "7")
    };
    let truth: Vec<Row> = truth(&dify)
        .into_iter()
        .map(|mut row| {
            row.cost = row.cost.normalize();
            row
        })
        .collect();

    // The metering API is down: the table and the files get everything, the http queue waits.
    let down = exporter("http://127.0.0.1:9/v1/usage").args(["run"]).run();
    down.code(1);
    assert_eq!(table(&db), truth);
    assert_eq!(read_back(&files, "csv"), truth);
    let figures = summary(&down);
    let sinks = &figures["sinks"];
    let queued = sinks["http"]["batches_queued"].as_u64().unwrap();
    assert!(queued > 0);
    assert_eq!(sinks["http"]["batches_sent"], 0);
    for sink in ["postgres", "file"] {
        assert_eq!(sinks[sink]["batches_queued"], 0, "{sink}");
        assert!(sinks[sink]["batches_sent"].as_u64().unwrap() > 0, "{sink}");
    }
    let report: Value = serde_json::from_str(&status(&state, "json")).unwrap();
    assert_eq!(report["sinks"]["http"]["queued"], queued);
    assert_eq!(report["sinks"]["postgres"]["queued"], 0);
    assert!(
        report["queued"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["sink"] == "http")
    );
    let text = status(&state, "text");
    assert!(
        text.contains(&format!("  sink http       {queued} queued, 0 dead")),
        "{text}"
    );

    // A sink the configuration does not have is refused by name.
    let unknown = exporter(&meter.url())
        .args(["resend", "--all-dead", "--sink", "ledger"])
        .run();
    unknown.code(1);
    assert!(
        unknown
            .stdout
            .contains("--sink names no configured sink; name one of the configured sinks"),
        "{}",
        unknown.stdout
    );

    // The receiver is back: the next run delivers the http queue and nothing else changes.
    let up = exporter(&meter.url()).args(["run"]).run();
    up.code(0);
    let mut delivered = held(&meter);
    for row in &mut delivered {
        row.cost = row.cost.normalize();
    }
    assert_eq!(delivered, truth);
    let sinks = summary(&up)["sinks"].clone();
    assert_eq!(sinks["http"]["batches_sent"], queued);
    assert_eq!(sinks["postgres"]["batches_sent"], 0);
    assert_eq!(sinks["file"]["batches_sent"], 0);
    assert_eq!(table(&db), truth);
}
