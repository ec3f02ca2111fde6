//! The `http` sink: the metering API of `docs/wire-format.md`, which upserts records on their
//! `source_event_id`: it gets the changed ledger rows at their current totals. A batch's payload is the JSON array of its [`wire`] records, exactly as sent;
//! each POST wraps it in a body with the export metadata and carries the batch's idempotency key.
//!
//! | answer | kind |
//! |---|---|
//! | 2xx, 409 (already delivered) | sent |
//! | 429, 5xx, timeout, connection error (after `MAX_RETRY` retries) | transient |
//! | 401, 403, 404, 405, 3xx (redirects are not followed) | configuration |
//! | 413 | too large |
//! | 400, 422, any other 4xx | rejected, with the answer's first 4 KiB |

pub(crate) mod wire;

use chrono::{Days, NaiveDate, SecondsFormat, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;
use url::Url;

use super::{Part, SendError, Sink};
use crate::config::HttpSinkConfig;
use crate::http::{HttpClient, RequestError};
use crate::ledger::Change;
use crate::secret::Secret;
use crate::state::Batch;
use wire::WireRecord;

/// The metering API, for one run.
pub(crate) struct HttpSink {
    http: HttpClient,
    url: Url,
    /// The request as named in logs and errors.
    endpoint: String,
    token: Secret,
    tenant_id: Option<String>,
}

impl HttpSink {
    pub(crate) fn new(config: &HttpSinkConfig, http: &HttpClient) -> Self {
        HttpSink {
            http: http.clone(),
            url: config.url.clone(),
            endpoint: HINTS.endpoint(&config.url),
            token: config.token.clone(),
            tenant_id: config.tenant_id.clone(),
        }
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        "http"
    }

    fn encode(&self, changes: &[Change]) -> String {
        let wire: Vec<_> = changes
            .iter()
            .map(|change| WireRecord::new(&change.row.record, &change.row.customer))
            .collect();
        // Serializing plain structs and strings cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            total_tokens: u64,
        }
        let list: Vec<&RawValue> = serde_json::from_str(payload).map_err(|e| {
            anyhow::anyhow!("the batch holds records that are not a JSON array: {e}")
        })?;
        list.chunks(size.max(1))
            .map(|chunk| {
                let total_tokens = chunk
                    .iter()
                    .map(|r| serde_json::from_str::<Tokens>(r.get()).map(|t| t.total_tokens))
                    .sum::<serde_json::Result<u64>>()
                    .map_err(|e| {
                        anyhow::anyhow!("the batch holds a record without total_tokens: {e}")
                    })?;
                Ok(Part {
                    payload: format!(
                        "[{}]",
                        chunk.iter().map(|r| r.get()).collect::<Vec<_>>().join(",")
                    ),
                    record_count: chunk.len() as u64,
                    total_tokens,
                })
            })
            .collect()
    }

    async fn send(&self, batch: &Batch, payload: &str) -> Result<(), SendError> {
        let body = body(batch, payload, self.tenant_id.as_deref())
            .map_err(|e| SendError::Rejected(format!("{e:#}")))?;
        let key = HeaderValue::from_str(&batch.idempotency_key)
            .unwrap_or(HeaderValue::from_static("invalid"));
        let outcome = self
            .http
            .send(&self.endpoint, || {
                self.http
                    .client()
                    .post(self.url.as_str())
                    .bearer_auth(self.token.expose())
                    .header(CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", key.clone())
                    .body(body.clone())
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if already_held(&error) => Ok(()),
            Err(error) => Err(classify(&error, &HINTS)),
        }
    }
}

/// A 409: the receiver holds this batch already, so it is delivered. The outbox logs it as every
/// other delivered batch; the status is worth a debug line only, where it cannot read as a failure.
pub(crate) fn already_held(error: &RequestError) -> bool {
    let held =
        matches!(error, RequestError::Status { status, .. } if *status == StatusCode::CONFLICT);
    if held {
        tracing::debug!(error = %error, "the receiver already holds this batch");
    }
    held
}

/// The variables an answer's hint names.
pub(crate) struct Hints {
    pub(crate) url: &'static str,
    pub(crate) token: &'static str,
}

impl Hints {
    /// The POST as logs and errors name it: the address (password masked), and the variable that
    /// set it, so that `could not be reached` says where and what to change.
    pub(crate) fn endpoint(&self, url: &Url) -> String {
        format!("POST {} ({})", crate::secret::masked_url(url), self.url)
    }
}

const HINTS: Hints = Hints {
    url: "EXTERNAL_API_URL",
    token: "EXTERNAL_API_TOKEN (and EXTERNAL_API_TENANT_ID)",
};

/// The kind of a failed POST, by the rules of the table above; the `cloudevents` sink shares them.
pub(crate) fn classify(error: &RequestError, hints: &Hints) -> SendError {
    let hint = |hint: String| SendError::Configuration(format!("{hint}: {error}"));
    let url = hints.url;
    match error {
        RequestError::Cancelled { .. } => SendError::Stopped,
        RequestError::Transport { .. } | RequestError::Unreadable { .. } => {
            SendError::Transient(error.to_string())
        }
        RequestError::Status { status, body, .. } => match status.as_u16() {
            413 => SendError::TooLarge(format!("{error}; body: {body}")),
            300..=399 => hint(format!("check {url}: the receiver redirects it elsewhere")),
            401 | 403 => hint(format!("check {}", hints.token)),
            404 | 405 => hint(format!(
                "check {url}: it must be the full endpoint that receives the POSTs"
            )),
            429 => SendError::Transient(error.to_string()),
            400..=499 => SendError::Rejected(format!("{error}; body: {body}")),
            _ => SendError::Transient(error.to_string()),
        },
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    export_metadata: ExportMetadata<'a>,
    records: &'a RawValue,
}

#[derive(Serialize)]
struct ExportMetadata<'a> {
    exporter_version: &'static str,
    export_timestamp: String,
    run_id: &'a str,
    aggregation_period: &'static str,
    source_system: &'static str,
    date_range: DateRange,
}

#[derive(Serialize)]
struct DateRange {
    start: String,
    end: String,
}

/// The JSON body of the POST for `batch`, whose records array is `records`.
fn body(batch: &Batch, records: &str, tenant_id: Option<&str>) -> anyhow::Result<String> {
    let records: &RawValue = serde_json::from_str(records).map_err(|e| {
        anyhow::anyhow!(
            "batch {} in the outbox holds records that are not JSON: {e}",
            batch.id
        )
    })?;
    let midnight = |day: NaiveDate| format!("{day}T00:00:00Z");
    let body = Body {
        tenant_id,
        export_metadata: ExportMetadata {
            exporter_version: env!("CARGO_PKG_VERSION"),
            export_timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            run_id: &batch.run_id,
            aggregation_period: "daily",
            source_system: "dify",
            date_range: DateRange {
                start: midnight(batch.first_day),
                end: midnight(batch.last_day + Days::new(1)),
            },
        },
        records,
    };
    Ok(serde_json::to_string(&body)?)
}
