//! Dify's side from its database: the sums of its console statistics, computed in SQL per UTC day
//! (`crate::source::database::statistics`), for a configuration with the database source.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::NaiveDate;

use super::{DifyApp, Figures, Statistic};
use crate::run::window::Window;
use crate::source::database::{DatabaseSource, statistics};

/// Every collected app's statistics for the days `from..=to`.
pub(crate) async fn dify_figures(
    source: &DatabaseSource,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DifyApp>> {
    let read = statistics::read(
        source,
        Window {
            first: from,
            last: to,
        },
    )
    .await?;
    let mut apps: BTreeMap<String, DifyApp> = read
        .apps
        .into_iter()
        .map(|app| {
            let statistic = if app.by_runs {
                Statistic::WorkflowTokenCosts
            } else {
                Statistic::TokenCosts
            };
            let dify = DifyApp {
                id: app.id.clone(),
                name: app.name,
                mode: app.mode,
                statistic,
                days: BTreeMap::new(),
            };
            (app.id, dify)
        })
        .collect();
    for day in read.days {
        if let Some(app) = apps.get_mut(&day.app_id) {
            app.days.insert(
                day.day,
                Figures {
                    tokens: day.tokens,
                    cost: day.price,
                },
            );
        }
    }
    Ok(apps.into_values().collect())
}
