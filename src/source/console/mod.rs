//! The console API source: Dify's console API, read app by app with the collector of each app mode
//! (`docs/console-api.md`).
//!
//! - [`credentials`], [`session`], [`login_guard`]: who the requests are, how a login session logs
//!   in and renews itself, and the guard that spares the account's lockout budget across runs;
//! - [`client`]: JSON requests through the shared retrying HTTP client, errors that say what to change;
//! - [`model`], [`paging`], [`apps`]: Dify's typed answers and the safe pagers over its lists;
//! - [`collect`]: the per-mode collectors, folding usage into the aggregator.
//!
//! The facts it relies on were read in Dify's own source; `sim/DIFY-SOURCES.md` names the file
//! behind each answer. One [`ConsoleSource`] serves every chunk of a run: one login, one token
//! renewal schedule, one request count.

mod apps;
mod client;
mod collect;
mod credentials;
pub(crate) mod login_guard;
pub(crate) mod model;
mod paging;
mod session;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use tracing::{info, warn};
use url::Url;

pub(crate) use client::DifyClient;
pub(crate) use credentials::{DifyAuth, PasswordEncoding};
use login_guard::LoginRefused;

use super::{AppMode, Collected, Requests};
use crate::http::{HttpClient, RequestError};
use crate::run::JobError;
use crate::run::window::Window;
use crate::usage::Aggregator;

/// The console API, for one run.
pub(crate) struct ConsoleSource {
    dify: Arc<DifyClient>,
    concurrency: usize,
    /// Apps of a mode this version does not know, already warned about: every chunk lists the apps
    /// again, and one warning per app and run is enough.
    unknown_apps: Mutex<BTreeSet<String>>,
}

impl ConsoleSource {
    pub(crate) fn new(url: &Url, auth: DifyAuth, http: &HttpClient, concurrency: usize) -> Self {
        let dify = Arc::new(DifyClient::new(url, auth, http, concurrency));
        let requests = Arc::clone(&dify);
        crate::progress::count_requests(move || requests.stats().requests());
        ConsoleSource {
            dify,
            concurrency,
            unknown_apps: Mutex::default(),
        }
    }

    /// Requests made to Dify so far in the run.
    pub(crate) fn requests(&self) -> Requests {
        Requests {
            made: self.dify.stats().requests(),
            retried: self.dify.stats().retries(),
        }
    }

    /// Lists the apps again and collects the chunk's usage of each.
    pub(crate) async fn collect(&self, window: Window) -> Result<Collected, JobError> {
        self.collect_chunk(window).await.map_err(ended)
    }

    async fn collect_chunk(&self, window: Window) -> anyhow::Result<Collected> {
        let apps = self.dify.list_apps().await?;
        let mut collected = Collected::default();
        for app in &apps {
            *collected.apps_by_mode.entry(app.mode()).or_default() += 1;
        }
        let count = |mode| collected.apps_by_mode.get(&mode).copied().unwrap_or(0);
        info!(
            apps = apps.len(),
            workflow = count(AppMode::Workflow),
            advanced_chat = count(AppMode::AdvancedChat),
            chat = count(AppMode::Chat),
            agent_chat = count(AppMode::AgentChat),
            completion = count(AppMode::Completion),
            other = count(AppMode::Other),
            "apps listed"
        );
        if apps.is_empty() {
            // Not an error (a new workspace), but a wrong token or workspace looks just like it.
            warn!("Dify lists no app for these credentials; nothing is read");
        }

        self.warn_unknown_apps(&apps);
        crate::progress::collecting(apps.len());
        let mut aggregator = Aggregator::default();
        let tally = collect::collect(
            self.dify.clone(),
            apps,
            window,
            self.concurrency,
            &mut aggregator,
        )
        .await?;
        collected.records = aggregator.into_records();
        let tokens: u64 = collected.records.iter().map(|r| r.total_tokens).sum();
        info!(
            from = %window.first,
            to = %window.last,
            runs = tally.runs,
            nodes_counted = tally.nodes_counted,
            conversations = tally.conversations,
            messages_counted = tally.messages_counted,
            app_days = tally.app_days,
            records = collected.records.len(),
            total_tokens = tokens,
            "usage collected"
        );
        Ok(collected)
    }
}

impl ConsoleSource {
    /// One warning per run for each app that is not collected because its mode is unknown.
    fn warn_unknown_apps(&self, apps: &[model::App]) {
        let mut warned = self
            .unknown_apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for app in apps.iter().filter(|app| app.mode() == AppMode::Other) {
            if warned.insert(app.id.clone()) {
                warn!(
                    app_id = %app.id,
                    app_name = %app.name,
                    mode = %app.mode_name,
                    "app not collected: this version does not know its mode"
                );
            }
        }
    }
}

/// Dify's own statistics of one app-day (`exporter reconcile`), asked the way the collector asks.
impl ConsoleSource {
    /// Every app of the workspace.
    pub(crate) async fn apps(&self) -> anyhow::Result<Vec<model::App>> {
        self.dify.list_apps().await
    }

    /// The account's time zone, in which the statistics take their window.
    pub(crate) async fn timezone(&self) -> anyhow::Result<Tz> {
        collect::account_timezone(&self.dify).await
    }

    /// `statistics/token-costs` of the UTC day: (tokens, price).
    pub(crate) async fn token_costs(
        &self,
        app_id: &str,
        day: NaiveDate,
        tz: Tz,
    ) -> anyhow::Result<(u64, Decimal)> {
        collect::token_costs(&self.dify, app_id, day, tz).await
    }

    /// `workflow/statistics/token-costs` of the UTC day: tokens (Dify gives no price).
    pub(crate) async fn workflow_token_costs(
        &self,
        app_id: &str,
        day: NaiveDate,
        tz: Tz,
    ) -> anyhow::Result<u64> {
        collect::workflow_token_costs(&self.dify, app_id, day, tz).await
    }
}

/// Why a chunk ended without records: the stop signal reached a request (the HTTP client's
/// [`RequestError::Cancelled`]), Dify refused the login, or a failure.
fn ended(error: anyhow::Error) -> JobError {
    let stopped = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<RequestError>(),
            Some(RequestError::Cancelled { .. })
        )
    });
    if stopped {
        return JobError::Stopped;
    }
    match LoginRefused::find(&error) {
        Some(refusal) => JobError::LoginRefused { refusal, error },
        None => JobError::Failed(error),
    }
}
