//! A simulated CloudEvents collector with OpenMeter's ingestion rules, for the `cloudevents` sink.
//!
//! `POST /api/v1/events` takes `application/cloudevents-batch+json` (a JSON array of events) or one
//! `application/cloudevents+json` event. Each event must carry `specversion` 1.0, a non-empty `id`,
//! `source`, `type` and `subject`, an RFC 3339 `time` and an object `data`; otherwise the whole
//! batch is answered 400 with a problem+json body whose `detail` names the event and the field, as
//! OpenMeter does, and nothing of it is kept. Accepted batches are answered 204. Events are
//! de-duplicated by (`id`, `source`): a repeated one is counted as a duplicate and dropped, as
//! OpenMeter drops it silently. What is kept is summed per subject and group (the event's day and
//! `data.app_id`, `user`, `provider`, `model`, `currency`), the finest grouping a meter can ask
//! for, so any coarser meter is a sum of these. `cost` is summed as an exact decimal from a JSON
//! number or a numeric string, the two forms OpenMeter's value properties accept.
//!
//! `GET /_collector/stats` reports the counts, for scripts.
//!
//! Faults, for the replay tests: `down_next` answers 503 without keeping anything; `lose_next`
//! keeps the batch and answers 500 (the answer the exporter never gets); `refuse_next` answers 400; `delay` waits after
//! keeping a batch and before answering, so a kill lands between the two.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// What the collector demands and which faults it injects.
#[derive(Debug, Clone, Default)]
pub struct CollectorConfig {
    /// When set, `Authorization: Bearer <token>` is required (401 otherwise).
    pub token: Option<String>,
}

/// Faults for the requests that arrive from now on.
#[derive(Debug, Clone, Default)]
pub struct CollectorFaults {
    /// The next this many requests are answered 503, nothing kept.
    pub down_next: u32,
    /// The next this many accepted batches are kept, then answered 500.
    pub lose_next: u32,
    /// The next this many batches are refused with a 400 naming `data.cost` of their first event.
    pub refuse_next: u32,
    /// A wait between keeping a batch and answering it.
    pub delay: Duration,
}

/// The group a meter sums by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    pub subject: String,
    pub day: String,
    pub app_id: String,
    pub user: String,
    pub provider: String,
    pub model: String,
    pub currency: String,
}

/// The sums of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub total_tokens: i128,
    pub request_count: i128,
    pub cost: Decimal,
}

/// What the collector has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectorStats {
    pub requests: u64,
    pub events_kept: u64,
    pub duplicates: u64,
    pub batches_refused: u64,
}

#[derive(Default)]
struct Store {
    faults: CollectorFaults,
    seen: HashSet<(String, String)>,
    sums: BTreeMap<Group, Sums>,
    stats: CollectorStats,
    bodies: Vec<String>,
}

