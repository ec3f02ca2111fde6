//! The per-mode collectors (`docs/console-api.md#endpoints-by-app-mode`): where each kind of app keeps its usage, and how to
//! read exactly one window of UTC days of it, attributing every token to its user where Dify says who.
//!
//! - [`workflow`]: `workflow` runs from `workflow-app-logs` (user on the log row), `advanced-chat` runs
//!   from `workflow-runs?triggered_from=app-run` (user on the node executions, since real Dify's list
//!   rows lack the end user); then each run's nodes.
//! - [`chat`]: `chat` and `agent-chat` apps message by message, conversation by conversation.
//! - [`statistics`]: `statistics/token-costs` and `daily-messages` per app and UTC day: the whole of a
//!   `completion` app, and for chat apps the remainder the conversations cannot attribute.
//! - other modes: named in the log, not collected (`apps_skipped` in the summary).
//!
//! A producer task pages through the lists and queues one unit of work per run, conversation or
//! app-day in a bounded channel; the consumer runs up to `DIFY_CONCURRENCY` of them at once and folds
//! each result into the [`Aggregator`]. Memory is bounded by the channel, the units in flight, the
//! records and one small sum per app-day, never by runs or messages: a conversation's messages are
//! read a page at a time and summed per day as they come.

mod archived;
mod chat;
mod statistics;
mod workflow;

pub(crate) use statistics::{token_costs, workflow_token_costs};

use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info};

use super::DifyClient;
use super::model::{App, Profile};
use crate::run::window::Window;
use crate::source::AppMode;
use crate::usage::{Aggregator, Usage};

/// Dify caps list pages at 100 and answers 400 beyond.
const PAGE_LIMIT: u32 = 100;
/// Units of work queued ahead of the consumer.
const QUEUE_DEPTH: usize = 1024;

/// What a collection found, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Collected {
    pub(crate) runs: u64,
    pub(crate) nodes_counted: u64,
    pub(crate) conversations: u64,
    pub(crate) messages_counted: u64,
    pub(crate) app_days: u64,
}

/// One unit of work for the consumer.
enum Work {
    Run(workflow::RunWork),
    Conversation(chat::ConversationWork),
    AppDay(statistics::AppDayWork),
}

/// What a unit of work found.
enum Outcome {
    Run { usages: Vec<Usage>, nodes: u64 },
    Conversation(chat::ConversationUsage),
    AppDay(statistics::AppDayStatistics),
}

/// What every unit of an app needs to know about it.
struct AppInfo {
    id: Arc<str>,
    name: Arc<str>,
    mode: AppMode,
    /// The model of a chat-type app, as (provider, name).
    model: (String, String),
}

/// Collects the window's usage of every app into `aggregator`.
pub(crate) async fn collect(
    dify: Arc<DifyClient>,
    apps: Vec<App>,
    window: Window,
    concurrency: usize,
    aggregator: &mut Aggregator,
) -> Result<Collected> {
    let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
    let producer =
        AbortOnDropHandle::new(tokio::spawn(produce(dify.clone(), apps, window, sender)));

    let work = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|work| (work, receiver))
    });
    let results = work
        .map(|work| execute(&dify, work, window))
        .buffer_unordered(concurrency);
    tokio::pin!(results);
    let mut collected = Collected::default();
    let mut remainders = statistics::Remainders::default();
    while let Some(result) = results.next().await {
        match result? {
            Outcome::Run { usages, nodes } => {
                collected.runs += 1;
                collected.nodes_counted += nodes;
                crate::progress::run_read();
                for usage in usages {
                    aggregator.add(usage)?;
                }
            }
            Outcome::Conversation(conversation) => {
                collected.conversations += 1;
                collected.messages_counted += conversation.messages;
                crate::progress::messages_read(conversation.messages);
                for usage in conversation.usages {
                    remainders.add_end_user(&usage);
                    aggregator.add(usage)?;
                }
            }
            Outcome::AppDay(day) => {
                collected.app_days += 1;
                crate::progress::app_day_read();
                remainders.add_statistics(day);
            }
        }
    }
    // The queue is drained, so the producer is done; its error (if any) is the run's error.
    producer
        .await
        .context("the run lister stopped unexpectedly")??;
    // Every conversation of every app is read: what the statistics hold beyond them is the remainder.
    for usage in remainders.into_usages() {
        aggregator.add(usage)?;
    }
    Ok(collected)
}

