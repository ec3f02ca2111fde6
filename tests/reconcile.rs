//! `exporter reconcile` after a real run against the Dify simulator: the ledger beside Dify's own
//! statistics, per app and UTC day, exact; then the ledger changed in `state.db` the two ways a
//! ledger can differ from Dify (it kept usage Dify no longer shows; it misses usage Dify has).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Days;
use dify_sim::DifySim;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::deliver::{dify, exporter, meter, state_dir, yesterday};
use crate::support::Finished;

/// (app id, day) → (tokens, cost) of the simulator's truth.
fn truth_by_app_day(dify: &DifySim) -> BTreeMap<(String, String), (u64, Decimal)> {
    let mut sums: BTreeMap<(String, String), (u64, Decimal)> = BTreeMap::new();
    for r in dify.truth(yesterday() - Days::new(2), yesterday()) {
        let entry = sums
            .entry((r.app_id.clone(), r.usage_date.to_string()))
            .or_default();
        entry.0 += r.total_tokens;
        entry.1 += r.cost;
    }
    sums
}

fn window() -> [String; 4] {
    [
        "--from".to_owned(),
        (yesterday() - Days::new(2)).to_string(),
        "--to".to_owned(),
        yesterday().to_string(),
    ]
}

fn reconcile(dify: &DifySim, state: &Path, output: &str) -> Finished {
    exporter(dify, &meter(), state)
        .args(["reconcile", "--output", output])
        .args(window())
        .run()
}

fn json(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout).unwrap()
}

fn cost(value: &Value) -> Option<Decimal> {
    value.as_str().map(|c| c.parse().unwrap())
}

/// The app-days of a JSON answer by (app id, day).
fn app_days(document: &Value) -> BTreeMap<(String, String), Value> {
    document["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap().to_owned();
            ((text("app_id"), text("day")), d.clone())
        })
        .collect()
}

/// Runs the export of the three days, with the ledger's state in `state`.
fn exported(dify: &DifySim, state: &Path) {
    exporter(dify, &meter(), state).args(["run"]).run().code(0);
}