struct Shared {
    config: CollectorConfig,
    store: Mutex<Store>,
    arrived: Condvar,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running collector; stops when dropped.
pub struct CollectorSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CollectorSim {
    /// Binds a free port of 127.0.0.1 and serves from its own thread and runtime.
    ///
    /// # Errors
    /// Binding the port or building the runtime.
    pub fn start(config: CollectorConfig) -> std::io::Result<CollectorSim> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("collector-sim")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            config,
            store: Mutex::default(),
            arrived: Condvar::new(),
        });
        let app = Router::new()
            .route("/api/v1/events", post(ingest))
            .route("/_collector/stats", get(stats))
            .layer(DefaultBodyLimit::max(256 << 20))
            .with_state(Arc::clone(&shared));
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("collector-sim".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(CollectorSim {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/api/v1/events`, the value for `SINK_CLOUDEVENTS_URL`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/api/v1/events", self.addr)
    }

    pub fn set_faults(&self, faults: CollectorFaults) {
        self.shared.store().faults = faults;
    }

    /// The sums of every group that has events, zero sums included.
    #[must_use]
    pub fn sums(&self) -> BTreeMap<Group, Sums> {
        self.shared.store().sums.clone()
    }

    #[must_use]
    pub fn stats(&self) -> CollectorStats {
        self.shared.store().stats.clone()
    }

    /// Every request body received, in order.
    #[must_use]
    pub fn bodies(&self) -> Vec<String> {
        self.shared.store().bodies.clone()
    }

    /// Blocks until at least `count` requests have arrived or `timeout` passed; whether they did.
    #[must_use]
    pub fn wait_for_requests(&self, count: u64, timeout: Duration) -> bool {
        let store = self.shared.store();
        let (store, _) = self
            .shared
            .arrived
            .wait_timeout_while(store, timeout, |s| s.stats.requests < count)
            .unwrap_or_else(PoisonError::into_inner);
        store.stats.requests >= count
    }
}

impl Drop for CollectorSim {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET /_collector/stats`, for scripts.
async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let stats = shared.store().stats.clone();
    axum::Json(
        json!({"requests": stats.requests, "events_kept": stats.events_kept,
        "duplicates": stats.duplicates, "batches_refused": stats.batches_refused}),
    )
    .into_response()
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(),
        "status": status.as_u16(), "detail": detail});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn ingest(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let (lost, delay) = {
        let mut store = shared.store();
        store.stats.requests += 1;
        store.bodies.push(body.clone());
        shared.arrived.notify_all();
        if store.faults.down_next > 0 {
            store.faults.down_next -= 1;
            return problem(StatusCode::SERVICE_UNAVAILABLE, "collector down");
        }
        if let Some(token) = &shared.config.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if given != Some(&format!("Bearer {token}")) {
                return problem(StatusCode::UNAUTHORIZED, "invalid API token");
            }
        }
        if store.faults.refuse_next > 0 {
            store.faults.refuse_next -= 1;
            store.stats.batches_refused += 1;
            return problem(
                StatusCode::BAD_REQUEST,
                "event 0: data.cost: refused (fault)",
            );
        }
        let events = match parse(&headers, &body) {
            Ok(events) => events,
            Err(detail) => {
                store.stats.batches_refused += 1;
                return problem(StatusCode::BAD_REQUEST, &detail);
            }
        };
        for (key, group, sums) in events {
            if !store.seen.insert(key) {
                store.stats.duplicates += 1;
                continue;
            }
            store.stats.events_kept += 1;
            let total = store.sums.entry(group).or_default();
            total.input_tokens += sums.input_tokens;
            total.output_tokens += sums.output_tokens;
            total.total_tokens += sums.total_tokens;
            total.request_count += sums.request_count;
            total.cost += sums.cost;
        }
        let lost = store.faults.lose_next > 0;
        if lost {
            store.faults.lose_next -= 1;
        }
        (lost, store.faults.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if lost {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "answer lost");
    }
    StatusCode::NO_CONTENT.into_response()
}

type Parsed = ((String, String), Group, Sums);

/// The events of a body, or the `detail` of a 400 naming the event and field.
fn parse(headers: &HeaderMap, body: &str) -> Result<Vec<Parsed>, String> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("request body is not JSON: {e}"))?;
    let events = match (kind.split(';').next().unwrap_or_default().trim(), value) {
        ("application/cloudevents-batch+json", Value::Array(events)) => events,
        ("application/cloudevents+json", event @ Value::Object(_)) => vec![event],
        (kind, _) => {
            return Err(format!(
                "unsupported content type `{kind}` or body shape: expected a JSON array as \
                 application/cloudevents-batch+json"
            ));
        }
    };
    events
        .iter()
        .enumerate()
        .map(|(index, event)| one(event).map_err(|field| format!("event {index}: {field}")))
        .collect()
}

fn one(event: &Value) -> Result<Parsed, String> {
    let text = |name: &str| -> Result<String, String> {
        match event.get(name).and_then(Value::as_str) {
            Some(value) if !value.is_empty() => Ok(value.to_owned()),
            _ => Err(format!("{name}: required, a non-empty string")),
        }
    };
    if event.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return Err("specversion: must be 1.0".to_owned());
    }
    let (id, source, subject) = (text("id")?, text("source")?, text("subject")?);
    text("type")?;
    let time = text("time")?;
    let day = chrono::DateTime::parse_from_rfc3339(&time)
        .map_err(|e| format!("time: not RFC 3339: {e}"))?
        .naive_utc()
        .date()
        .to_string();
    let data = event
        .get("data")
        .filter(|d| d.is_object())
        .ok_or("data: required, an object")?;
    let label = |name: &str| {
        data.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let whole = |name: &str| -> Result<i128, String> {
        data.get(name)
            .and_then(Value::as_i64)
            .map(i128::from)
            .ok_or_else(|| format!("data.{name}: not a whole number"))
    };
    let cost = match data.get("cost") {
        Some(Value::String(text)) => text.parse::<Decimal>().ok(),
        Some(Value::Number(number)) => number.to_string().parse::<Decimal>().ok(),
        _ => None,
    }
    .ok_or("data.cost: not a number or numeric string")?;
    let group = Group {
        subject,
        day,
        app_id: label("app_id"),
        user: label("user"),
        provider: label("provider"),
        model: label("model"),
        currency: label("currency"),
    };
    let sums = Sums {
        input_tokens: whole("input_tokens")?,
        output_tokens: whole("output_tokens")?,
        total_tokens: whole("total_tokens")?,
        request_count: whole("request_count")?,
        cost,
    };
    Ok(((id, source), group, sums))
}
