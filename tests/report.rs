//! `exporter report` after a real run: the simulator's world exported, then the ledger summed by
//! several keys in CSV and JSON, equal to the simulator's truth summed the same way.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Days, NaiveDate};
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
        let entry =
            sums.entry((r.currency.clone(), label(r)))
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
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"));
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
    let csv_map: String = std::iter::once("user,customer\n".to_owned())
        .chain(mapped.iter().map(|user| format!("\"{user}\",Acme\n")))
        .collect();
    std::fs::write(&map, csv_map).unwrap();
    exporter(&dify, &meter, &state)
        .env("USER_MAP_FILE", map.to_str().unwrap())
        .args(["run"])
        .run()
        .code(0);

    let by_user = truth_sums(&truth, |r| vec![r.user.clone()]);
    assert_eq!(
        csv_sums(&report(&state, &["--output", "csv"]), &["user"]),
        by_user
    );

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
                (
                    code.clone(),
                    vec![group["customer"].as_str().unwrap().to_owned()],
                ),
                (
                    n("records"),
                    n("input_tokens"),
                    n("output_tokens"),
                    n("total_tokens"),
                    n("requests"),
                    group["cost"]
                        .as_str()
                        .unwrap()
                        .parse::<Decimal>()
                        .unwrap()
                        .normalize(),
                ),
            );
        }
    }
    assert_eq!(from_json, by_customer);
    assert_eq!(json["from"], (yesterday() - Days::new(29)).to_string());
    assert_eq!(json["to"], yesterday().to_string());
}

#[test]
fn top_window_and_table_show_the_largest_groups_of_the_days_asked() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let truth = dify.truth(yesterday() - Days::new(2), yesterday());
    exporter(&dify, &meter, &state).args(["run"]).run().code(0);
    let by_user = truth_sums(&truth, |r| vec![r.user.clone()]);

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
        usd["groups"][0]["cost"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        largest
    );
    let total_tokens: u64 = usd_truth.iter().map(|(_, v)| v.3).sum();
    assert_eq!(usd["total"]["total_tokens"], total_tokens);

    // The window: one day only.
    let day = yesterday().to_string();
    let one_day = csv_sums(
        &report(
            &state,
            &[
                "--from", &day, "--to", &day, "--by", "day", "--output", "csv",
            ],
        ),
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
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("total")),
        "{table}"
    );
    let usd_tokens: u64 = truth
        .iter()
        .filter(|r| r.currency == "USD")
        .map(|r| r.total_tokens)
        .sum();
    let separated = thousands(usd_tokens);
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

/// Debian's Chromium, headless, with the flags that keep it off the network on its own.
/// Whether a proxied request line goes to one of Google's hosts, which only Chromium itself calls.
fn is_chromium_own_request(line: &str) -> bool {
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let authority = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    let host = authority.split(['/', ':']).next().unwrap_or("");
    [".google.com", ".googleapis.com"]
        .iter()
        .any(|domain| host.ends_with(domain))
}

fn chromium(profile: &Path, proxy: u16, args: &[&str]) -> std::process::Output {
    let binary = ["chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium not found; install the Debian package `chromium` (.ci/run does)");
    std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=NetworkTimeServiceQuerying",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=2000",
            "--window-size=1000,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Every request goes to the test's listener, so none can leave unseen.
        .arg(format!("--proxy-server=127.0.0.1:{proxy}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .args(args)
        .output()
        .unwrap()
}

/// A listener standing in for the network: it records the first line of every request.
fn proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0_u8; 512];
            let n = stream.read(&mut buffer).unwrap_or(0);
            let text = String::from_utf8_lossy(&buffer[..n]);
            log.lock()
                .unwrap()
                .push(text.lines().next().unwrap_or("").to_owned());
        }
    });
    (port, seen)
}

#[test]
fn the_html_page_renders_offline_in_chromium() {
    let (dify, meter) = (dify(), meter());
    let (dir, state) = state_dir();
    exporter(&dify, &meter, &state).args(["run"]).run().code(0);
    let page = dir.path().join("report.html");
    report(
        &state,
        &[
            "--by",
            "app",
            "--output",
            "html",
            "--out",
            page.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for forbidden in ["<script", "http://", "https://", "src=", "href=", "url("] {
        assert!(!html.contains(forbidden), "the page holds {forbidden}");
    }

    let (port, requests) = proxy();
    let url = format!("file://{}", page.display());
    let dom = chromium(&dir.path().join("profile-dom"), port, &["--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = dir.path().join("page.png");
    let screenshot = chromium(
        &dir.path().join("profile-shot"),
        port,
        &[&format!("--screenshot={}", shot.display()), &url],
    );
    assert!(screenshot.status.success());
    for output in [&dom, &screenshot] {
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!log.contains(":CONSOLE"), "a console message:\n{log}");
    }
    // Chromium's own sign-in, variations and component-update pings go to Google whatever the page
    // (the updater ignores --disable-component-update in some builds); nothing else may.
    let page_requests: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !is_chromium_own_request(r))
        .cloned()
        .collect();
    assert!(page_requests.is_empty(), "{page_requests:?}");

    // The totals are on the page as the truth has them.
    let truth = dify.truth(yesterday() - Days::new(2), yesterday());
    let usd_tokens: u64 = truth
        .iter()
        .filter(|r| r.currency == "USD")
        .map(|r| r.total_tokens)
        .sum();
    let usd_cost: Decimal = truth
        .iter()
        .filter(|r| r.currency == "USD")
        .map(|r| r.cost)
        .sum();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(&format!("{} USD</dd>", usd_cost.normalize())),
        "{dom}"
    );
    assert!(dom.contains(&thousands(usd_tokens)), "{dom}");
    assert!(dom.matches("<rect ").count() > 3, "the charts have bars");

    // Not blank: many colours, and a good share of the page is not background.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let colors: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[..3].iter().any(|&c| c < 200))
        .count();
    let all = info.buffer_size() / channels;
    assert!(colors.len() > 50, "{} colours", colors.len());
    assert!(inked * 50 > all, "{inked} of {all} pixels drawn");
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn a_year_of_two_hundred_users_is_one_page_under_two_megabytes() {
    let (dir, state) = state_dir();
    // A state database of this exporter's schema, then a year of ledger rows written into it.
    Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["watermark", "set", "2026-01-01", "--yes"])
        .run()
        .code(0);
    let mut db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let tx = db.transaction().unwrap();
    let first = NaiveDate::from_ymd_opt(2025, 11, 1).unwrap();
    for d in 0..365_u64 {
        let day = (first + Days::new(d)).to_string();
        for user in 0..200 {
            for app in 0..3 {
                tx.execute(
                    "INSERT INTO ledger VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5, 'openai', 'gpt-4o', 'USD', 100, 20, 120, 1, \
                     '0.0012345', 0, 1, '2026-01-01T00:00:00.000Z')",
                    rusqlite::params![
                        format!("dify-{day}-{user:08x}{app:08x}"),
                        day,
                        format!("app-{app}"),
                        format!("App number {app}"),
                        format!("customer-{user:04}@example.com"),
                    ],
                )
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    let page = dir.path().join("year.html");
    let last = (first + Days::new(364)).to_string();
    report(
        &state,
        &[
            "--from",
            &first.to_string(),
            "--to",
            &last,
            "--output",
            "html",
            "--out",
            page.to_str().unwrap(),
        ],
    );
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 2 * 1024 * 1024, "{size} bytes");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("customer-0199@example.com"),
        "every user is in the table"
    );
    assert!(
        html.contains(&thousands(365 * 200 * 3 * 120)),
        "the year's tokens"
    );
}
