//! The run lock: refused while held, one winner among ten, nothing stale after SIGKILL.

use std::fs::OpenOptions;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{
    APPS_PATH, Announce, EVENT_TIMEOUT, Exporter, serve_no_usage, slow_apps_page,
};

#[tokio::test]
async fn a_held_lock_makes_run_exit_1_at_once() {
    let dify = MockServer::start().await;
    let exporter = Exporter::configured(&dify.uri());
    let state = exporter.dir().join("data");
    std::fs::create_dir(&state).unwrap();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("exporter.lock"))
        .unwrap();
    fs4::FileExt::try_lock(&file).unwrap();

    let started = Instant::now();
    let finished = exporter.args(["run"]).run();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    finished.code(1);
    let line = finished.log("run lock is held by another run");
    assert_eq!(line["level"], "error");
    assert!(
        line["context"]["error"]
            .as_str()
            .unwrap()
            .contains("data/exporter.lock"),
        "{line}"
    );
    assert!(
        dify.received_requests().await.unwrap().is_empty(),
        "Dify was called"
    );
}

#[tokio::test]
async fn ten_runs_started_together_do_the_job_once() {
    let dify = MockServer::start().await;
    serve_no_usage(&dify).await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(slow_apps_page(Duration::from_secs(3)))
        .mount(&dify)
        .await;
    // All ten share one STATE_DIR.
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let runs: Vec<_> = (0..10)
        .map(|_| {
            Exporter::configured(&dify.uri())
                .env("STATE_DIR", state_dir)
                .args(["run"])
                .spawn()
        })
        .collect();
    let finished: Vec<_> = runs.into_iter().map(|run| run.wait()).collect();

    let winners: Vec<_> = finished.iter().filter(|f| f.code == Some(0)).collect();
    assert_eq!(winners.len(), 1, "exactly one run does the job");
    assert_eq!(winners[0].log("apps listed")["context"]["apps"], 1);
    for loser in finished.iter().filter(|f| f.code != Some(0)) {
        loser.code(1);
        loser.log("run lock is held by another run");
    }
    let requests = dify.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == APPS_PATH)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_killed_run_leaves_no_stale_lock() {
    let dify = MockServer::start().await;
    serve_no_usage(&dify).await;
    let (announce, arrived) = Announce::new(slow_apps_page(Duration::from_secs(30)));
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(announce)
        .up_to_n_times(1)
        .mount(&dify)
        .await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(slow_apps_page(Duration::ZERO))
        .mount(&dify)
        .await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();

    let running = Exporter::configured(&dify.uri())
        .env("STATE_DIR", state_dir)
        .args(["run"])
        .spawn();
    arrived
        .recv_timeout(EVENT_TIMEOUT)
        .expect("the run reached Dify while holding the lock");
    running.signal(Signal::SIGKILL);
    assert_eq!(
        running.wait().code,
        None,
        "killed by a signal, no exit code"
    );

    assert!(
        state.path().join("exporter.lock").exists(),
        "the lock file is never deleted"
    );
    let again = Exporter::configured(&dify.uri())
        .env("STATE_DIR", state_dir)
        .args(["run"])
        .run();
    again.code(0);
    again.log("apps listed");
}
