//! The `cloudevents` sink: append-only meters (OpenMeter, Kong Metering & Billing) fed with
//! CloudEvents 1.0 in the JSON batch format.
//!
//! Such a meter keeps every event it has not seen (de-duplicated by `id` + `source`) and sums
//! them, so a corrected day must not be sent again at its new totals: under a new id it would be
//! counted twice, under the old id dropped. Each change is therefore one event carrying the
//! *difference* from what this sink received for the row before (the ledger hands it over as
//! [`Change::previous`]), under an id naming the revision: `<source_event_id>-r<revision>`. The
//! first event of a row carries its whole totals. When the identity map moved the row to another
//! customer, the old customer gets the old totals negated (`…-r<revision>-moved`) and the new one
//! the whole current totals. A revision whose totals and customer did not change sends nothing.
//!
//! The payload is the exact batch body, encoded at queue time, so a replay after a lost answer
//! sends byte-identical events, which the meter drops as duplicates. Answers are classified as the
//! `http` sink's (`super::http::classify`): 2xx (duplicates included) and 409 are sent, 400
//! dead-letters with the meter's problem `detail`.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use url::Url;

use super::http::{Hints, already_held, classify};
use super::{Part, SendError, Sink};
use crate::config::CloudEventsSinkConfig;
use crate::http::{HttpClient, RequestError};
use crate::ledger::{Change, Totals};
use crate::secret::Secret;
use crate::state::Batch;

/// Every event's `type`: what a meter filters on; stable across versions.
pub(crate) const EVENT_TYPE: &str = "io.dify-usage-exporter.llm.usage";
/// The `subject` of usage without a user or customer: meters require a subject.
pub(crate) const ANONYMOUS: &str = "anonymous";
const HINTS: Hints = Hints {
    url: "SINK_CLOUDEVENTS_URL",
    token: "SINK_CLOUDEVENTS_TOKEN",
};

/// An append-only meter, for one run.
pub(crate) struct CloudEventsSink {
    http: HttpClient,
    url: Url,
    /// The request as named in logs and errors.
    endpoint: String,
    token: Option<Secret>,
    source: String,
}

impl CloudEventsSink {
    pub(crate) fn new(config: &CloudEventsSinkConfig, http: &HttpClient) -> Self {
        CloudEventsSink {
            http: http.clone(),
            url: config.url.clone(),
            endpoint: HINTS.endpoint(&config.url),
            token: config.token.clone(),
            source: config.source.clone(),
        }
    }
}

/// One CloudEvent, its attributes in the order the specification lists them.
#[derive(Serialize)]
struct Event<'a> {
    specversion: &'static str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: Data<'a>,
}

/// What a meter sums (the differences) and groups by (the labels).
#[derive(Serialize)]
struct Data<'a> {
    input_tokens: i128,
    output_tokens: i128,
    total_tokens: i128,
    request_count: i128,
    /// Exact decimal text: OpenMeter reads a value property from a JSON number or a numeric
    /// string, and a string survives every JSON parser on the way without turning binary.
    cost: String,
    currency: &'a str,
    app_id: &'a str,
    app_name: &'a str,
    provider: &'a str,
    model: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_id: Option<&'a str>,
    token_split: &'static str,
    day: String,
    revision: u64,
    source_event_id: String,
}

/// Totals as signed differences.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Delta {
    input_tokens: i128,
    output_tokens: i128,
    total_tokens: i128,
    request_count: i128,
    cost: Decimal,
}

impl Delta {
    fn of(totals: &Totals) -> Delta {
        Delta {
            input_tokens: i128::from(totals.input_tokens),
            output_tokens: i128::from(totals.output_tokens),
            total_tokens: i128::from(totals.total_tokens),
            request_count: i128::from(totals.request_count),
            cost: totals.cost,
        }
    }

    fn negated(self) -> Delta {
        Delta {
            input_tokens: -self.input_tokens,
            output_tokens: -self.output_tokens,
            total_tokens: -self.total_tokens,
            request_count: -self.request_count,
            cost: -self.cost,
        }
    }

    fn since(now: &Totals, before: &Totals) -> Delta {
        let (now, before) = (Delta::of(now), Delta::of(before));
        Delta {
            input_tokens: now.input_tokens - before.input_tokens,
            output_tokens: now.output_tokens - before.output_tokens,
            total_tokens: now.total_tokens - before.total_tokens,
            request_count: now.request_count - before.request_count,
            cost: now.cost - before.cost,
        }
    }

    fn is_zero(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.total_tokens == 0
            && self.request_count == 0
            && self.cost.is_zero()
    }
}

/// A decimal as exact text without trailing zeros (`0.0012890` → `0.001289`, never `-0`).
fn decimal_text(value: Decimal) -> String {
    if value.is_zero() {
        return "0".to_owned();
    }
    value.normalize().to_string()
}

