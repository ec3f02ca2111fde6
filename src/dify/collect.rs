//! The per-mode collectors (ARCHITECTURE.md 7.2): where each kind of app keeps its usage, and how to
//! read exactly one window of UTC days of it.
//!
//! - `workflow`: runs from `workflow-app-logs` (date-filtered on the server), then each run's nodes.
//! - `advanced-chat`: runs from `workflow-runs?triggered_from=app-run` (Dify defaults to debug runs),
//!   newest first, paging until the rows are older than the window; then each run's nodes.
//! - `chat`, `agent-chat`, `completion`: `statistics/token-costs` and `daily-messages`, one UTC day
//!   per query converted to the account's timezone; the model comes from the app's `model_config`.
//!
//! A producer task pages through the lists and queues one unit of work per run or per app-day in a
//! bounded channel; the consumer runs up to `DIFY_CONCURRENCY` of them at once and folds each result
//! into the [`Aggregator`]. Memory is bounded by the channel, the requests in flight and the records.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use futures::StreamExt as _;
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info};

use super::model::{
    App, DailyMessages, NodeExecution, NodeExecutions, Page, Profile, RunPage, TokenCosts,
    WorkflowAppLog,
};
use super::{AppMode, DifyClient};
use crate::export::{Aggregator, Usage};
use crate::window::Window;

/// Dify caps list pages at 100 and answers 400 beyond.
const PAGE_LIMIT: u32 = 100;
/// Units of work queued ahead of the consumer.
const QUEUE_DEPTH: usize = 1024;
/// Node types that repeat their children's usage in `execution_metadata`: never counted.
const CONTAINER_NODES: [&str; 2] = ["iteration", "loop"];

/// What a collection found, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    pub runs: u64,
    pub nodes_counted: u64,
    pub app_days: u64,
}

/// One unit of work for the consumer.
enum Work {
    /// A workflow or advanced-chat run: read its nodes.
    Run {
        app: Arc<AppInfo>,
        run_id: String,
        day: NaiveDate,
        user: String,
    },
    /// A chat-type app's UTC day: read its statistics.
    AppDay {
        app: Arc<AppInfo>,
        day: NaiveDate,
        tz: Tz,
    },
}

struct AppInfo {
    id: Arc<str>,
    name: Arc<str>,
    /// The model of a chat-type app, as (provider, name).
    model: (String, String),
}

/// Collects the window's usage of every app into `aggregator`.
pub async fn collect(
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
        .map(|work| execute(&dify, work))
        .buffer_unordered(concurrency);
    tokio::pin!(results);
    let mut collected = Collected::default();
    while let Some(result) = results.next().await {
        let (observations, counted) = result?;
        match counted {
            Counted::Run(nodes) => {
                collected.runs += 1;
                collected.nodes_counted += nodes;
            }
            Counted::AppDay => collected.app_days += 1,
        }
        crate::progress::read(collected.runs, collected.app_days);
        for usage in observations {
            aggregator.add(usage);
        }
    }
    // The queue is drained, so the producer is done; its error (if any) is the run's error.
    producer
        .await
        .context("the run lister stopped unexpectedly")??;
    Ok(collected)
}

enum Counted {
    Run(u64),
    AppDay,
}

/// Pages through every app's runs (and days) and queues the work.
async fn produce(
    dify: Arc<DifyClient>,
    apps: Vec<App>,
    window: Window,
    sender: mpsc::Sender<Work>,
) -> Result<()> {
    let needs_timezone = apps.iter().any(|a| {
        matches!(
            a.mode,
            AppMode::Chat | AppMode::AgentChat | AppMode::Completion
        )
    });
    let tz = if needs_timezone {
        Some(account_timezone(&dify).await?)
    } else {
        None
    };
    for app in apps {
        let info = Arc::new(AppInfo {
            id: Arc::from(app.id.as_str()),
            name: Arc::from(app.name.as_str()),
            model: chat_model(&dify, &app).await?,
        });
        let queued = match app.mode {
            AppMode::Workflow => queue_logged_runs(&dify, &info, window, &sender).await?,
            AppMode::AdvancedChat => queue_listed_runs(&dify, &info, window, &sender).await?,
            AppMode::Chat | AppMode::AgentChat | AppMode::Completion => {
                let Some(tz) = tz else { continue };
                let mut queued = 0;
                for day in window.days() {
                    if sender
                        .send(Work::AppDay {
                            app: info.clone(),
                            day,
                            tz,
                        })
                        .await
                        .is_err()
                    {
                        return Ok(()); // the consumer stopped on an error of its own
                    }
                    queued += 1;
                }
                queued
            }
            AppMode::Other => 0,
        };
        debug!(app_id = %info.id, mode = %app.mode, queued, "app queued");
        crate::progress::app_done();
    }
    Ok(())
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
    if !matches!(
        app.mode,
        AppMode::Chat | AppMode::AgentChat | AppMode::Completion
    ) {
        return Ok(Default::default());
    }
    if let Some(model) = from(app) {
        return Ok(model);
    }
    let detail: App = dify.get(&format!("/apps/{}", app.id), &[]).await?;
    Ok(from(&detail).unwrap_or_default())
}

