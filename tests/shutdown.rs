//! Graceful stop: a signal while a request is in flight lets it finish, then exits 143 or 130;
//! past GRACEFUL_SHUTDOWN_TIMEOUT the run gives up with exit 1.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{
    APPS_PATH, Announce, EVENT_TIMEOUT, Exporter, serve_no_usage, slow_apps_page,
};

/// Starts a run whose apps request Dify answers after `delay`, and sends `signal` once the
/// request has arrived.
async fn signal_during_request(
    signal: Signal,
    delay: Duration,
    timeout: &str,
) -> (crate::support::Finished, Duration) {
    let dify = MockServer::start().await;
    serve_no_usage(&dify).await;
    let (announce, arrived) = Announce::new(slow_apps_page(delay));
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(announce)
        .mount(&dify)
        .await;

    let running = Exporter::configured(&dify.uri())
        .env("GRACEFUL_SHUTDOWN_TIMEOUT", timeout)
        .args(["run"])
        .spawn();
    arrived
        .recv_timeout(EVENT_TIMEOUT)
        .expect("the request reached Dify");
    let signalled = Instant::now();
    running.signal(signal);
    let finished = running.wait();
    (finished, signalled.elapsed())
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_143() {
    let (finished, _) = signal_during_request(Signal::SIGTERM, Duration::from_secs(2), "30").await;
    finished.code(143);
    let stop = finished.log("stop requested; letting in-flight work finish");
    assert_eq!(stop["context"]["signal"], "SIGTERM");
    // The delayed answer was still read and used.
    assert_eq!(finished.log("apps listed")["context"]["apps"], 1);
    let summary = finished.log("run finished");
    assert_eq!(summary["context"]["outcome"], "stopped");
    assert_eq!(summary["context"]["exit_code"], 143);
}

#[tokio::test]
async fn sigint_exits_130() {
    let (finished, _) = signal_during_request(Signal::SIGINT, Duration::from_secs(1), "30").await;
    finished.code(130);
    assert_eq!(
        finished.log("stop requested; letting in-flight work finish")["context"]["signal"],
        "SIGINT"
    );
    assert_eq!(finished.log("run finished")["context"]["exit_code"], 130);
}

#[tokio::test]
async fn a_stop_that_outlasts_the_timeout_exits_1_after_it() {
    let (finished, elapsed) =
        signal_during_request(Signal::SIGTERM, Duration::from_secs(60), "1").await;
    finished.code(1);
    let line = finished.log("graceful stop did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; exiting with work in flight");
    assert_eq!(line["level"], "error");
    assert_eq!(line["context"]["timeout_s"], 1);
    assert!(
        elapsed >= Duration::from_secs(1),
        "gave up early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "gave up late: {elapsed:?}"
    );
}
