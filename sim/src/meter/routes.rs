//! The HTTP surface: `POST /v1/usage` (authenticate, validate through `wire`, upsert into `store`), plus
//! `GET /_meter/records` and `GET /_meter/stats` for people and scripts. Any other path is a 404 and any other
//! method on `/v1/usage` a 405, as a real receiver answers a misconfigured URL.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Serialize;

use super::MeterState;
use super::faults::{self, RecordCount, error};
use super::store::{HeldRecord, MeterStats, Upsert};
use super::wire::{self, Expect};

/// Bodies up to this size are read; far above 500 records (about 250 KiB), so `max_batch` is what limits.
const BODY_LIMIT: usize = 64 << 20;

/// The 200 body, in the field order docs/wire-format.md shows.
#[derive(Serialize)]
struct Accepted {
    inserted: u64,
    updated: u64,
    total: usize,
}

pub(crate) fn router(state: Arc<MeterState>) -> Router {
    Router::new()
        .route("/v1/usage", post(receive))
        .route("/_meter/records", get(records))
        .route("/_meter/stats", get(stats))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), faults::guard))
        .with_state(state)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn receive(
    State(state): State<Arc<MeterState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = &state.config;
    if !wire::authorized(&headers, &config.token) {
        return error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    let key = match wire::check_headers(&headers) {
        Ok(key) => key,
        Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, &reason),
    };
    let checked = wire::check_body(
        &body,
        &Expect {
            key,
            tenant_id: config.tenant_id.as_deref(),
            max_batch: config.max_batch,
        },
    );
    let mut response = match checked.outcome {
        Err(reason) => error(StatusCode::UNPROCESSABLE_ENTITY, &reason),
        Ok(batch) => match state.store().upsert(key, batch) {
            Upsert::Duplicate => error(StatusCode::CONFLICT, "duplicate idempotency key"),
            Upsert::Done {
                inserted,
                updated,
                total,
            } => Json(Accepted {
                inserted,
                updated,
                total,
            })
            .into_response(),
        },
    };
    if let Some(count) = checked.record_count {
        response.extensions_mut().insert(RecordCount(count));
    }
    response
}

async fn records(State(state): State<Arc<MeterState>>) -> Json<Vec<HeldRecord>> {
    Json(state.store().records())
}

async fn stats(State(state): State<Arc<MeterState>>) -> Json<MeterStats> {
    Json(state.store().stats())
}
