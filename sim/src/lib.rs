//! Simulators for the services `dify-usage-exporter` talks to, for tests, benchmarks and the local quick start.
//!
//! Layout:
//! - [`dify`]: a simulated Dify console API (auth variants, pagination, node executions, statistics, faults)
//!   that generates its workspace from a seed and states the exact usage totals the exporter must produce.
//! - [`meter`]: a simulated metering API (the exporter's receiver) that checks every request against
//!   docs/wire-format.md, upserts records by `source_event_id`, remembers Idempotency-Keys, injects faults on demand
//!   and reports what it holds.
//! - [`collector`]: a simulated CloudEvents collector with OpenMeter's ingestion rules (the `cloudevents` sink's
//!   receiver): de-duplication by `id` + `source`, sums per subject and group, faults for replays.

pub mod collector;
pub mod dify;
pub mod meter;

pub use collector::{CollectorConfig, CollectorFaults, CollectorSim, CollectorStats, Group, Sums};
pub use dify::{
    AuthMode, Credentials, DifySim, Faults, LoginAttempt, SimConfig, SimStats, TokenSplit,
    TruthRecord,
};
pub use meter::{HeldRecord, MeterConfig, MeterFaults, MeterSim, MeterStats, RequestLog};
