//! The statistics endpoints, per app and UTC day: `token-costs` (tokens and price) and
//! `daily-messages` (messages), each queried for [D 00:00, D+1 00:00) UTC in the account's timezone.
//!
//! A `completion` app has nothing better: one record per day, user `""`, the app's model, total only,
//! in `USD`, the literal real Dify writes whatever the prices' currencies (a limit of the API source;
//! the database source knows better).
//!
//! For `chat` and `agent-chat` apps the statistics hold every message, also those the conversations
//! cannot attribute: explore and debugger messages (the console does not tell them apart) and
//! messages of deleted conversations. What remains after the end users' messages of the app-day is one
//! record for user `""` in the currency all of those messages share (else `USD`), so an app-day's
//! records sum to Dify's own figures. It needs every end-user message of the app-day first, so the
//! sums are kept per app-day (small) and the remainders made once all conversations are read. A
//! negative remainder (Dify's figures disagree with its messages) is logged and left out.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use tracing::warn;

use super::{AppInfo, Queue, Work, local_minute};
use crate::run::window::Window;
use crate::source::AppMode;
use crate::source::console::DifyClient;
use crate::source::console::model::{DailyMessages, TokenCosts};
use crate::usage::Usage;

/// What the statistics can say about currency: nothing else.
const STATISTICS_CURRENCY: &str = "USD";

/// A chat-type app's UTC day: read its statistics.
pub(super) struct AppDayWork {
    app: Arc<AppInfo>,
    day: NaiveDate,
    tz: Tz,
}

/// Dify's own figures for one app-day.
pub(super) struct AppDayStatistics {
    app: Arc<AppInfo>,
    day: NaiveDate,
    tokens: u64,
    price: Decimal,
    messages: u64,
}

/// Queues one unit per day of the window; returns how many (fewer if the consumer stopped).
pub(super) async fn queue_app_days(
    app: &Arc<AppInfo>,
    window: Window,
    tz: Tz,
    queue: Queue<'_>,
) -> u64 {
    let mut queued = 0;
    for day in window.days() {
        let work = AppDayWork {
            app: app.clone(),
            day,
            tz,
        };
        if !queue.push(Work::AppDay(work)).await {
            break;
        }
        queued += 1;
    }
    queued
}

pub(super) async fn read_app_day(dify: &DifyClient, work: AppDayWork) -> Result<AppDayStatistics> {
    let AppDayWork { app, day, tz } = work;
    let messages_path = format!("/apps/{}/statistics/daily-messages", app.id);
    let query = utc_day_query(day, tz);
    let ((tokens, price), messages) = tokio::try_join!(
        token_costs(dify, &app.id, day, tz),
        dify.get::<DailyMessages>(&messages_path, &query),
    )?;
    Ok(AppDayStatistics {
        app,
        day,
        tokens,
        price,
        messages: messages.data.iter().map(|row| row.message_count).sum(),
    })
}

/// Dify's `statistics/token-costs` of one app over the UTC day `day`: (tokens, price). Its rows are
/// account-timezone days; the query covers exactly the UTC day, so their sum is the UTC day's.
pub(crate) async fn token_costs(
    dify: &DifyClient,
    app_id: &str,
    day: NaiveDate,
    tz: Tz,
) -> Result<(u64, Decimal)> {
    let path = format!("/apps/{app_id}/statistics/token-costs");
    let costs: TokenCosts = dify.get(&path, &utc_day_query(day, tz)).await?;
    Ok((
        costs.data.iter().map(|row| row.token_count).sum(),
        costs.data.iter().map(|row| row.total_price).sum(),
    ))
}

/// Dify's `workflow/statistics/token-costs` of one app over the UTC day `day`: the tokens of its
/// `app-run` runs (`workflow_runs.total_tokens`); Dify gives no price there.
pub(crate) async fn workflow_token_costs(
    dify: &DifyClient,
    app_id: &str,
    day: NaiveDate,
    tz: Tz,
) -> Result<u64> {
    let path = format!("/apps/{app_id}/workflow/statistics/token-costs");
    // Its rows have no `total_price`, which `TokenCosts` defaults to zero.
    let costs: TokenCosts = dify.get(&path, &utc_day_query(day, tz)).await?;
    Ok(costs.data.iter().map(|row| row.token_count).sum())
}

