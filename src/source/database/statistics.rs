//! Dify's own statistics, summed in SQL from its tables, for `exporter reconcile` with the database
//! source (`docs/reconcile.md`). The sums are the ones Dify's console statistics run
//! (`api/controllers/console/app/statistic.py`, `workflow_statistic.py`), but per UTC day rather
//! than per account-time-zone day, so they can be put beside the ledger's days directly:
//!
//! - messages (apps read by their messages): `SUM(message_tokens) + SUM(answer_tokens)` and
//!   `SUM(total_price)` where `invoke_from != 'debugger'`;
//! - workflow runs (`workflow`, `advanced-chat` apps): `SUM(total_tokens)` of the `app-run` runs;
//!   Dify keeps no price there.
//!
//! Read in one read-only snapshot, as a collection chunk is; on MySQL the same sums in its SQL
//! (`mysql::statistics`), messages' local times converted to UTC as the collection converts them.

use anyhow::{Context as _, Result, anyhow};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rules::{AppRow, Reading};
use super::settings::{DatabaseSource, Dialect};
use super::{AttemptError, mysql, postgres};
use crate::run::window::Window;
use crate::source::AppMode;

const MESSAGE_SUMS: &str = "SELECT app_id, created_at::date, \
       (SUM(message_tokens) + SUM(answer_tokens))::bigint, COALESCE(SUM(total_price), 0)::text \
     FROM messages \
     WHERE app_id = ANY($1) AND created_at >= $2 AND created_at < $3 AND invoke_from != 'debugger' \
     GROUP BY 1, 2";

const RUN_SUMS: &str = "SELECT app_id, created_at::date, COALESCE(SUM(total_tokens), 0)::bigint, NULL::text \
     FROM workflow_runs \
     WHERE app_id = ANY($1) AND created_at >= $2 AND created_at < $3 AND triggered_from = 'app-run' \
     GROUP BY 1, 2";

/// One app as the statistics see it.
#[derive(Debug)]
pub(crate) struct StatisticApp {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mode: AppMode,
    /// `true`: summed from its workflow runs (tokens only); `false`: from its messages.
    pub(crate) by_runs: bool,
}

/// One app-day's sums.
#[derive(Debug)]
pub(crate) struct StatisticDay {
    pub(crate) app_id: String,
    pub(crate) day: NaiveDate,
    pub(crate) tokens: u64,
    /// `None` for a workflow statistic, which has no price.
    pub(crate) price: Option<Decimal>,
}

/// Every collected app of the workspace(s), and the app-days with rows in the window.
#[derive(Debug, Default)]
pub(crate) struct Statistics {
    pub(crate) apps: Vec<StatisticApp>,
    pub(crate) days: Vec<StatisticDay>,
}

/// Dify's statistics of `window` from its database; apps of a mode the collector does not read
/// are left out, as the collector leaves them out.
pub(crate) async fn read(source: &DatabaseSource, window: Window) -> Result<Statistics> {
    let outcome = if source.dialect == Dialect::Mysql {
        mysql::statistics(source, window).await
    } else {
        read_postgres(source, window).await
    };
    outcome
        .map_err(|(AttemptError::Transient(e) | AttemptError::Fatal(e))| e)
        .with_context(|| format!("Dify database {} (DIFY_DATABASE_URL)", source.address()))
}

async fn read_postgres(
    source: &DatabaseSource,
    window: Window,
) -> Result<Statistics, AttemptError> {
    async {
        let (mut client, connection) = postgres::connect(source).await?;
        let read = in_snapshot(&mut client, source, window);
        tokio::pin!(read);
        tokio::select! {
            biased;
            outcome = &mut read => outcome,
            ended = connection => Err(postgres::connection_ended(ended)),
        }
    }
    .await
}

async fn in_snapshot(
    client: &mut tokio_postgres::Client,
    source: &DatabaseSource,
    window: Window,
) -> Result<Statistics, AttemptError> {
    let transaction = postgres::snapshot(client).await?;
    postgres::check_schema(&transaction, &source.user).await?;
    let rows = postgres::apps(&transaction, source.workspace_id).await?;
    let (mut statistics, by_runs, by_messages) = Statistics::of_apps(rows);
    let span = postgres::Span::of(window);
    for (query, ids) in [(MESSAGE_SUMS, &by_messages), (RUN_SUMS, &by_runs)] {
        let params: [&(dyn ToSql + Sync); 3] = [ids, &span.start, &span.end];
        let rows = transaction
            .query(query, &params)
            .await
            .map_err(|e| AttemptError::from_postgres(&e, "cannot sum Dify's statistics"))?;
        for row in &rows {
            statistics
                .days
                .push(statistic_day(row).map_err(AttemptError::Fatal)?);
        }
    }
    transaction
        .rollback()
        .await
        .map_err(|e| AttemptError::Transient(anyhow::Error::new(e)))?;
    Ok(statistics)
}

fn statistic_day(row: &Row) -> Result<StatisticDay> {
    StatisticDay::new(row.get(0), row.get(1), row.get(2), row.get(3))
}

impl StatisticDay {
    /// One app-day's sums as the server returned them: `tokens` a whole number, `price` decimal text.
    pub(super) fn new(
        app_id: Uuid,
        day: NaiveDate,
        tokens: i64,
        price: Option<&str>,
    ) -> Result<StatisticDay> {
        let price = price
            .map(|text| {
                text.parse::<Decimal>().with_context(|| {
                    format!("the prices of app {app_id} sum to `{text}`, not a decimal")
                })
            })
            .transpose()?;
        Ok(StatisticDay {
            app_id: app_id.to_string(),
            day,
            tokens: u64::try_from(tokens)
                .map_err(|_| anyhow!("the tokens of app {app_id} sum to {tokens}, below zero"))?,
            price,
        })
    }
}

impl Statistics {
    /// The statistics' apps (those the collector reads), with the ids summed by runs and by messages.
    pub(super) fn of_apps(rows: Vec<AppRow>) -> (Statistics, Vec<Uuid>, Vec<Uuid>) {
        let mut statistics = Statistics::default();
        let (mut by_runs, mut by_messages) = (Vec::new(), Vec::new());
        for app in rows {
            let runs = match app.reading() {
                Some(Reading::Runs) => true,
                Some(Reading::Messages) => false,
                None => continue,
            };
            if runs { &mut by_runs } else { &mut by_messages }.push(app.id);
            statistics.apps.push(StatisticApp {
                id: app.id.to_string(),
                mode: app.app_mode(),
                name: app.name,
                by_runs: runs,
            });
        }
        (statistics, by_runs, by_messages)
    }
}
