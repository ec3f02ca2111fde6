//! Dify's console API: the client (authentication, JSON, errors that say what to change) and the
//! typed answers. The facts it relies on are in `shared/design/DIFY-API.md`.

mod apps;
mod client;

pub use apps::{App, AppMode};
pub use client::DifyClient;