/// Pages through every app's runs, conversations and days, and queues the work.
async fn produce(
    dify: Arc<DifyClient>,
    apps: Vec<App>,
    window: Window,
    sender: mpsc::Sender<Work>,
) -> Result<()> {
    let tz = if apps.iter().any(|a| a.mode().is_chat_type()) {
        Some(account_timezone(&dify).await?)
    } else {
        None
    };
    for app in apps {
        let mode = app.mode();
        if mode == AppMode::Other {
            // Warned about once per run by the source, not once per chunk here.
            crate::progress::app_done();
            continue;
        }
        let info = Arc::new(AppInfo {
            id: Arc::from(app.id.as_str()),
            name: Arc::from(app.name.as_str()),
            mode,
            model: chat_model(&dify, &app).await?,
        });
        let queue = Queue { sender: &sender };
        let queued = match (mode, tz) {
            (AppMode::Workflow, _) => {
                archived::warn_archived(&dify, &info, window).await?;
                workflow::queue_logged_runs(&dify, &info, window, queue).await?
            }
            (AppMode::AdvancedChat, _) => {
                workflow::queue_listed_runs(&dify, &info, window, queue).await?
            }
            (AppMode::Chat | AppMode::AgentChat, Some(tz)) => {
                chat::queue_conversations(&dify, &info, window, tz, queue).await?
                    + statistics::queue_app_days(&info, window, tz, queue).await
            }
            (AppMode::Completion, Some(tz)) => {
                statistics::queue_app_days(&info, window, tz, queue).await
            }
            _ => 0,
        };
        if sender.is_closed() {
            return Ok(()); // the consumer stopped on an error of its own
        }
        debug!(app_id = %info.id, %mode, queued, "app queued");
        crate::progress::app_done();
    }
    Ok(())
}

/// The producer's end of the work queue.
#[derive(Clone, Copy)]
struct Queue<'a> {
    sender: &'a mpsc::Sender<Work>,
}

impl Queue<'_> {
    /// Queues `work`; false when the consumer has stopped (on an error of its own), so the producer
    /// should stop too.
    async fn push(self, work: Work) -> bool {
        self.sender.send(work).await.is_ok()
    }
}

async fn execute(dify: &DifyClient, work: Work, window: Window) -> Result<Outcome> {
    match work {
        Work::Run(run) => {
            let usages = workflow::read_run(dify, &run).await?;
            let nodes = usages.len() as u64;
            Ok(Outcome::Run { usages, nodes })
        }
        Work::Conversation(conversation) => Ok(Outcome::Conversation(
            chat::read_conversation(dify, &conversation, window).await?,
        )),
        Work::AppDay(day) => Ok(Outcome::AppDay(statistics::read_app_day(dify, day).await?)),
    }
}

/// The (provider, model) of a chat-type app: from the list when it carries the `model_config`, else
/// from the app itself (`GET /apps/{id}`); empty for other modes and apps without a model.
async fn chat_model(dify: &DifyClient, app: &App) -> Result<(String, String)> {
    let from = |app: &App| {
        app.model_config
            .as_ref()
            .and_then(|c| c.model.as_ref())
            .map(|m| (m.provider.clone(), m.name.clone()))
    };
    if !app.mode().is_chat_type() {
        return Ok(Default::default());
    }
    if let Some(model) = from(app) {
        return Ok(model);
    }
    let detail: App = dify.get(&format!("/apps/{}", app.id), &[]).await?;
    Ok(from(&detail).unwrap_or_default())
}

pub(crate) async fn account_timezone(dify: &DifyClient) -> Result<Tz> {
    let profile: Profile = dify.get("/account/profile", &[]).await?;
    let name = profile.timezone.unwrap_or_else(|| "UTC".to_owned());
    let tz: Tz = name.parse().map_err(|_| {
        anyhow!("GET /console/api/account/profile names an unknown timezone `{name}`")
    })?;
    info!(timezone = %tz, "account timezone for statistics and conversations");
    Ok(tz)
}

/// The UTC day of Unix `seconds` that `path` answered.
fn utc_day(seconds: i64, path: &str) -> Result<NaiveDate> {
    DateTime::from_timestamp(seconds, 0)
        .map(|t| t.date_naive())
        .with_context(|| {
            format!("GET /console/api{path} gave a time of {seconds}, which is not a time")
        })
}

/// 00:00 UTC of `day` as the account-timezone minute the console's `start`/`end` parameters take.
fn local_minute(day: NaiveDate, tz: Tz) -> String {
    day.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}
