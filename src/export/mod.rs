//! From usage observations to the records the metering API receives (WIRE-FORMAT.md):
//! [`aggregate`] sums them per (UTC day, app, user, provider, model, currency) with exact decimals,
//! [`record`] writes one record in the wire format, [`batch`] groups records into the batches that
//! are queued and sent.

pub mod aggregate;
pub mod batch;
pub mod record;

pub use aggregate::{Aggregator, Usage, UsageRecord};
