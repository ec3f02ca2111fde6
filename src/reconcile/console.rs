//! Dify's side from the console API: per app and UTC day, the statistic its mode has, asked through
//! the collector's own queries (the account's time zone, [D 00:00, D+1 00:00) UTC).

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::NaiveDate;
use futures::{StreamExt as _, TryStreamExt as _};
use tracing::warn;

use super::{DifyApp, Figures, Statistic};
use crate::source::AppMode;
use crate::source::console::ConsoleSource;

/// Every collected app's statistics for the days `from..=to`, up to `concurrency` requests at once.
pub(crate) async fn dify_figures(
    source: &ConsoleSource,
    from: NaiveDate,
    to: NaiveDate,
    concurrency: usize,
) -> Result<Vec<DifyApp>> {
    let tz = source.timezone().await?;
    let mut apps = Vec::new();
    for app in source.apps().await? {
        let mode = app.mode();
        let statistic = match mode {
            AppMode::Chat | AppMode::AgentChat | AppMode::Completion => Statistic::TokenCosts,
            AppMode::Workflow | AppMode::AdvancedChat => Statistic::WorkflowTokenCosts,
            AppMode::Other => {
                // The collector does not read it either, so the ledger holds nothing of it.
                warn!(app_id = %app.id, app_name = %app.name, mode = %app.mode_name,
                    "app not reconciled: this version does not know its mode");
                continue;
            }
        };
        apps.push(DifyApp {
            id: app.id,
            name: app.name,
            mode,
            statistic,
            days: BTreeMap::new(),
        });
    }
    let days: Vec<NaiveDate> = from.iter_days().take_while(|day| *day <= to).collect();
    let asks = apps
        .iter()
        .enumerate()
        .flat_map(|(index, app)| days.iter().map(move |&day| (index, app, day)));
    let answers: Vec<(usize, NaiveDate, Figures)> = futures::stream::iter(asks)
        .map(|(index, app, day)| async move {
            let figures = match app.statistic {
                Statistic::TokenCosts => {
                    let (tokens, price) = source.token_costs(&app.id, day, tz).await?;
                    Figures {
                        tokens,
                        cost: Some(price),
                    }
                }
                Statistic::WorkflowTokenCosts => Figures {
                    tokens: source.workflow_token_costs(&app.id, day, tz).await?,
                    cost: None,
                },
            };
            anyhow::Ok((index, day, figures))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (index, day, figures) in answers {
        apps[index].days.insert(day, figures);
    }
    Ok(apps)
}