async fn account_timezone(dify: &DifyClient) -> Result<Tz> {
    let profile: Profile = dify.get("/account/profile", &[]).await?;
    let name = profile.timezone.unwrap_or_else(|| "UTC".to_owned());
    let tz: Tz = name.parse().map_err(|_| {
        anyhow::anyhow!("GET /console/api/account/profile names an unknown timezone `{name}`")
    })?;
    info!(timezone = %tz, "account timezone for statistics");
    Ok(tz)
}

/// Workflow apps: the app logs, filtered to the window on the server.
async fn queue_logged_runs(
    dify: &DifyClient,
    app: &Arc<AppInfo>,
    window: Window,
    sender: &mpsc::Sender<Work>,
) -> Result<u64> {
    let path = format!("/apps/{}/workflow-app-logs", app.id);
    let mut queued = 0;
    for page in 1.. {
        let query = [
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
            (
                "created_at__after",
                window.start().format("%Y-%m-%dT%H:%M:%S").to_string(),
            ),
            (
                "created_at__before",
                window
                    .end_inclusive()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string(),
            ),
        ];
        let answer: Page<WorkflowAppLog> = dify.get(&path, &query).await?;
        let empty = answer.data.is_empty();
        for log in answer.data {
            let day = utc_day(log.workflow_run.created_at, &path)?;
            if !window.contains(day) {
                continue;
            }
            let work = Work::Run {
                app: app.clone(),
                run_id: log.workflow_run.id,
                day,
                user: log.creator.user(),
            };
            if sender.send(work).await.is_err() {
                return Ok(queued);
            }
            queued += 1;
        }
        if !answer.has_more || empty {
            break;
        }
    }
    Ok(queued)
}

/// Advanced-chat apps: production runs, newest first, until they are older than the window.
async fn queue_listed_runs(
    dify: &DifyClient,
    app: &Arc<AppInfo>,
    window: Window,
    sender: &mpsc::Sender<Work>,
) -> Result<u64> {
    let path = format!("/apps/{}/workflow-runs", app.id);
    let mut last_id: Option<String> = None;
    let mut queued = 0;
    loop {
        let mut query = vec![
            ("limit", PAGE_LIMIT.to_string()),
            ("triggered_from", "app-run".to_owned()),
        ];
        if let Some(id) = &last_id {
            query.push(("last_id", id.clone()));
        }
        let answer: RunPage = dify.get(&path, &query).await?;
        let mut older_than_window = false;
        last_id = answer.data.last().map(|run| run.id.clone());
        for run in answer.data {
            let day = utc_day(run.created_at, &path)?;
            if day < window.first {
                older_than_window = true;
                break;
            }
            if day > window.last {
                continue;
            }
            let user = run.creator.user();
            if sender
                .send(Work::Run {
                    app: app.clone(),
                    run_id: run.id,
                    day,
                    user,
                })
                .await
                .is_err()
            {
                return Ok(queued);
            }
            queued += 1;
        }
        if older_than_window || !answer.has_more || last_id.is_none() {
            return Ok(queued);
        }
    }
}

