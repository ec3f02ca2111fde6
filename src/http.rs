//! HTTP requests with retries, backoff and cancellation, shared by every remote call.
//!
//! A request is retried on connection errors, timeouts, 429 and 5xx, up to `MAX_RETRY` times, with
//! exponential backoff and full jitter (a random wait between zero and the doubled ceiling, which
//! spreads retries of many clients), honouring `Retry-After` in seconds or as an HTTP date. A stop
//! signal never interrupts a request in flight, but no new attempt and no backoff wait starts after
//! it: [`RequestError::Cancelled`] comes back instead.
//!
//! Redirects are not followed: a redirected metering POST would silently turn into a GET, and a
//! token must not follow a redirect to another host; the error names the target instead. Every
//! text that comes from a server (an error body, a redirect target, a transport error) passes
//! through the configuration's [`Masker`] here, before anything can log or store it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use reqwest::{RequestBuilder, StatusCode, header};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::secret::Masker;

/// First backoff ceiling; doubled per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Backoff ceiling.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a server asking for more is treated as failing now, since a
/// run-once job is better off ending and being started again by its schedule.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The longest wait for a connection (within `HTTP_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body is kept for messages; no more of it is read.
const ERROR_BODY_LIMIT: usize = 4096;
/// The largest body of a successful answer that is read (`docs/robustness.md`): far above anything
/// Dify sends (a page of 100 apps, runs or messages is well under a megabyte), so that an endless
/// or multi-gigabyte answer ends the request instead of the memory.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The outcome callers branch on: stopped, answered with an error status, or unreachable.
#[derive(Debug, Error)]
pub(crate) enum RequestError {
    #[error("stopped before {endpoint} was requested (shutdown in progress)")]
    Cancelled { endpoint: String },
    #[error("{endpoint} answered {status}{}", detail_suffix(.detail))]
    Status {
        endpoint: String,
        status: StatusCode,
        /// The server's message or the start of its body.
        detail: String,
        /// The body's first 4 KiB, secrets masked.
        body: String,
        /// The same, unmasked, for decisions only.
        answer: Unmasked,
    },
    /// A success status with a body the exporter refuses to read on: too large, or not UTF-8.
    #[error("{endpoint} {problem}")]
    Unreadable { endpoint: String, problem: String },
    #[error("{endpoint} could not be reached: {cause}")]
    Transport {
        endpoint: String,
        /// What went wrong, in words: timed out, connection refused, reset, ... (secrets masked).
        cause: String,
    },
}

/// A server's answer exactly as it came, for matching only: it may hold a secret the server echoed,
/// so it never prints (`Debug` shows its length). Decisions are taken on this text, output is made
/// from the masked one, so a secret that happens to be part of an answer cannot change a decision.
pub(crate) struct Unmasked(String);

impl Unmasked {
    /// Whether the answer contains `needle`.
    pub(crate) fn contains(&self, needle: &str) -> bool {
        self.0.contains(needle)
    }
}

impl std::fmt::Debug for Unmasked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unmasked({} bytes)", self.0.len())
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// Counters for the run summary.
#[derive(Debug, Default)]
pub(crate) struct RequestStats {
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RequestStats {
    /// Attempts made, retries included.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Attempts that were retries.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// A reqwest client (keep-alive pool) plus the retry policy and the run's stop token.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    max_retry: u32,
    cancel: CancellationToken,
    stats: Arc<RequestStats>,
    /// At most this many attempts in flight at once (`DIFY_CONCURRENCY`); backoff waits hold none.
    in_flight: Option<Arc<Semaphore>>,
    /// `HTTP_TIMEOUT`, for messages.
    timeout: Duration,
    /// Masks secrets in what servers answer.
    masker: Arc<Masker>,
}

/// A successful answer: headers and the whole body.
pub(crate) struct Answer {
    pub(crate) headers: header::HeaderMap,
    pub(crate) body: String,
}

impl HttpClient {
    /// Builds the client. `timeout` bounds each attempt, connection included.
    pub(crate) fn new(
        timeout: Duration,
        max_retry: u32,
        cancel: CancellationToken,
        masker: Masker,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("dify-usage-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpClient {
            client,
            max_retry,
            cancel,
            stats: Arc::default(),
            in_flight: None,
            timeout,
            masker: Arc::new(masker),
        })
    }

    /// The run's stop token, for sinks that talk to their receiver without HTTP.
    #[must_use]
    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The same client (connection pool, stop token) with its own counters and at most `limit`
    /// attempts in flight.
    #[must_use]
    pub(crate) fn with_concurrency(&self, limit: usize) -> Self {
        HttpClient {
            in_flight: Some(Arc::new(Semaphore::new(limit))),
            stats: Arc::default(),
            ..self.clone()
        }
    }

