//! Simulators for the services `dify-usage-exporter` talks to, for tests, benchmarks and the local quick start.
//!
//! Layout:
//! - [`dify`]: a simulated Dify console API (auth variants, pagination, node executions, statistics, faults)
//!   that generates its workspace from a seed and states the exact usage totals the exporter must produce.
//!
//! A simulated metering API will sit beside `dify` later.

pub mod dify;

pub use dify::{
    AuthMode, Credentials, DifySim, Faults, LoginAttempt, SimConfig, SimStats, TokenSplit,
    TruthRecord,
};