async fn execute(dify: &DifyClient, work: Work) -> Result<(Vec<Usage>, Counted)> {
    match work {
        Work::Run {
            app,
            run_id,
            day,
            user,
        } => {
            let path = format!("/apps/{}/workflow-runs/{run_id}/node-executions", app.id);
            let nodes: NodeExecutions = dify.get(&path, &[]).await?;
            let usages: Vec<Usage> = nodes
                .data
                .iter()
                .filter_map(|node| node_usage(node, &app, day, &user))
                .collect();
            let counted = usages.len() as u64;
            Ok((usages, Counted::Run(counted)))
        }
        Work::AppDay { app, day, tz } => Ok((
            app_day_usage(dify, &app, day, tz)
                .await?
                .into_iter()
                .collect(),
            Counted::AppDay,
        )),
    }
}

/// The usage of one node, if it carries its own: containers never; a truncated node through its
/// `execution_metadata` (total only).
fn node_usage(node: &NodeExecution, app: &AppInfo, day: NaiveDate, user: &str) -> Option<Usage> {
    if CONTAINER_NODES.contains(&node.node_type.as_str()) {
        return None;
    }
    let process = node.process_data.as_ref();
    let provider = process
        .and_then(|p| p.model_provider.clone())
        .unwrap_or_default();
    let model = process
        .and_then(|p| p.model_name.clone())
        .unwrap_or_default();
    let base = |input, output, total, cost, currency: Option<&String>, total_only| Usage {
        day,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        user: user.to_owned(),
        provider: provider.clone(),
        model: model.clone(),
        currency: currency.cloned().unwrap_or_default(),
        input_tokens: input,
        output_tokens: output,
        total_tokens: total,
        cost,
        requests: 1,
        total_only,
    };
    if let Some(usage) = process.and_then(|p| p.usage.as_ref()) {
        // Dify's own total is prompt + completion; rebuild it so the record's identity always holds.
        let total = usage.prompt_tokens + usage.completion_tokens;
        return Some(base(
            usage.prompt_tokens,
            usage.completion_tokens,
            total,
            usage.total_price,
            usage.currency.as_ref(),
            false,
        ));
    }
    if node.process_data_truncated {
        let metadata = node.execution_metadata.as_ref()?;
        let total = metadata.total_tokens?;
        return Some(base(
            total,
            0,
            total,
            metadata.total_price,
            metadata.currency.as_ref(),
            true,
        ));
    }
    None
}

/// A chat-type app's UTC day: token costs (tokens, price) and daily messages (request count),
/// queried for [D 00:00, D+1 00:00) UTC expressed in the account's timezone.
async fn app_day_usage(
    dify: &DifyClient,
    app: &AppInfo,
    day: NaiveDate,
    tz: Tz,
) -> Result<Option<Usage>> {
    let local = |d: NaiveDate| {
        let utc: DateTime<Utc> = Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN));
        utc.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
    };
    let next = day.succ_opt().unwrap_or(day);
    let query = [("start", local(day)), ("end", local(next))];
    let costs_path = format!("/apps/{}/statistics/token-costs", app.id);
    let messages_path = format!("/apps/{}/statistics/daily-messages", app.id);
    let (costs, messages) = tokio::try_join!(
        dify.get::<TokenCosts>(&costs_path, &query),
        dify.get::<DailyMessages>(&messages_path, &query),
    )?;
    let messages: u64 = messages.data.iter().map(|row| row.message_count).sum();
    if costs.data.is_empty() && messages == 0 {
        return Ok(None);
    }
    let tokens: u64 = costs.data.iter().map(|row| row.token_count).sum();
    let cost: Decimal = costs.data.iter().map(|row| row.total_price).sum();
    let currency = costs
        .data
        .iter()
        .find_map(|row| row.currency.clone())
        .unwrap_or_default();
    Ok(Some(Usage {
        day,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        user: String::new(),
        provider: app.model.0.clone(),
        model: app.model.1.clone(),
        currency,
        input_tokens: tokens,
        output_tokens: 0,
        total_tokens: tokens,
        cost,
        requests: messages,
        total_only: true,
    }))
}

fn utc_day(seconds: i64, path: &str) -> Result<NaiveDate> {
    DateTime::from_timestamp(seconds, 0)
        .map(|t| t.date_naive())
        .with_context(|| {
            format!("GET /console/api{path} gave a created_at of {seconds}, which is not a time")
        })
}
