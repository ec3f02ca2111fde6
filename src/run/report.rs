//! The run report: every figure of one run in one structure. Serialized, it is the `run finished`
//! line and the run's entry in the history `exporter status` shows; the metrics read it too.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::Outcome;
use super::window::Window;
use crate::sink::{Delivery, DeliveryStop};
use crate::source::AppMode;
use crate::state::Counts;
use crate::usage::UsageRecord;

/// What one `run` (or `resend`) did. Field order is the order of the `run finished` line.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RunReport {
    pub(crate) outcome: Outcome,
    pub(crate) exit_code: u8,
    pub(crate) dry_run: bool,
    pub(crate) from: Option<NaiveDate>,
    pub(crate) to: Option<NaiveDate>,
    /// Apps found in the last chunk, per mode.
    #[serde(flatten)]
    pub(crate) apps: Apps,
    /// Records collected.
    pub(crate) records: usize,
    pub(crate) total_tokens: u64,
    /// Cost collected, per currency, as exact decimal strings.
    #[serde(serialize_with = "exact_decimals")]
    pub(crate) cost: BTreeMap<String, Decimal>,
    /// Batches queued by this run (new or changed records only).
    pub(crate) batches_queued_now: usize,
    pub(crate) batches_sent: u64,
    pub(crate) records_sent: u64,
    /// The outbox after the run.
    pub(crate) batches_queued: u64,
    pub(crate) batches_dead: u64,
    /// Requests to the source (for the database: connection attempts).
    pub(crate) dify_requests: u64,
    /// Retries of every request of the run, the source's and the sinks'.
    pub(crate) retries: u64,
    pub(crate) duration_ms: u64,
    /// Why the run must exit 1 though the job completed: a delivery error that stopped a sink.
    #[serde(skip)]
    pub(crate) delivery_error: Option<DeliveryStop>,
}

/// Apps per mode, shown as the number found and the number not collected.
#[derive(Debug, Default)]
pub(crate) struct Apps(pub(crate) BTreeMap<AppMode, usize>);

impl Serialize for Apps {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("apps", &self.0.values().sum::<usize>())?;
        map.serialize_entry(
            "apps_skipped",
            &self.0.get(&AppMode::Other).copied().unwrap_or(0),
        )?;
        map.end()
    }
}

fn exact_decimals<S: serde::Serializer>(
    cost: &BTreeMap<String, Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        cost.iter()
            .map(|(currency, cost)| (currency, cost.normalize().to_string())),
    )
}

impl RunReport {
    pub(crate) fn set_window(&mut self, window: Option<Window>) {
        self.from = window.map(|w| w.first);
        self.to = window.map(|w| w.last);
    }

    pub(crate) fn add_records(&mut self, records: &[UsageRecord]) {
        self.records += records.len();
        self.total_tokens += records.iter().map(|r| r.total_tokens).sum::<u64>();
        for record in records {
            *self.cost.entry(record.key.currency.clone()).or_default() += record.cost;
        }
    }

    /// Takes what a delivery pass did.
    pub(crate) fn add_delivery(&mut self, delivery: &Delivery) {
        self.batches_sent += delivery.batches_sent;
        self.records_sent += delivery.records_sent;
        if let Some(error) = &delivery.stopped_by {
            self.delivery_error = Some(error.clone());
        }
    }

    /// Takes the outbox after the run.
    pub(crate) fn set_outbox(&mut self, outbox: Counts) {
        self.batches_queued = outbox.queued;
        self.batches_dead = outbox.dead;
    }

    /// Why the run must exit 1 although the job itself completed, if it must.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some(DeliveryStop::Configuration(error)) = &self.delivery_error {
            return Some(format!("delivery stopped: {error}"));
        }
        if self.batches_dead > 0 {
            return Some(format!(
                "{} batch(es) are dead-lettered; see `exporter status`, fix the cause, then `exporter resend --all-dead`",
                self.batches_dead
            ));
        }
        if self.batches_queued > 0 {
            let cause = match &self.delivery_error {
                Some(DeliveryStop::Transient(error)) => error.as_str(),
                _ => "the run stopped before sending them",
            };
            return Some(format!(
                "{} batch(es) are still queued and will be sent by the next run; last error: {cause}",
                self.batches_queued
            ));
        }
        None
    }
}
