//! The source contract: where a run reads usage from, behind one enum.
//!
//! A run has exactly one source, made once and used for every chunk of the window:
//! - [`console`]: Dify's console API, app by app and mode by mode (`docs/console-api.md`);
//! - [`database`]: Dify's own database, read-only, one snapshot per chunk (`docs/database.md`).
//!
//! Both fold their observations into one [`Aggregator`](crate::usage::Aggregator) and return the
//! same [`Collected`]; both end with a [`JobError`] when they produce nothing, where a stop signal
//! is [`JobError::Stopped`], an outcome, not a failure. Adding a source is one module here and one
//! arm in [`Source`].

pub(crate) mod console;
pub(crate) mod database;

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use crate::http::HttpClient;
use crate::run::JobError;
use crate::run::window::Window;
use crate::usage::UsageRecord;

/// The kind of app, which decides where its usage is read from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::Display, strum::EnumString,
)]
#[strum(serialize_all = "kebab-case")]
pub(crate) enum AppMode {
    Workflow,
    AdvancedChat,
    Chat,
    AgentChat,
    Completion,
    /// A mode this version does not know (a newer Dify, e.g. `agent`); its usage is not collected.
    Other,
}

impl AppMode {
    /// The mode Dify calls `name`; [`AppMode::Other`] for any name this version does not know.
    pub(crate) fn from_name(name: &str) -> AppMode {
        name.parse().unwrap_or(AppMode::Other)
    }

    /// Modes whose usage the statistics endpoints hold and whose model the app names.
    pub(crate) fn is_chat_type(self) -> bool {
        matches!(
            self,
            AppMode::Chat | AppMode::AgentChat | AppMode::Completion
        )
    }
}

/// What a source found in one chunk of the window.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// The chunk's records, sorted by key (day first).
    pub(crate) records: Vec<UsageRecord>,
    /// Apps found, per mode.
    pub(crate) apps_by_mode: BTreeMap<AppMode, usize>,
}

/// Requests a source made so far in the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Requests {
    /// Attempts, retries included (for the database: connection attempts, one snapshot each).
    pub(crate) made: u64,
    /// Attempts that were retries.
    pub(crate) retried: u64,
}

/// The run's source.
pub(crate) enum Source<'c> {
    Console(console::ConsoleSource),
    Database(database::DatabaseReader<'c>),
}

impl<'c> Source<'c> {
    /// The source the configuration selects; nothing is requested yet.
    pub(crate) fn new(
        config: &'c Config,
        http: &HttpClient,
        cancel: &'c CancellationToken,
    ) -> Self {
        match &config.source {
            SourceConfig::Console { url, auth } => Source::Console(console::ConsoleSource::new(
                url,
                auth.clone(),
                http,
                config.dify_concurrency,
            )),
            SourceConfig::Database(database) => Source::Database(database::DatabaseReader::new(
                database,
                config.max_retry,
                cancel,
            )),
        }
    }

    /// Collects one chunk of the window.
    pub(crate) async fn collect(&mut self, window: Window) -> Result<Collected, JobError> {
        match self {
            Source::Console(console) => console.collect(window).await,
            Source::Database(database) => database.collect(window).await,
        }
    }

    /// Requests made so far in the run, including those of a failed chunk.
    pub(crate) fn requests(&self) -> Requests {
        match self {
            Source::Console(console) => console.requests(),
            Source::Database(database) => database.requests(),
        }
    }
}
