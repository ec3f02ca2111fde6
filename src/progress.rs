//! A live progress line on stderr for a person watching `run` or `resend` at a terminal: the
//! window's days done, apps done in the current chunk, workflow runs, chat messages and app-days
//! read, requests to Dify, batches delivered.
//!
//! The JSON log is the machine's record and stays exactly as it is on stdout; the line is drawn by
//! `indicatif` only when stderr is a terminal ([`std::io::IsTerminal`]), so cron, Kubernetes and
//! pipes never see it. The counters are process-wide atomics that the collector and the delivery
//! bump with one-line hooks, whether or not a line is drawn; the line reads them at each redraw
//! (10 times a second), so the hot path pays one relaxed atomic add per event and no lock.
//! The job collects the window in chunks (`COLLECT_CHUNK_DAYS`), each with its own app listing,
//! the window's days are told once, the collector adds what it reads as it reads it, and the run's
//! one Dify client counts the requests, so runs, messages, app-days and requests count the whole run.
//! Log lines written to a terminal on stdout while the line is drawn go through [`suspend`], which
//! takes the line away for the write and puts it back after, so the two never mix on one row.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What has happened so far in this process.
struct Counters {
    days: AtomicU64,
    days_done: AtomicU64,
    apps: AtomicU64,
    apps_done: AtomicU64,
    /// Read in all, every chunk included.
    runs: AtomicU64,
    messages: AtomicU64,
    app_days: AtomicU64,
    batches: AtomicU64,
    batches_sent: AtomicU64,
}

static COUNTERS: Counters = Counters {
    days: AtomicU64::new(0),
    days_done: AtomicU64::new(0),
    apps: AtomicU64::new(0),
    apps_done: AtomicU64::new(0),
    runs: AtomicU64::new(0),
    messages: AtomicU64::new(0),
    app_days: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    batches_sent: AtomicU64::new(0),
};

/// Reads the number of requests made to Dify (the run's client's own counter).
type RequestCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// Where to read the requests to Dify, once the run has a client.
static REQUESTS: Mutex<Option<RequestCount>> = Mutex::new(None);

/// The drawn line, when stderr is a terminal and a command asked for it.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Redraws per second.
const REFRESH: Duration = Duration::from_millis(100);

/// The live line of this process, finished (its last state left on screen) when dropped.
#[must_use = "the line is finished when this is dropped"]
pub(crate) struct Line(());

impl Drop for Line {
    fn drop(&mut self) {
        if let Some(bar) = BAR.get() {
            bar.finish();
        }
    }
}

/// Starts drawing the line on stderr if stderr is a terminal; `None` otherwise.
pub(crate) fn start(title: &'static str) -> Option<Line> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template("{spinner} {prefix} {counts} [{elapsed_precise}]")
        .ok()?
        .with_key(
            "counts",
            |_: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&counts_text());
            },
        );
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10))
        .with_style(style)
        .with_prefix(title);
    bar.enable_steady_tick(REFRESH);
    BAR.set(bar).ok()?;
    Some(Line(()))
}

/// Runs `write` with the line taken off the screen, so a log line written to the same terminal
/// lands on a row of its own.
pub(crate) fn suspend<R>(write: impl FnOnce() -> R) -> R {
    match BAR.get() {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// The run's window has `days` days (told once, before its first chunk).
pub(crate) fn window(days: u64) {
    COUNTERS.days.store(days, Ordering::Relaxed);
}

/// The run's Dify client is made: `requests` reads how many requests it has sent.
pub(crate) fn count_requests(requests: impl Fn() -> u64 + Send + Sync + 'static) {
    *REQUESTS.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(requests));
}

/// A chunk's collection starts with its `apps`.
pub(crate) fn collecting(apps: usize) {
    let c = &COUNTERS;
    c.apps_done.store(0, Ordering::Relaxed);
    c.apps.store(as_u64(apps), Ordering::Relaxed);
}

/// A chunk of `days` days is collected.
pub(crate) fn days_collected(days: u64) {
    COUNTERS.days_done.fetch_add(days, Ordering::Relaxed);
}

/// Every run and day of one app is listed.
pub(crate) fn app_done() {
    COUNTERS.apps_done.fetch_add(1, Ordering::Relaxed);
}

/// One workflow run's nodes are read.
pub(crate) fn run_read() {
    COUNTERS.runs.fetch_add(1, Ordering::Relaxed);
}

/// One conversation's `messages` end-user messages in the window are read.
pub(crate) fn messages_read(messages: u64) {
    COUNTERS.messages.fetch_add(messages, Ordering::Relaxed);
}

/// One app-day's statistics are read.
pub(crate) fn app_day_read() {
    COUNTERS.app_days.fetch_add(1, Ordering::Relaxed);
}

/// Delivery starts with `batches` queued.
pub(crate) fn delivering(batches: u64) {
    COUNTERS.batches.store(batches, Ordering::Relaxed);
}

/// One batch was acknowledged by the metering API.
pub(crate) fn batch_sent() {
    COUNTERS.batches_sent.fetch_add(1, Ordering::Relaxed);
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `days 14/30 · apps 12/40 · runs 1234 · messages 5678 · app-days 56 · Dify requests 1500 ·
/// batches 2/10 sent`,
/// leaving out what has not started.
fn counts_text() -> String {
    let c = &COUNTERS;
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let mut text = String::new();
    if load(&c.apps) > 0 || load(&c.days) > 0 {
        let _ = write!(
            text,
            "days {}/{} · apps {}/{} · runs {} · messages {} · app-days {}",
            load(&c.days_done),
            load(&c.days),
            load(&c.apps_done),
            load(&c.apps),
            load(&c.runs),
            load(&c.messages),
            load(&c.app_days)
        );
    }
    if let Some(requests) = REQUESTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|count| count())
    {
        let _ = write!(text, " · Dify requests {requests}");
    }
    if load(&c.batches) > 0 {
        if !text.is_empty() {
            text.push_str(" · ");
        }
        let _ = write!(
            text,
            "batches {}/{} sent",
            load(&c.batches_sent),
            load(&c.batches)
        );
    }
    text
}