    /// The underlying client, to build requests with.
    #[must_use]
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The run's counters.
    #[must_use]
    pub(crate) fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// Sends the request built by `build` (called once per attempt), retrying transient failures.
    /// `endpoint` names the request in logs and errors, e.g. `GET /console/api/apps`.
    pub(crate) async fn send(
        &self,
        endpoint: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, RequestError> {
        self.send_with(endpoint, is_transient, build).await
    }

    /// [`send`](Self::send) with the caller's rule for which failures are worth another attempt.
    pub(crate) async fn send_with(
        &self,
        endpoint: &str,
        is_transient: impl Fn(&RequestError) -> bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, RequestError> {
        let mut attempt: u32 = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(RequestError::Cancelled {
                    endpoint: endpoint.to_owned(),
                });
            }
            let permit = match &self.in_flight {
                // The semaphore is never closed, so acquiring only fails if it were.
                Some(limit) => Some(limit.clone().acquire_owned().await.ok()),
                None => None,
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = self.attempt_once(endpoint, build()).await;
            drop(permit);
            let (error, retry_after) = match outcome {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            if !is_transient(&error) || attempt >= self.max_retry {
                return Err(error);
            }
            attempt += 1;
            let delay = match retry_after {
                Some(asked) if asked > MAX_RETRY_AFTER => return Err(error),
                Some(asked) => asked,
                None => backoff(attempt),
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            warn!(
                endpoint,
                attempt,
                max_retry = self.max_retry,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying request"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => {
                    return Err(RequestError::Cancelled { endpoint: endpoint.to_owned() });
                }
            }
        }
    }
}

impl HttpClient {
    /// One attempt; on failure also the server's `Retry-After`, if any.
    async fn attempt_once(
        &self,
        endpoint: &str,
        request: RequestBuilder,
    ) -> Result<Answer, (RequestError, Option<Duration>)> {
        let transport = |source: reqwest::Error| {
            (
                RequestError::Transport {
                    endpoint: endpoint.to_owned(),
                    cause: self.masker.mask(&transport_cause(&source, self.timeout)),
                },
                None,
            )
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let headers = response.headers().clone();
        let limit = if status.is_success() {
            MAX_BODY_BYTES
        } else {
            ERROR_BODY_LIMIT
        };
        let (bytes, cut) = read_body(&mut response, limit).await.map_err(transport)?;
        // Whatever the server still sends is not read: the connection is dropped with it.
        drop(response);
        debug!(
            endpoint,
            status = status.as_u16(),
            bytes = bytes.len(),
            "request finished"
        );
        if status.is_success() {
            let unreadable = |problem: String| {
                (
                    RequestError::Unreadable {
                        endpoint: endpoint.to_owned(),
                        problem,
                    },
                    None,
                )
            };
            if cut {
                return Err(unreadable(format!(
                    "answered with a body of more than {} MiB, the most the exporter reads (far more than \
                     Dify sends); the answer was dropped",
                    MAX_BODY_BYTES >> 20
                )));
            }
            // Read lossily, two names that differ only in invalid bytes would become one.
            let body = String::from_utf8(bytes).map_err(|error| {
                unreadable(format!(
                    "answered with a body that is not valid UTF-8 (at byte {}); it is refused rather than \
                     read with replacement characters, which could merge two different names into one",
                    error.utf8_error().valid_up_to()
                ))
            })?;
            return Ok(Answer { headers, body });
        }
        let body = String::from_utf8_lossy(&bytes);
        let body = body.as_ref();
        let detail = if status.is_redirection() {
            redirect_detail(&headers)
        } else {
            error_detail(body)
        };
        Err((
            RequestError::Status {
                endpoint: endpoint.to_owned(),
                status,
                detail: printable(&self.masker.mask(&detail)),
                body: printable(&self.masker.mask(body)),
                answer: Unmasked(format!("{detail}\n{body}")),
            },
            retry_after,
        ))
    }
}

/// Why a request got no answer, in the words an operator searches for.
fn transport_cause(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_builder() {
        return "the request could not be built (a header value or the URL is invalid)".to_owned();
    }
    if error.is_timeout() && error.is_connect() {
        return format!(
            "timed out while connecting (after at most {} s)",
            timeout.min(CONNECT_TIMEOUT).as_secs()
        );
    }
    if error.is_timeout() {
        return format!("timed out after {} s (HTTP_TIMEOUT)", timeout.as_secs());
    }
    let mut innermost: &dyn std::error::Error = error;
    let mut io_kind = None;
    while let Some(cause) = innermost.source() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = io_kind.or(Some(io.kind()));
        }
        innermost = cause;
    }
    let described = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset by the server".to_owned(),
        Some(std::io::ErrorKind::ConnectionAborted) => "connection aborted".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "timed out while connecting".to_owned(),
        _ => innermost.to_string(),
    };
    if error.is_connect() && !described.starts_with("conn") {
        format!("cannot connect: {described}")
    } else {
        described
    }
}

/// A 3xx: where it points, without credentials, since redirects are not followed.
fn redirect_detail(headers: &header::HeaderMap) -> String {
    let target = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || "(no Location header)".to_owned(),
            |location| match url::Url::parse(location) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    let _ = url.set_username("");
                    url.to_string()
                }
                Err(_) => location.split('?').next().unwrap_or_default().to_owned(),
            },
        );
    format!(
        "a redirect to {target}, which is not followed: set the URL to the address it redirects to"
    )
}

/// Reads at most `limit` bytes of the body; `true` when there was more.
pub(crate) async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Text from a server made safe to show: every control character (a line break that would forge
/// a log line or a `status` line, an escape sequence that would drive the terminal) is written as
/// its escape, such as `\n` or `\u{1b}`.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn is_transient(error: &RequestError) -> bool {
    match error {
        RequestError::Cancelled { .. } | RequestError::Unreadable { .. } => false,
        RequestError::Transport { .. } => true,
        RequestError::Status { status, .. } => {
            *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        }
    }
}

/// Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. The database source retries with it too.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((when - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// The `message` of a JSON error body (Dify and most APIs), else the start of the body.
fn error_detail(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned));
    message.unwrap_or_else(|| truncate(body.trim(), 200).to_owned())
}

fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_stays_under_its_doubling_ceiling() {
        for attempt in 1..=10 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1))
                .min(BACKOFF_CAP);
            assert!(backoff(attempt) <= ceiling);
        }
    }

    #[test]
    fn error_detail_prefers_the_json_message() {
        assert_eq!(
            error_detail(r#"{"code":"x","message":"Token has expired.","status":401}"#),
            "Token has expired."
        );
        assert_eq!(error_detail("<html>login</html>"), "<html>login</html>");
    }
}