/// `start`/`end` covering [D 00:00, D+1 00:00) UTC, as the account-timezone minutes Dify takes.
fn utc_day_query(day: NaiveDate, tz: Tz) -> [(&'static str, String); 2] {
    let next = day.succ_opt().unwrap_or(day);
    [
        ("start", local_minute(day, tz)),
        ("end", local_minute(next, tz)),
    ]
}

/// The end users' messages of one app-day, as counted from its conversations.
#[derive(Default)]
struct EndUserSums {
    tokens: u64,
    price: Decimal,
    messages: u64,
    currency: SharedCurrency,
}

/// The currency all of an app-day's end-user messages share, if they share one.
#[derive(Default)]
enum SharedCurrency {
    #[default]
    None,
    One(String),
    Mixed,
}

/// The statistics of every chat-type app-day, and the end-user sums they are reduced by.
#[derive(Default)]
pub(super) struct Remainders {
    end_users: HashMap<(Arc<str>, NaiveDate), EndUserSums>,
    days: Vec<AppDayStatistics>,
}

impl Remainders {
    /// Counts a (summed) end-user usage of a chat app.
    pub(super) fn add_end_user(&mut self, usage: &Usage) {
        let sums = self
            .end_users
            .entry((usage.app_id.clone(), usage.day))
            .or_default();
        sums.tokens += usage.total_tokens;
        sums.price += usage.cost;
        sums.messages += usage.requests;
        sums.currency = match std::mem::take(&mut sums.currency) {
            SharedCurrency::None => SharedCurrency::One(usage.currency.clone()),
            SharedCurrency::One(c) if c == usage.currency => SharedCurrency::One(c),
            SharedCurrency::One(_) | SharedCurrency::Mixed => SharedCurrency::Mixed,
        };
    }

    pub(super) fn add_statistics(&mut self, day: AppDayStatistics) {
        self.days.push(day);
    }

    /// The completion records and the chat remainders, once every conversation has been read.
    pub(super) fn into_usages(mut self) -> Vec<Usage> {
        let days = std::mem::take(&mut self.days);
        days.into_iter()
            .filter_map(|day| {
                if day.app.mode == AppMode::Completion {
                    return day.usage(day.tokens, day.price, day.messages, STATISTICS_CURRENCY);
                }
                let sums = self
                    .end_users
                    .remove(&(day.app.id.clone(), day.day))
                    .unwrap_or_default();
                day.remainder(&sums)
            })
            .collect()
    }
}

impl AppDayStatistics {
    /// What the statistics hold beyond the end users' messages; None when nothing or negative.
    fn remainder(&self, sums: &EndUserSums) -> Option<Usage> {
        let tokens = self.tokens.checked_sub(sums.tokens);
        let messages = self.messages.checked_sub(sums.messages);
        let price = self.price - sums.price;
        let (Some(tokens), Some(messages), false) = (
            tokens,
            messages,
            price.is_sign_negative() && !price.is_zero(),
        ) else {
            warn!(
                app_id = %self.app.id,
                app_name = %self.app.name,
                day = %self.day,
                statistics_tokens = self.tokens,
                end_user_tokens = sums.tokens,
                statistics_price = %self.price,
                end_user_price = %sums.price,
                statistics_messages = self.messages,
                end_user_messages = sums.messages,
                "the app-day's end-user messages exceed Dify's own statistics; no remainder record for it"
            );
            return None;
        };
        let currency = match &sums.currency {
            SharedCurrency::One(currency) => currency.as_str(),
            SharedCurrency::None | SharedCurrency::Mixed => STATISTICS_CURRENCY,
        };
        self.usage(tokens, price, messages, currency)
    }

    /// A total-only record for user `""` with the app's model; None when it would be all zeros.
    fn usage(&self, tokens: u64, price: Decimal, messages: u64, currency: &str) -> Option<Usage> {
        if tokens == 0 && price.is_zero() && messages == 0 {
            return None;
        }
        Some(Usage {
            day: self.day,
            app_id: self.app.id.clone(),
            app_name: self.app.name.clone(),
            user: String::new(),
            provider: self.app.model.0.clone(),
            model: self.app.model.1.clone(),
            currency: currency.to_owned(),
            input_tokens: tokens,
            output_tokens: 0,
            total_tokens: tokens,
            cost: price,
            requests: messages,
            total_only: true,
        })
    }
}
