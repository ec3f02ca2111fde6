//! The `cloudevents` sink against the simulated OpenMeter collector: its sums equal the Dify truth
//! and the HTTP receiver's rows after a whole world, a late run that raises yesterday, a batch
//! whose answer was lost, and a SIGKILL mid-delivery; every body is a valid batch of CloudEvents
//! 1.0 for the official Python SDK.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dify_sim::{
    CollectorConfig, CollectorFaults, CollectorSim, DifySim, Group, MeterFaults, MeterSim, Sums,
};
use nix::sys::signal::Signal;
use rust_decimal::Decimal;

use crate::deliver::{dify, exporter, held, meter, state_dir, summary, truth};
use crate::support::{EVENT_TIMEOUT, EXTERNAL_TOKEN, Exporter, Row};

fn collector() -> CollectorSim {
    CollectorSim::start(CollectorConfig {
        token: Some(EXTERNAL_TOKEN.to_owned()),
    })
    .unwrap()
}

/// The HTTP sink and the CloudEvents sink side by side.
fn both(dify: &DifySim, meter: &MeterSim, collector: &CollectorSim, state: &Path) -> Exporter {
    exporter(dify, meter, state)
        .env("SINK_CLOUDEVENTS_URL", &collector.url())
        .env("SINK_CLOUDEVENTS_TOKEN", EXTERNAL_TOKEN)
}

/// Rows summed as the collector groups them (no identity map: the subject is the user).
fn grouped(rows: &[Row]) -> BTreeMap<Group, Sums> {
    let mut sums = BTreeMap::<Group, Sums>::new();
    for row in rows {
        let group = Group {
            subject: if row.user.is_empty() {
                "anonymous".to_owned()
            } else {
                row.user.clone()
            },
            day: row.day.clone(),
            app_id: row.app_id.clone(),
            user: row.user.clone(),
            provider: row.provider.clone(),
            model: row.model.clone(),
            currency: row.currency.clone(),
        };
        let s = sums.entry(group).or_default();
        s.input_tokens += i128::from(row.tokens.0);
        s.output_tokens += i128::from(row.tokens.1);
        s.total_tokens += i128::from(row.tokens.2);
        s.request_count += i128::from(row.request_count);
        s.cost += row.cost;
    }
    sums
}

/// The collector's sums, costs normalized so `0.10` equals `0.1`.
fn collected(collector: &CollectorSim) -> BTreeMap<Group, Sums> {
    collector
        .sums()
        .into_iter()
        .map(|(group, mut sums)| {
            sums.cost = sums.cost.normalize();
            (group, sums)
        })
        .collect()
}

fn normalized(mut sums: BTreeMap<Group, Sums>) -> BTreeMap<Group, Sums> {
    for s in sums.values_mut() {
        s.cost = s.cost.normalize();
    }
    sums
}

#[track_caller]
fn assert_collector_holds(collector: &CollectorSim, rows: &[Row]) {
    assert!(rows.len() > 20, "too small a workspace: {}", rows.len());
    assert_eq!(collected(collector), normalized(grouped(rows)));
}

#[test]
fn the_collector_sums_the_truth_and_a_replayed_batch_counts_once() {
    let (dify, meter, ce) = (dify(), meter(), collector());
    let (_dir, state) = state_dir();
    // The first batch is kept and its answer lost: the retry sends the same events again.
    ce.set_faults(CollectorFaults {
        lose_next: 1,
        ..CollectorFaults::default()
    });
    let first = both(&dify, &meter, &ce, &state).args(["run"]).run();
    first.code(0);
    let truth = truth(&dify);
    assert_collector_holds(&ce, &truth);
    assert_eq!(held(&meter), truth);
    let seen = ce.stats();
    assert_eq!(
        seen.duplicates, 7,
        "the replayed batch of BATCH_SIZE events"
    );
    assert_eq!(seen.events_kept, truth.len() as u64);
    let bodies = ce.bodies();
    assert_eq!(bodies[0], bodies[1], "a replay sends byte-identical events");

    // Nothing changed: no new event.
    both(&dify, &meter, &ce, &state).args(["run"]).run().code(0);
    assert_eq!(ce.stats().events_kept, truth.len() as u64);
    assert_collector_holds(&ce, &truth);

    assert_valid_batches(&ce.bodies());
}

#[test]
fn a_refused_batch_is_dead_lettered_naming_the_field_and_an_outage_keeps_it_queued() {
    let (dify, meter, ce) = (dify(), meter(), collector());
    let (_dir, state) = state_dir();
    ce.set_faults(CollectorFaults {
        down_next: 100,
        ..CollectorFaults::default()
    });
    let down = both(&dify, &meter, &ce, &state)
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    assert_ne!(down.code, Some(0));
    assert!(ce.sums().is_empty());
    ce.set_faults(CollectorFaults::default());
    both(&dify, &meter, &ce, &state).args(["run"]).run().code(0);
    assert_collector_holds(&ce, &truth(&dify));

    // A refused batch is dead-lettered with the field the ce named; the rest goes on.
    let (_dir2, state2) = state_dir();
    let other = collector();
    other.set_faults(CollectorFaults {
        refuse_next: 1,
        ..CollectorFaults::default()
    });
    let refused = both(&dify, &meter, &other, &state2).args(["run"]).run();
    assert!(
        refused
            .stdout
            .contains("the meter refused the batch: event 0: data.cost: refused (fault)"),
        "{}",
        refused.stdout
    );
    assert_eq!(summary(&refused)["batches_dead"], 1);
}

