//! Dify's console API: authentication for every version, the client (JSON, retries, errors that say
//! what to change), the typed answers, and the per-mode collectors. The facts it relies on were read
//! in Dify's own source; `sim/DIFY-SOURCES.md` names the file behind each answer.

mod apps;
mod auth;
mod client;
pub mod collect;
pub(crate) mod model;
mod paging;

pub use apps::AppMode;
pub use auth::{
    DifyAuth, LoginRefused, LoginVerdict, PasswordEncoding, login_guard, login_refusal,
    record_login_refusal,
};
pub use client::DifyClient;
pub use model::App;
