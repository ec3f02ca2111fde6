//! Configuration of the simulated metering API: what it accepts (token, tenant, batch size) and which faults
//! it injects. Plain data with public fields and a `Default`, so a test states only what it cares about
//! (`MeterConfig { max_batch: 10, ..MeterConfig::default() }`). Faults are separate from the config because
//! tests change them on the running simulator between exporter runs.

use std::time::Duration;

/// What one simulated metering API accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterConfig {
    /// `Authorization: Bearer <token>` must carry exactly this.
    pub token: String,
    /// When set, the body's `tenant_id` must be present and equal to it.
    pub tenant_id: Option<String>,
    /// Most records accepted in one batch; a larger batch is a 422.
    pub max_batch: usize,
    /// Seed of the RNG behind `error_share` and `too_many_share`, so a faulty run repeats exactly.
    pub seed: u64,
    /// Port to bind on 127.0.0.1; 0 lets the OS choose.
    pub port: u16,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            token: "meter-token".to_owned(),
            tenant_id: None,
            max_batch: 500,
            seed: 42,
            port: 0,
        }
    }
}

/// Faults injected into every request except `GET /_meter/*`, before authentication and validation (as a
/// proxy or an overloaded receiver fails a request before the application reads it).
///
/// They are checked in this order: `delay`, `hang`, `reset_connections`, `down_for_next`, `reject_next`,
/// then one seeded draw for `error_share` and `too_many_share`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterFaults {
    /// Share of requests, 0.0..=1.0, answered 503 (drawn from an RNG seeded by the config's seed).
    pub error_share: f64,
    /// Share of requests, 0.0..=1.0, answered 429 with `Retry-After: retry_after_secs` (same draw, so the two
    /// shares add up; their sum should stay at most 1.0).
    pub too_many_share: f64,
    /// `Retry-After` seconds sent with an injected 429.
    pub retry_after_secs: u64,
    /// The next N requests get 503; counts down as they arrive.
    pub down_for_next: u32,
    /// The next N requests get 400 `{"error":"rejected by test"}`; counts down as they arrive.
    pub reject_next: u32,
    /// Accept requests and never answer, until this is cleared (the request then proceeds) or the server stops.
    pub hang: bool,
    /// Close the TCP connection of every request without answering.
    pub reset_connections: bool,
    /// Added before every answer, to make slow receivers visible.
    pub delay: Duration,
}

impl Default for MeterFaults {
    /// No faults.
    fn default() -> Self {
        MeterFaults {
            error_share: 0.0,
            too_many_share: 0.0,
            retry_after_secs: 1,
            down_for_next: 0,
            reject_next: 0,
            hang: false,
            reset_connections: false,
            delay: Duration::ZERO,
        }
    }
}
