//! Request accounting and fault injection, applied around every console route (never around `/_sim/*`):
//! counts requests per route, tracks how many are in flight, records the `limit` values clients ask for, adds
//! the configured delay and answers a seeded share of requests with 5xx or 429.
//!
//! It sits in front of authentication on purpose: a real proxy or overloaded Dify fails a request before the
//! application looks at its token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Serialize;

use super::SimState;
use super::routes::ApiError;

/// One call of `POST /login`, with the password exactly as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginAttempt {
    pub email: String,
    pub password: String,
    /// HTTP status the simulator answered.
    pub status: u16,
}

/// What the simulator saw, for assertions (`/_sim/*` requests are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Console requests received, faulted ones included.
    pub requests_total: u64,
    /// Requests per `"METHOD /route/{template}"`; unknown paths count under `"fallback"`.
    pub requests_by_route: BTreeMap<String, u64>,
    /// Most console requests seen in flight at once.
    pub max_in_flight: u64,
    /// Largest numeric `limit` query parameter seen, if any.
    pub max_limit_seen: Option<u64>,
    /// Requests whose `limit` was above 100 (each answered 400 unless faulted first).
    pub limit_over_100: u64,
    pub login_attempts: Vec<LoginAttempt>,
    /// Successful token refreshes.
    pub refreshes: u64,
    /// Injected faults in total and per status.
    pub faults_injected: u64,
    pub faults_by_status: BTreeMap<u16, u64>,
    /// `GET .../chat-conversations/{cid}` and `.../completion-conversations/{cid}`: each marks a conversation
    /// read for the admin, a side effect the exporter must never cause.
    pub conversation_detail_requests: u64,
    /// `GET .../chat-conversations` (listing).
    pub chat_conversations_requests: u64,
    /// `GET .../chat-messages`.
    pub chat_messages_requests: u64,
    /// `GET .../workflow-runs/{run_id}` (run detail), which the exporter never needs.
    pub run_detail_requests: u64,
}

/// Live counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests_total: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    limit_over_100: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    faults: AtomicU64,
    locked: std::sync::Mutex<LockedCounters>,
}

#[derive(Debug, Default)]
struct LockedCounters {
    by_route: BTreeMap<String, u64>,
    max_limit: Option<u64>,
    login_attempts: Vec<LoginAttempt>,
    faults_by_status: BTreeMap<u16, u64>,
}

impl Counters {
    fn locked(&self) -> std::sync::MutexGuard<'_, LockedCounters> {
        // A panic while holding this lock cannot leave the counters inconsistent, so poisoning is ignored.
        self.locked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record_login(&self, attempt: LoginAttempt) {
        self.locked().login_attempts.push(attempt);
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let locked = self.locked();
        let route = |template: &str| {
            locked
                .by_route
                .get(&format!("GET /console/api/apps/{{app_id}}/{template}"))
                .copied()
                .unwrap_or_default()
        };
        SimStats {
            conversation_detail_requests: route("chat-conversations/{conversation_id}")
                + route("completion-conversations/{conversation_id}"),
            chat_conversations_requests: route("chat-conversations"),
            chat_messages_requests: route("chat-messages"),
            run_detail_requests: route("workflow-runs/{run_id}"),
            requests_total: self.requests_total.load(Ordering::SeqCst),
            requests_by_route: locked.by_route.clone(),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            max_limit_seen: locked.max_limit,
            limit_over_100: self.limit_over_100.load(Ordering::SeqCst),
            login_attempts: locked.login_attempts.clone(),
            refreshes: self.refreshes.load(Ordering::SeqCst),
            faults_injected: self.faults.load(Ordering::SeqCst),
            faults_by_status: locked.faults_by_status.clone(),
        }
    }
}

/// Decrements the in-flight count when the request ends, also when the client goes away and the future is
/// dropped half-way.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(&counters.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn limit_param(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "limit")
        .and_then(|(_, v)| v.parse().ok())
}

/// The middleware: count, delay, maybe fail, else pass on.
pub(crate) async fn track(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/_sim/") {
        return next.run(request).await;
    }
    let counters = &state.counters;
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || "fallback".to_owned(),
        |p| format!("{} {}", request.method(), p.as_str()),
    );
    counters.requests_total.fetch_add(1, Ordering::SeqCst);
    let limit = limit_param(request.uri().query());
    {
        let mut locked = counters.locked();
        *locked.by_route.entry(route).or_default() += 1;
        if let Some(limit) = limit {
            locked.max_limit = Some(locked.max_limit.map_or(limit, |m| m.max(limit)));
        }
    }
    if limit.is_some_and(|l| l > 100) {
        counters.limit_over_100.fetch_add(1, Ordering::SeqCst);
    }
    let _guard = InFlight::enter(counters);
    let faults = &state.config.faults;
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.error_share > 0.0 {
        let fault = {
            let mut rng = state
                .fault_rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if rng.random::<f64>() < faults.error_share {
                Some(rng.random_range(0..4u8))
            } else {
                None
            }
        };
        if let Some(kind) = fault {
            let response = fault_response(kind, faults.retry_after_secs);
            counters.faults.fetch_add(1, Ordering::SeqCst);
            *counters
                .locked()
                .faults_by_status
                .entry(response.status().as_u16())
                .or_default() += 1;
            return response;
        }
    }
    next.run(request).await
}

fn fault_response(kind: u8, retry_after_secs: u64) -> Response {
    let html = |status: StatusCode, title: &str| {
        // What nginx in front of Dify answers when the API container is down or overloaded: HTML, not JSON.
        let body = format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        );
        (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
    };
    match kind {
        0 => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.").into_response(),
        1 => html(StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
        2 => html(StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable"),
        _ => {
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests. Please try again later.").into_response();
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limit_param;

    #[test]
    fn finds_the_limit_parameter() {
        assert_eq!(limit_param(Some("page=1&limit=100")), Some(100));
        assert_eq!(limit_param(Some("limit=abc")), None);
        assert_eq!(limit_param(None), None);
    }
}
