//! Sending the outbox to the metering API, oldest batch first (ARCHITECTURE.md 7.5, WIRE-FORMAT.md).
//!
//! | answer | what happens to the batch | the run |
//! |---|---|---|
//! | 2xx, 409 | sent | goes on |
//! | 429, 5xx, timeout, connection error (after `MAX_RETRY` retries) | stays queued; dead after `DEAD_LETTER_AFTER` failed runs | stops sending, fails |
//! | 401, 403, 404, 405 | stays queued (a configuration problem, not the batch's) | stops sending, fails |
//! | 413 (payload too large) | split in halves, which are sent at once (down to one record) | goes on |
//! | 3xx (redirects are not followed) | stays queued (a configuration problem) | stops sending, fails |
//! | 400, 422, other 4xx, 413 for one record | dead, with the answer's first 4 KiB | goes on, fails |
//!
//! A queued batch older than 7 days is dead-lettered before it is tried. Dead batches wait for
//! `exporter resend` (which re-batches them to the current `BATCH_SIZE`) or `exporter discard`. Each answer is written to the state database before the next batch is sent,
//! so a kill at any moment loses at most the knowledge that the last POST succeeded, which the
//! idempotency key makes harmless.

use std::collections::VecDeque;

use anyhow::Result;
use chrono::{Duration as ChronoDuration, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::export::batch;
use crate::http::{HttpClient, RequestError};
use crate::state::{Batch, BatchState, State};

/// A queued batch older than this is dead-lettered.
const MAX_AGE_DAYS: i64 = 7;
/// The endpoint as named in logs and errors.
const ENDPOINT: &str = "POST EXTERNAL_API_URL";

/// What one delivery pass did.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    pub batches_sent: u64,
    pub records_sent: u64,
    pub tokens_sent: u64,
    /// Batches dead-lettered in this pass.
    pub batches_dead_now: u64,
    /// A configuration problem that stopped the pass (401/403/404/405).
    pub config_error: Option<String>,
    /// A transient failure that stopped the pass.
    pub transient_error: Option<String>,
}

/// Sends every queued batch, oldest first, until done, a stop signal, or a failure that makes
/// further sending pointless.
pub async fn deliver(
    state: &State,
    http: &HttpClient,
    config: &Config,
    cancel: &CancellationToken,
) -> Result<Delivery> {
    let mut delivery = Delivery::default();
    let mut pending: VecDeque<Batch> = state.batches(BatchState::Queued)?.into();
    while let Some(batch) = pending.pop_front() {
        if cancel.is_cancelled() {
            break;
        }
        if Utc::now() - batch.created_at > ChronoDuration::days(MAX_AGE_DAYS) {
            let reason = format!(
                "not delivered within {MAX_AGE_DAYS} days (queued at {})",
                batch.created_at
            );
            dead_letter(state, &batch, &reason)?;
            delivery.batches_dead_now += 1;
            continue;
        }
        match send(http, config, &batch, &state.records(batch.id)?).await {
            Ok(status) => {
                state.mark_sent(batch.id)?;
                crate::progress::batch_sent();
                delivery.batches_sent += 1;
                delivery.records_sent += batch.record_count;
                delivery.tokens_sent += batch.total_tokens;
                info!(
                    batch_id = batch.id,
                    records = batch.record_count,
                    status,
                    "batch delivered"
                );
            }
            Err(RequestError::Cancelled { .. }) => break,
            Err(error) => match classify(&error, batch.record_count) {
                Failure::TooLarge => {
                    let parts = state.split(
                        &batch,
                        batch
                            .record_count
                            .div_ceil(2)
                            .try_into()
                            .unwrap_or(usize::MAX),
                    )?;
                    info!(
                        batch_id = batch.id,
                        records = batch.record_count,
                        parts = ?parts.iter().map(|p| p.id).collect::<Vec<_>>(),
                        "batch too large for the metering API (413); split in halves and sent again"
                    );
                    for part in parts.into_iter().rev() {
                        pending.push_front(part);
                    }
                }
                Failure::Configuration(hint) => {
                    let message = format!("{hint}: {error}");
                    state.note_error(batch.id, &message)?;
                    delivery.config_error = Some(message);
                    break;
                }
                Failure::Rejected(body) => {
                    let reason = format!("{error}; body: {body}");
                    dead_letter(state, &batch, &reason)?;
                    delivery.batches_dead_now += 1;
                }
                Failure::Transient => {
                    let message = error.to_string();
                    let failed_runs = state.mark_failed(batch.id, &message)?;
                    if failed_runs >= config.dead_letter_after {
                        dead_letter(
                            state,
                            &batch,
                            &format!(
                                "failed in {failed_runs} runs (DEAD_LETTER_AFTER); last: {message}"
                            ),
                        )?;
                        delivery.batches_dead_now += 1;
                    } else {
                        warn!(batch_id = batch.id, failed_runs, error = %message, "batch stays queued for the next run");
                    }
                    // The receiver is unwell: the rest would fail the same way after their retries.
                    delivery.transient_error = Some(message);
                    break;
                }
            },
        }
    }
    Ok(delivery)
}

fn dead_letter(state: &State, batch: &Batch, reason: &str) -> Result<()> {
    state.mark_dead(batch.id, reason)?;
    error!(
        batch_id = batch.id,
        records = batch.record_count,
        first_day = %batch.first_day,
        reason,
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`"
    );
    Ok(())
}

/// POSTs one batch; a 409 (already delivered) counts as success.
async fn send(
    http: &HttpClient,
    config: &Config,
    batch: &Batch,
    records: &str,
) -> Result<u16, RequestError> {
    let body =
        batch::body(batch, records, config.external_api_tenant_id.as_deref()).map_err(|e| {
            RequestError::Status {
                endpoint: ENDPOINT.to_owned(),
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: e.to_string(),
                body: String::new(),
            }
        })?;
    let url = config.external_api_url.as_str();
    let key = HeaderValue::from_str(&batch.idempotency_key)
        .unwrap_or(HeaderValue::from_static("invalid"));
    let outcome = http
        .send(ENDPOINT, || {
            http.client()
                .post(url)
                .bearer_auth(config.external_api_token.expose())
                .header(CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", key.clone())
                .body(body.clone())
        })
        .await;
    match outcome {
        Ok(answer) => Ok(answer.status.as_u16()),
        Err(RequestError::Status { status, .. }) if status == StatusCode::CONFLICT => {
            Ok(status.as_u16())
        }
        Err(error) => Err(error),
    }
}

enum Failure {
    /// 413 for a batch of more than one record: worth splitting.
    TooLarge,
    /// The configuration is wrong; the hint names the variable.
    Configuration(&'static str),
    /// The receiver refused the payload; its answer.
    Rejected(String),
    Transient,
}

fn classify(error: &RequestError, records: u64) -> Failure {
    match error {
        RequestError::Status { status, body, .. } => match status.as_u16() {
            413 if records > 1 => Failure::TooLarge,
            300..=399 => Failure::Configuration(
                "check EXTERNAL_API_URL: the metering API redirects it elsewhere",
            ),
            401 | 403 => {
                Failure::Configuration("check EXTERNAL_API_TOKEN (and EXTERNAL_API_TENANT_ID)")
            }
            404 | 405 => Failure::Configuration(
                "check EXTERNAL_API_URL: it must be the full endpoint that receives the POSTs",
            ),
            429 => Failure::Transient,
            400..=499 => Failure::Rejected(body.clone()),
            _ => Failure::Transient,
        },
        RequestError::Transport { .. } | RequestError::Cancelled { .. } => Failure::Transient,
    }
}