/// Changes one ledger row of `app_id` on `day` with `sql` (`?1` app, `?2` day).
fn change_ledger(state: &Path, sql: &str, app_id: &str, day: &str) {
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let changed = db
        .execute(
            &format!(
                "{sql} WHERE source_event_id = (SELECT source_event_id FROM ledger \
                 WHERE app_id = ?1 AND day = ?2 ORDER BY user DESC LIMIT 1)"
            ),
            rusqlite::params![app_id, day],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// A chat app-day that has usage, as (app id, app name, day, tokens).
fn chat_app_day(document: &Value) -> (String, String, String, u64) {
    let day = document["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["statistic"] == "token-costs" && d["ledger"]["tokens"].as_u64().unwrap() > 0)
        .expect("a chat-type app-day with usage")
        .clone();
    let text = |k: &str| day[k].as_str().unwrap().to_owned();
    (
        text("app_id"),
        text("app_name"),
        text("day"),
        day["ledger"]["tokens"].as_u64().unwrap(),
    )
}

#[test]
fn after_an_exact_run_every_app_day_agrees_with_dify_to_the_token_and_the_cent() {
    let dify = dify();
    let (_dir, state) = state_dir();
    exported(&dify, &state);
    let finished = reconcile(&dify, &state, "json");
    finished.code(0);
    let document = json(&finished);
    let truth = truth_by_app_day(&dify);
    let days = app_days(&document);
    assert_eq!(
        days.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>()
    );
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for (key, day) in &days {
        let (tokens, truth_cost) = truth[key];
        assert_eq!(day["ledger"]["tokens"], tokens, "{key:?}");
        assert_eq!(cost(&day["ledger"]["cost"]), Some(truth_cost), "{key:?}");
        let verdict = day["verdict"].as_str().unwrap().to_owned();
        match verdict.as_str() {
            "agrees" => {
                assert_eq!(day["dify"]["tokens"], tokens, "{key:?}");
                if day["statistic"] == "token-costs" {
                    assert_eq!(cost(&day["dify"]["cost"]), Some(truth_cost), "{key:?}");
                } else {
                    assert_eq!(day["dify"]["cost"], Value::Null);
                }
            }
            // A workflow app's webhook, schedule and plugin runs: in the ledger, not in Dify's statistic.
            "triggered-runs" => {
                assert_eq!(day["statistic"], "workflow-token-costs");
                assert!(day["dify"]["tokens"].as_u64().unwrap() < tokens, "{key:?}");
            }
            other => panic!("{key:?} is {other}: {day}"),
        }
        *verdicts.entry(verdict).or_default() += 1;
    }
    assert!(verdicts["agrees"] >= 10, "{verdicts:?}");
    assert_eq!(document["disagreeing"], 0);

    let text = reconcile(&dify, &state, "text");
    text.code(0);
    let last = text.stdout.lines().last().unwrap();
    assert!(
        last.ends_with(&format!(
            "{} app-days compared, {} agree, {} explained, 0 disagree",
            days.len(),
            verdicts["agrees"],
            days.len() - verdicts["agrees"]
        )),
        "{last}"
    );
}

#[test]
fn usage_the_ledger_kept_is_named_as_a_kept_decrease_and_fails_under_follow() {
    let dify = dify();
    let (_dir, state) = state_dir();
    exported(&dify, &state);
    let (app_id, app_name, day, tokens) = chat_app_day(&json(&reconcile(&dify, &state, "json")));
    // What a kept decrease leaves: the ledger above what Dify counts now.
    change_ledger(
        &state,
        "UPDATE ledger SET total_tokens = total_tokens + 1000, input_tokens = input_tokens + 1000, \
         cost = '1.25' ",
        &app_id,
        &day,
    );
    let finished = reconcile(&dify, &state, "text");
    finished.code(0);
    let line = finished
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{day} {app_name} ({app_id})")))
        .unwrap_or_else(|| panic!("{app_id} {day} not named: {}", finished.stdout));
    assert!(
        line.contains(&format!("ledger {} tokens", tokens + 1000))
            && line.contains(&format!("Dify {tokens} tokens"))
            && line.contains("difference +1000 tokens")
            && line.ends_with(": kept-decrease"),
        "{line}"
    );

    // Under USAGE_DECREASES=follow the ledger would have followed Dify: nothing explains it.
    let follow = exporter(&dify, &meter(), &state)
        .env("USAGE_DECREASES", "follow")
        .args(["reconcile", "--output", "json"])
        .args(window())
        .run();
    follow.code(1);
    let document = json(&follow);
    assert_eq!(document["disagreeing"], 1);
    let days = app_days(&document);
    assert_eq!(days[&(app_id, day)]["verdict"], "ledger-above-dify");
}

#[test]
fn an_app_day_the_ledger_misses_fails_by_name_and_in_the_metric() {
    let dify = dify();
    let (dir, state) = state_dir();
    exported(&dify, &state);
    let (app_id, app_name, day, _) = chat_app_day(&json(&reconcile(&dify, &state, "json")));
    change_ledger(&state, "DELETE FROM ledger ", &app_id, &day);
    let textfile = dir.path().join("dify.prom");
    let finished = exporter(&dify, &meter(), &state)
        .env("METRICS_TEXTFILE", textfile.to_str().unwrap())
        .args(["reconcile"])
        .args(window())
        .run();
    finished.code(1);
    let named: Vec<&str> = finished
        .stdout
        .lines()
        .filter(|l| l.ends_with(": ledger-below-dify"))
        .collect();
    assert_eq!(named.len(), 1, "{}", finished.stdout);
    assert!(
        named[0].starts_with(&format!("{day} {app_name} ({app_id}): ledger ")),
        "{}",
        named[0]
    );
    assert!(
        finished
            .stdout
            .lines()
            .last()
            .unwrap()
            .ends_with(", 1 disagree"),
        "{}",
        finished.stdout
    );
    let metrics = std::fs::read_to_string(dir.path().join("dify-reconcile.prom")).unwrap();
    assert!(
        metrics.contains("\ndify_usage_exporter_reconcile_disagreeing_app_days 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dify_usage_exporter_reconcile_timestamp_seconds "),
        "{metrics}"
    );
    // The run's own textfile is not the reconcile's.
    assert!(!textfile.exists());
}

#[test]
fn without_a_ledger_it_says_so() {
    let dify = dify();
    let (_dir, state) = state_dir();
    let finished = reconcile(&dify, &state, "text");
    finished.code(1);
    let line = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["message"] == "cannot reconcile")
        .unwrap_or_else(|| panic!("{}", finished.stderr));
    assert!(
        line["context"]["error"]
            .as_str()
            .unwrap()
            .starts_with("no ledger yet: "),
        "{line}"
    );
    assert_eq!(finished.stdout, "");
}

#[test]
fn a_cost_one_ten_millionth_below_dify_disagrees() {
    let dify = dify();
    let (_dir, state) = state_dir();
    exported(&dify, &state);
    let (app_id, _, day, tokens) = chat_app_day(&json(&reconcile(&dify, &state, "json")));
    // Dify's prices have seven decimals: the smallest difference it can show is not rounded away.
    change_ledger(
        &state,
        "UPDATE ledger SET cost = CAST(CAST(cost AS NUMERIC) - 0.0000001 AS TEXT) ",
        &app_id,
        &day,
    );
    let finished = reconcile(&dify, &state, "json");
    finished.code(1);
    let days = app_days(&json(&finished));
    let changed = &days[&(app_id, day)];
    assert_eq!(changed["verdict"], "ledger-below-dify");
    assert_eq!(changed["ledger"]["tokens"], tokens);
    assert_eq!(
        cost(&changed["dify"]["cost"]).unwrap() - cost(&changed["ledger"]["cost"]).unwrap(),
        "0.0000001".parse::<Decimal>().unwrap()
    );
}
