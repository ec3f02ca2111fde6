//! The login guard across scheduled runs, against the Dify simulator's login log: a wrong password
//! costs exactly one failed login whatever the number of runs, a locked account is not tried again,
//! new credentials clear the guard, and the state database holds only a salted argon2id hash.

use std::path::Path;

use dify_sim::{AuthMode, DifySim, MeterSim, SimConfig};

use crate::deliver::{exporter, meter, state_dir};
use crate::support::{Finished, PASSWORD, database_bytes, status};

/// A Dify before 1.11.2: one login attempt per password, plain text.
fn dify() -> DifySim {
    DifySim::start(SimConfig {
        seed: 10,
        auth: AuthMode::V1_9_2,
        apps_per_mode: 1,
        runs_per_app_per_day: 1,
        ..SimConfig::default()
    })
    .unwrap()
}

/// A scheduled run logging in with `password`.
fn run(dify: &DifySim, meter: &MeterSim, state: &Path, password: &str, args: &[&str]) -> Finished {
    exporter(dify, meter, state)
        .env_remove("DIFY_API_TOKEN")
        .env_remove("DIFY_WORKSPACE_ID")
        .env("DIFY_EMAIL", &dify.credentials().email)
        .env("DIFY_PASSWORD", password)
        .env("MAX_RETRY", "0")
        .args(["run"])
        .args(args)
        .run()
}

/// The failure of a run the login guard stopped (exit 1), which says what Dify did at DIFY_EMAIL's
/// last login: `refused the password` or `locked the account`.
#[track_caller]
fn guard_failure(finished: &Finished, dify: &DifySim, verdict: &str) -> String {
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.starts_with(&format!(
            "login guard: Dify {verdict} of DIFY_EMAIL {} at ",
            dify.credentials().email
        )),
        "{error}"
    );
    error
}

fn statuses(dify: &DifySim) -> Vec<u16> {
    dify.stats()
        .login_attempts
        .iter()
        .map(|a| a.status)
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn three_runs_with_a_wrong_password_cost_one_failed_login_and_a_new_password_clears_the_guard() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();

    let first = run(&dify, &meter, &state, PASSWORD, &[]);
    first.code(1);
    assert!(
        first
            .failure()
            .contains("check DIFY_EMAIL and DIFY_PASSWORD"),
        "{}",
        first.failure()
    );
    assert_eq!(statuses(&dify), [401]);
    let requests = dify.stats().requests_total;

    for _ in 0..2 {
        let again = run(&dify, &meter, &state, PASSWORD, &[]);
        let error = guard_failure(&again, &dify, "refused the password");
        assert!(error.contains("Set the right DIFY_PASSWORD"), "{error}");
        assert!(error.contains("exporter run --retry-login"), "{error}");
    }
    // A dry run obeys the guard too.
    let dry = run(&dify, &meter, &state, PASSWORD, &["--dry-run"]);
    dry.code(1);
    assert!(
        dry.failure().starts_with("login guard: "),
        "{}",
        dry.failure()
    );
    assert_eq!(statuses(&dify), [401], "no second failed login");
    assert_eq!(dify.stats().requests_total, requests, "no request at all");

    let text = status(&state, "text");
    assert!(
        text.contains(&format!(
            "login guard     wrong_password for {} at ",
            dify.credentials().email
        )),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&status(&state, "json")).unwrap();
    assert_eq!(json["login_guard"]["verdict"], "wrong_password");
    assert!(!text.contains("argon2") && !json.to_string().contains("argon2"));
    let stored = database_bytes(&state);
    assert!(contains(&stored, "$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(
        !contains(&stored, PASSWORD),
        "the password is in the state database"
    );

    let right = run(&dify, &meter, &state, &dify.credentials().password, &[]);
    right.code(0);
    assert_eq!(statuses(&dify), [401, 200]);
    assert!(status(&state, "text").contains("login guard     clear"));
}

#[test]
fn a_locked_account_is_not_tried_again_until_the_operator_asks() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    // Six different wrong passwords: each is new credentials, so each costs one attempt, and the
    // simulator then locks the account, as Dify does after five.
    for n in 0..6 {
        run(&dify, &meter, &state, &format!("wrong-password-{n}"), &[]).code(1);
    }
    assert_eq!(statuses(&dify), [401; 6]);

    let password = dify.credentials().password.clone();
    let locked = run(&dify, &meter, &state, &password, &[]);
    locked.code(1);
    assert_eq!(statuses(&dify).last(), Some(&429));
    let attempts = statuses(&dify).len();

    let refused = run(&dify, &meter, &state, &password, &[]);
    let error = guard_failure(&refused, &dify, "locked the account");
    assert!(error.contains("Wait a day"), "{error}");
    assert_eq!(statuses(&dify).len(), attempts);

    // The operator unlocked it (the simulator has not): --retry-login tries exactly once more.
    run(&dify, &meter, &state, &password, &["--retry-login"]).code(1);
    assert_eq!(statuses(&dify).len(), attempts + 1);
    run(&dify, &meter, &state, &password, &[]).code(1);
    assert_eq!(statuses(&dify).len(), attempts + 1);
}
