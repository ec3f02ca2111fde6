//! `exporter report` after a real run: the simulator's world exported, then the ledger summed by
//! several keys in CSV and JSON, equal to the simulator's truth summed the same way.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Days;
use dify_sim::TruthRecord;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::deliver::{dify, exporter, meter, state_dir, yesterday};
use crate::support::Exporter;

/// (currency, labels) → (records, input, output, total tokens, requests, cost).
type Sums = BTreeMap<(String, Vec<String>), (u64, u64, u64, u64, u64, Decimal)>;

fn truth_sums(truth: &[TruthRecord], label: impl Fn(&TruthRecord) -> Vec<String>) -> Sums {
    let mut sums = Sums::new();
    for r in truth {
        let entry = sums
            .entry((r.currency.clone(), label(r)))
            .or_insert((0, 0, 0, 0, 0, Decimal::ZERO));
        entry.0 += 1;
        entry.1 += r.input_tokens;
        entry.2 += r.output_tokens;
        entry.3 += r.total_tokens;
        entry.4 += r.request_count;
        entry.5 += r.cost;
    }
    for value in sums.values_mut() {
        value.5 = value.5.normalize();
    }
    sums
}

fn report(state: &Path, args: &[&str]) -> String {
    let finished = Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["report"])
        .args(args)
        .run();
    finished.code(0);
    finished.stdout
}

/// A CSV report's rows as sums, the label columns named by `labels`.
fn csv_sums(text: &str, labels: &[&str]) -> Sums {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |row: &csv::StringRecord, name: &str| {
        let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
        row[i].to_owned()
    };
    let number = |row: &csv::StringRecord, name: &str| column(row, name).parse::<u64>().unwrap();
    reader
        .records()
        .map(|row| {
            let row = row.unwrap();
            (
                (
                    column(&row, "currency"),
                    labels.iter().map(|l| column(&row, l)).collect(),
                ),
                (
                    number(&row, "records"),
                    number(&row, "input_tokens"),
                    number(&row, "output_tokens"),
                    number(&row, "total_tokens"),
                    number(&row, "requests"),
                    column(&row, "cost").parse().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn the_ledger_summed_by_any_keys_equals_the_truth() {
    let (dify, meter) = (dify(), meter());
    let (dir, state) = state_dir();
    let map = dir.path().join("users.csv");
    let truth = dify.truth(yesterday() - Days::new(2), yesterday());
    // Half of the users (every other one, sorted) belong to one customer.
    let mut users: Vec<&str> = truth.iter().map(|r| r.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let mapped: Vec<&str> = users.iter().step_by(2).copied().collect();
    let mut csv_map = "user,customer\n".to_owned();
    for user in &mapped {
        csv_map.push_str(&format!("\"{user}\",Acme\n"));
    }
    std::fs::write(&map, csv_map).unwrap();
    exporter(&dify, &meter, &state)
        .env("USER_MAP_FILE", map.to_str().unwrap())
        .args(["run"])
        .run()
        .code(0);

    let by_user = truth_sums(&truth, |r| vec![r.user.clone()]);
    assert_eq!(csv_sums(&report(&state, &["--output", "csv"]), &["user"]), by_user);

    let by_app_model = truth_sums(&truth, |r| {
        vec![r.app_id.clone(), r.app_name.clone(), r.model.clone()]
    });
    assert_eq!(
        csv_sums(
            &report(&state, &["--by", "app,model", "--output", "csv"]),
            &["app_id", "app_name", "model"]
        ),
        by_app_model
    );

    let customer = |user: &str| {
        if mapped.contains(&user) {
            "Acme".to_owned()
        } else {
            user.to_owned()
        }
    };
    let by_customer = truth_sums(&truth, |r| vec![customer(&r.user)]);
    let json: Value =
        serde_json::from_str(&report(&state, &["--by", "customer", "--output", "json"])).unwrap();
    let mut from_json = Sums::new();
    for currency in json["currencies"].as_array().unwrap() {
        let code = currency["currency"].as_str().unwrap().to_owned();
        for group in currency["groups"].as_array().unwrap() {
            let n = |k: &str| group[k].as_u64().unwrap();
            from_json.insert(
                (code.clone(), vec![group["customer"].as_str().unwrap().to_owned()]),
                (
                    n("records"),
                    n("input_tokens"),
                    n("output_tokens"),
                    n("total_tokens"),
                    n("requests"),
                    group["cost"].as_str().unwrap().parse::<Decimal>().unwrap().normalize(),
                ),
            );
        }
    }
    assert_eq!(from_json, by_customer);
    assert_eq!(json["from"], (yesterday() - Days::new(29)).to_string());
    assert_eq!(json["to"], yesterday().to_string());

    // --top keeps the largest groups; the total still covers all of them.
    let top: Value =
        serde_json::from_str(&report(&state, &["--top", "1", "--output", "json"])).unwrap();
    let usd = top["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "USD")
        .unwrap();
    assert_eq!(usd["groups"].as_array().unwrap().len(), 1);
    let usd_truth: Vec<_> = by_user.iter().filter(|((c, _), _)| c == "USD").collect();
    assert_eq!(usd["group_count"], usd_truth.len());
    let largest = usd_truth.iter().map(|(_, v)| v.5).max().unwrap();
    assert_eq!(
        usd["groups"][0]["cost"].as_str().unwrap().parse::<Decimal>().unwrap(),
        largest
    );
    let total_tokens: u64 = usd_truth.iter().map(|(_, v)| v.3).sum();
    assert_eq!(usd["total"]["total_tokens"], total_tokens);

    // The window: one day only.
    let day = yesterday().to_string();
    let one_day = csv_sums(
        &report(&state, &["--from", &day, "--to", &day, "--by", "day", "--output", "csv"]),
        &["day"],
    );
    let yesterday_only: Vec<TruthRecord> = truth
        .iter()
        .filter(|r| r.usage_date == yesterday())
        .cloned()
        .collect();
    assert_eq!(
        one_day,
        truth_sums(&yesterday_only, |r| vec![r.usage_date.to_string()])
    );

    // A table for a person: the total line and right-aligned, separated numbers.
    let table = report(&state, &["--by", "app"]);
    assert!(table.starts_with(&format!(
        "Usage exported {} to {}, by app\n",
        yesterday() - Days::new(29),
        yesterday()
    )));
    assert!(table.contains("\nUSD\n"), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("total")), "{table}");
    let usd_tokens: u64 = truth
        .iter()
        .filter(|r| r.currency == "USD")
        .map(|r| r.total_tokens)
        .sum();
    let separated = {
        let digits = usd_tokens.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    assert!(table.contains(&separated), "{separated} in\n{table}");
}

#[test]
fn a_missing_or_empty_ledger_is_said_plainly() {
    let (_dir, state) = state_dir();
    let missing = Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["report"])
        .run();
    missing.code(1);
    assert!(
        missing.stderr.contains(&format!(
            "no ledger yet: {} has no state database; `exporter run` fills it",
            state.display()
        )),
        "{}",
        missing.stderr
    );
    assert!(missing.stdout.is_empty());
}
