//! The run report: every figure of one run in one structure. Serialized, it is the `run finished`
//! line and the run's entry in the history `exporter status` shows; the metrics read it too.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::Outcome;
use super::commit::Committed;
use super::window::Window;
use crate::ledger::{DecreasePolicy, Merger};
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
    /// Ledger rows this run created.
    pub(crate) ledger_rows_new: u64,
    /// Ledger rows this run gave a new revision.
    pub(crate) ledger_rows_revised: u64,
    /// What Dify no longer shows of the exported usage: records, tokens, cost per currency
    /// (kept in the ledger under `USAGE_DECREASES=keep`, followed under `follow`).
    pub(crate) ledger_decreases: u64,
    pub(crate) ledger_decreased_tokens: u64,
    #[serde(serialize_with = "exact_decimals")]
    pub(crate) ledger_decreased_cost: BTreeMap<String, Decimal>,
    /// Of those, the records whose ledger totals were kept.
    pub(crate) ledger_kept_decreases: u64,
    /// Users the identity map (`USER_MAP_FILE`) does not name; 0 without a map.
    pub(crate) users_unmapped: usize,
    /// Batches queued by this run (changed ledger rows only), over every sink.
    pub(crate) batches_queued_now: usize,
    pub(crate) batches_sent: u64,
    pub(crate) records_sent: u64,
    /// The outbox after the run, over every sink.
    pub(crate) batches_queued: u64,
    pub(crate) batches_dead: u64,
    /// The same figures per sink.
    pub(crate) sinks: BTreeMap<String, SinkReport>,
    /// Requests to the source (for the database: connection attempts).
    pub(crate) dify_requests: u64,
    /// Retries of every request of the run, the source's and the sinks'.
    pub(crate) retries: u64,
    pub(crate) duration_ms: u64,
    /// Batches queued by this run per sink, filled while committing.
    #[serde(skip)]
    pub(crate) batches_queued_per_sink: BTreeMap<&'static str, usize>,
}

/// What one sink got in a run.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SinkReport {
    pub(crate) batches_queued_now: usize,
    pub(crate) batches_sent: u64,
    pub(crate) records_sent: u64,
    pub(crate) batches_queued: u64,
    pub(crate) batches_dead: u64,
    /// Why delivery to the sink stopped, if it did: part of why the run exits 1.
    #[serde(skip)]
    pub(crate) stopped_by: Option<DeliveryStop>,
    /// Whether the configuration enables the sink (an unconfigured one may still hold batches).
    #[serde(skip)]
    pub(crate) configured: bool,
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

    /// Takes what committing a chunk did.
    pub(super) fn add_commit(&mut self, committed: &Committed) {
        self.ledger_rows_new += committed.rows_new;
        self.ledger_rows_revised += committed.rows_revised;
        self.batches_queued_now += committed.batches;
    }

    /// Takes the merge's figures over the whole run.
    pub(super) fn add_merge(&mut self, merger: &Merger<'_>, policy: DecreasePolicy) {
        let decreases = &merger.decreases;
        self.ledger_decreases = decreases.keys;
        self.ledger_decreased_tokens = decreases.tokens;
        self.ledger_decreased_cost.clone_from(&decreases.cost);
        self.ledger_kept_decreases = match policy {
            DecreasePolicy::Keep => decreases.keys,
            DecreasePolicy::Follow => 0,
        };
        self.users_unmapped = merger.unmapped.len();
    }

    /// Takes what a delivery pass to `sink` did.
    pub(crate) fn add_delivery(&mut self, sink: &'static str, delivery: &Delivery) {
        self.batches_sent += delivery.batches_sent;
        self.records_sent += delivery.records_sent;
        let report = self.sinks.entry(sink.to_owned()).or_default();
        report.batches_sent += delivery.batches_sent;
        report.records_sent += delivery.records_sent;
        if let Some(error) = &delivery.stopped_by {
            report.stopped_by = Some(error.clone());
        }
    }

    /// Takes the outbox after the run, per sink: the configured ones (`sinks`), listed even when
    /// they have nothing queued, and any other that still has batches.
    pub(crate) fn set_outbox(&mut self, sinks: &[&'static str], outbox: &BTreeMap<String, Counts>) {
        for sink in sinks {
            self.sinks.entry((*sink).to_owned()).or_default().configured = true;
        }
        for sink in outbox.keys() {
            self.sinks.entry(sink.clone()).or_default();
        }
        for (name, report) in &mut self.sinks {
            let counts = outbox.get(name).copied().unwrap_or_default();
            report.batches_queued = counts.queued;
            report.batches_dead = counts.dead;
            report.batches_queued_now = self
                .batches_queued_per_sink
                .get(name.as_str())
                .copied()
                .unwrap_or(0);
        }
        self.batches_queued = outbox.values().map(|c| c.queued).sum();
        self.batches_dead = outbox.values().map(|c| c.dead).sum();
    }

    /// Why the run must exit 1 although the job itself completed, if it must: one sentence per
    /// sink that has work left.
    pub(crate) fn problem(&self) -> Option<String> {
        let problems: Vec<String> = self
            .sinks
            .iter()
            .filter_map(|(name, sink)| sink.problem().map(|p| format!("sink {name}: {p}")))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

impl SinkReport {
    fn problem(&self) -> Option<String> {
        if !self.configured && self.batches_queued + self.batches_dead > 0 {
            return Some(format!(
                "{} batch(es) wait for a sink the configuration no longer enables; enable it again to deliver \
                 them (`exporter status` lists them)",
                self.batches_queued + self.batches_dead
            ));
        }
        if let Some(DeliveryStop::Configuration(error)) = &self.stopped_by {
            return Some(format!("delivery stopped: {error}"));
        }
        if self.batches_dead > 0 {
            return Some(format!(
                "{} batch(es) are dead-lettered; see `exporter status`, fix the cause, then `exporter resend --all-dead`",
                self.batches_dead
            ));
        }
        if self.batches_queued > 0 {
            let cause = match &self.stopped_by {
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