impl CloudEventsSink {
    /// The events of one change: none, one, or two when the row moved to another customer.
    fn events<'a>(&'a self, change: &'a Change, out: &mut Vec<Event<'a>>) {
        let (row, record) = (&change.row, &change.row.record);
        let now = Totals::of(record);
        let source_event_id = record.source_event_id();
        let id = format!("{source_event_id}-r{}", row.revision);
        let event = |id: String, customer: &'a str, delta: Delta| Event {
            specversion: "1.0",
            id,
            source: &self.source,
            kind: EVENT_TYPE,
            subject: if customer.is_empty() {
                ANONYMOUS
            } else {
                customer
            },
            time: format!("{}T00:00:00Z", record.key.day),
            datacontenttype: "application/json",
            data: Data {
                input_tokens: delta.input_tokens,
                output_tokens: delta.output_tokens,
                total_tokens: delta.total_tokens,
                request_count: delta.request_count,
                cost: decimal_text(delta.cost),
                currency: &record.key.currency,
                app_id: &record.key.app_id,
                app_name: &record.app_name,
                provider: &record.key.provider,
                model: &record.key.model,
                user: &record.key.user,
                workspace_id: record.workspace_id.as_deref(),
                token_split: record.token_split(),
                day: record.key.day.to_string(),
                revision: row.revision,
                source_event_id: source_event_id.clone(),
            },
        };
        match &change.previous {
            None => out.push(event(id, &row.customer, Delta::of(&now))),
            Some(before) if before.customer != row.customer => {
                out.push(event(
                    format!("{id}-moved"),
                    &before.customer,
                    Delta::of(&before.totals).negated(),
                ));
                out.push(event(id, &row.customer, Delta::of(&now)));
            }
            Some(before) => {
                let delta = Delta::since(&now, &before.totals);
                if !delta.is_zero() {
                    out.push(event(id, &row.customer, delta));
                }
            }
        }
    }
}

impl Sink for CloudEventsSink {
    fn name(&self) -> &'static str {
        "cloudevents"
    }

    fn encode(&self, changes: &[Change]) -> String {
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            self.events(change, &mut events);
        }
        // Serializing plain structs, strings and numbers cannot fail.
        serde_json::to_string(&events).unwrap_or_default()
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        #[derive(Deserialize)]
        struct Tokens {
            total_tokens: i128,
        }
        #[derive(Deserialize)]
        struct Shape {
            data: Tokens,
        }
        let events: Vec<&RawValue> = serde_json::from_str(payload)
            .map_err(|e| anyhow::anyhow!("the batch is not a JSON array of CloudEvents: {e}"))?;
        events
            .chunks(size.max(1))
            .map(|chunk| {
                let mut total_tokens = 0u64;
                for event in chunk {
                    let shape: Shape = serde_json::from_str(event.get()).map_err(|e| {
                        anyhow::anyhow!("the batch holds an event without data.total_tokens: {e}")
                    })?;
                    // Counted as tokens delivered: a negative correction adds none.
                    total_tokens += u64::try_from(shape.data.total_tokens.max(0)).unwrap_or(0);
                }
                let bodies: Vec<&str> = chunk.iter().map(|e| e.get()).collect();
                Ok(Part {
                    payload: format!("[{}]", bodies.join(",")),
                    record_count: chunk.len() as u64,
                    total_tokens,
                })
            })
            .collect()
    }

    async fn send(&self, _batch: &Batch, payload: &str) -> Result<(), SendError> {
        // Revisions that changed nothing the meter sums make a batch without events.
        if payload.trim() == "[]" {
            return Ok(());
        }
        let outcome = self
            .http
            .send(&self.endpoint, || {
                let request = self
                    .http
                    .client()
                    .post(self.url.as_str())
                    .header(CONTENT_TYPE, "application/cloudevents-batch+json")
                    .body(payload.to_owned());
                match &self.token {
                    Some(token) => request.bearer_auth(token.expose()),
                    None => request,
                }
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if already_held(&error) => Ok(()),
            Err(RequestError::Status {
                status, ref body, ..
            }) if status == StatusCode::BAD_REQUEST => {
                Err(SendError::Rejected(rejected(&self.endpoint, body)))
            }
            Err(error) => Err(classify(&error, &HINTS)),
        }
    }
}

/// A 400's message: the problem's `detail` first (OpenMeter names the event and field it refused
/// there), then the (masked) answer.
fn rejected(endpoint: &str, body: &str) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|problem| {
            problem
                .get("detail")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        });
    match detail {
        Some(detail) => {
            format!("{endpoint} answered 400: the meter refused the batch: {detail}; body: {body}")
        }
        None => format!("{endpoint} answered 400: the meter refused the batch; body: {body}"),
    }
}

#[cfg(test)]
mod tests;