#[test]
fn a_kill_mid_delivery_and_a_rerun_count_nothing_twice() {
    let (dify, meter, ce) = (dify(), meter(), collector());
    let (_dir, state) = state_dir();
    // Each batch is kept, then answered late: the kill lands between the two.
    ce.set_faults(CollectorFaults {
        delay: Duration::from_secs(5),
        ..CollectorFaults::default()
    });
    meter.set_faults(MeterFaults::default());
    let running = both(&dify, &meter, &ce, &state).args(["run"]).spawn();
    assert!(ce.wait_for_requests(1, EVENT_TIMEOUT));
    running.signal(Signal::SIGKILL);
    assert_eq!(running.wait().code, None, "killed");
    assert_eq!(ce.stats().events_kept, 7, "one batch kept, unanswered");

    ce.set_faults(CollectorFaults::default());
    let rerun = both(&dify, &meter, &ce, &state).args(["run"]).run();
    rerun.code(0);
    let truth = truth(&dify);
    assert_collector_holds(&ce, &truth);
    assert_eq!(ce.stats().duplicates, 7, "the unanswered batch again");
    assert_eq!(held(&meter), truth);
    assert_eq!(summary(&rerun)["outcome"], "completed");
}

#[test]
fn a_late_run_raises_yesterday_by_its_difference_only() {
    let (_runtime, dify) = crate::deliver::dify_with_a_late_run();
    let (meter, collector) = (meter(), collector());
    let (_dir, state) = state_dir();
    let run_once = || {
        Exporter::new()
            .env("DIFY_API_URL", &dify.uri())
            .env("DIFY_API_TOKEN", crate::support::DIFY_TOKEN)
            .env("EXTERNAL_API_URL", &meter.url())
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .env("SINK_CLOUDEVENTS_URL", &collector.url())
            .env("SINK_CLOUDEVENTS_TOKEN", EXTERNAL_TOKEN)
            .env("STATE_DIR", state.to_str().unwrap())
            .env("DIFY_FETCH_DAYS", "1")
            .args(["run"])
            .run()
    };
    let expect = |tokens: (i128, i128, i128), requests: i128, cost: &str| Sums {
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        total_tokens: tokens.2,
        request_count: requests,
        cost: cost.parse::<Decimal>().unwrap(),
    };
    run_once().code(0);
    let sums: Vec<Sums> = collected(&collector).into_values().collect();
    assert_eq!(sums, [expect((100, 20, 120), 1, "0.001")]);
    run_once().code(0);
    let sums: Vec<Sums> = collected(&collector).into_values().collect();
    assert_eq!(sums, [expect((150, 25, 175), 2, "0.0015001")]);
    assert_eq!(collected(&collector), normalized(grouped(&held(&meter))));
    let seen = collector.stats();
    assert_eq!((seen.events_kept, seen.duplicates), (2, 0));
    let second: serde_json::Value =
        serde_json::from_str(collector.bodies().last().unwrap()).unwrap();
    assert_eq!(second[0]["data"]["total_tokens"], 55);
    assert_eq!(second[0]["data"]["cost"], "0.0005001");
    assert!(second[0]["id"].as_str().unwrap().ends_with("-r2"));
    assert_valid_batches(&collector.bodies());
}

/// The venv's Python, where `.ci/run` installed `.ci/requirements-cloudevents.txt`.
fn python() -> PathBuf {
    std::env::var_os("CLOUDEVENTS_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        PathBuf::from,
    )
}

/// Every body parses with the official CloudEvents SDK for Python as a batch of 1.0 events.
#[track_caller]
fn assert_valid_batches(bodies: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bodies.jsonl");
    std::fs::write(&file, bodies.join("\n")).unwrap();
    let script = r#"
import json, sys
try:
    from cloudevents.core.formats.json import JSONFormat
except ImportError:
    sys.exit("the Python package `cloudevents` (PyPI) is missing: pip install -r .ci/requirements-cloudevents.txt")
count = 0
for line in open(sys.argv[1]):
    batch = json.loads(line)
    assert isinstance(batch, list), "a batch is a JSON array"
    for raw in batch:
        event = JSONFormat().read(None, json.dumps(raw))
        assert event.get_specversion() == "1.0", raw
        assert event.get_data()["total_tokens"] == raw["data"]["total_tokens"]
        count += 1
print(count)
"#;
    let python = python();
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): create the venv with the PyPI package `cloudevents`: \
                 python3 -m venv .venv && .venv/bin/pip install -r .ci/requirements-cloudevents.txt \
                 (or set CLOUDEVENTS_PYTHON)",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the CloudEvents SDK refused a batch: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let count: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(count > 0);
}
