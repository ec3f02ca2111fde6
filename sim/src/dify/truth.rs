//! The exact usage records the exporter must deliver for the generated workspace, computed from the simulator's
//! data rather than from its HTTP answers, so that a test comparing the two catches mistakes on either side.
//! Two sources, two truths: [`compute_api`] follows the console API rules (docs/run.md#aggregation), where account
//! messages and deleted conversations are only visible inside Dify's daily statistics; [`compute_database`]
//! follows docs/database.md#rules, where every message is a row with its own user, model and currency. Workflow
//! runs count the same in both.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::data::{
    App, InvokeFrom, MODELS, Mode, ModelSpec, NodeKind, Workspace, generate_nodes, utc_day,
};

/// Whether input and output tokens are known separately or only their total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSplit {
    Exact,
    TotalOnly,
}

/// One expected record: the totals for (UTC day, app, user, provider, model, currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRecord {
    pub usage_date: NaiveDate,
    pub app_id: String,
    pub app_name: String,
    /// End-user session id, else account email, else "".
    pub user: String,
    /// Normalised: last segment of a path-style name, `unknown` for an empty one.
    pub provider: String,
    pub model: String,
    pub currency: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub request_count: u64,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    pub token_split: TokenSplit,
}

/// `langgenius/openai/openai` -> `openai`, `""` -> `unknown`, anything else unchanged.
#[must_use]
pub fn normalize_provider(provider: &str) -> String {
    match provider.rsplit('/').next() {
        Some(last) if !last.is_empty() => last.to_owned(),
        _ => "unknown".to_owned(),
    }
}

type Key = (NaiveDate, String, String, String, String, String);

#[derive(Default)]
struct Acc {
    app_name: String,
    input: u64,
    output: u64,
    total: u64,
    requests: u64,
    cost: Decimal,
    total_only: bool,
}

/// Records keyed and summed like the exporter's aggregation.
#[derive(Default)]
struct Records(BTreeMap<Key, Acc>);

/// What one usage item adds to its record.
struct Item<'a> {
    day: NaiveDate,
    user: &'a str,
    /// The model: its provider and name.
    spec: &'a ModelSpec,
    currency: &'a str,
    input: u64,
    output: u64,
    total: u64,
    cost: Decimal,
    requests: u64,
    total_only: bool,
}

impl Records {
    fn add(&mut self, app: &App, item: &Item<'_>) {
        let key = (
            item.day,
            app.id.to_string(),
            item.user.to_owned(),
            normalize_provider(item.spec.provider),
            item.spec.name.to_owned(),
            item.currency.to_owned(),
        );
        let a = self.0.entry(key).or_default();
        a.app_name.clone_from(&app.name);
        a.input += item.input;
        a.output += item.output;
        a.total += item.total;
        a.cost += item.cost;
        a.requests += item.requests;
        a.total_only |= item.total_only;
    }

    /// Every node with its own usage of every production run (app-run and triggered; never debug runs or
    /// iteration/loop containers), on the UTC day of the run, for the run's creator.
    fn add_runs(&mut self, ws: &Workspace, app: &App) {
        for run in &app.runs {
            let day = utc_day(run.created_at);
            let user = ws.user_of(run.creator);
            for node in generate_nodes(ws.seed, app.mode, run) {
                let (model, input, output, total, cost, total_only) = match node.kind {
                    NodeKind::Model { model, usage } => (
                        model,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        usage.total_tokens(),
                        usage.total_price(),
                        false,
                    ),
                    NodeKind::Truncated {
                        model,
                        total_tokens,
                        total_price,
                    } => (model, total_tokens, 0, total_tokens, total_price, true),
                    NodeKind::Plain | NodeKind::Container { .. } => continue,
                };
                let spec = &MODELS[model];
                self.add(
                    app,
                    &Item {
                        day,
                        user,
                        spec,
                        currency: spec.currency,
                        input,
                        output,
                        total,
                        cost,
                        requests: 1,
                        total_only,
                    },
                );
            }
        }
    }

    fn into_truth(self) -> Vec<TruthRecord> {
        self.0
            .into_iter()
            .map(
                |((usage_date, app_id, user, provider, model, currency), a)| TruthRecord {
                    usage_date,
                    app_id,
                    app_name: a.app_name,
                    user,
                    provider,
                    model,
                    currency: iso_currency(currency),
                    input_tokens: a.input,
                    output_tokens: a.output,
                    total_tokens: a.total,
                    request_count: a.requests,
                    cost: a.cost,
                    token_split: if a.total_only {
                        TokenSplit::TotalOnly
                    } else {
                        TokenSplit::Exact
                    },
                },
            )
            .collect()
    }
}

/// (tokens, price, messages) summed per UTC day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayTotals {
    pub(crate) tokens: u64,
    pub(crate) price: Decimal,
    pub(crate) messages: u64,
}

impl DayTotals {
    fn add(&mut self, tokens: u64, price: Decimal) {
        self.tokens += tokens;
        self.price += price;
        self.messages += 1;
    }
}

/// What Dify's `token-costs` and `daily-messages` count for a message-based app, per UTC day: every message
/// whose `invoke_from` is not `debugger`, deleted conversations included (statistic.py's SQL).
pub(crate) fn statistics_by_utc_day(app: &App) -> BTreeMap<NaiveDate, DayTotals> {
    let mut days: BTreeMap<NaiveDate, DayTotals> = BTreeMap::new();
    for conversation in app
        .conversations
        .iter()
        .filter(|c| c.invoke_from != InvokeFrom::Debugger)
    {
        let spec = &MODELS[conversation.model];
        for m in app.conversation_messages(conversation) {
            days.entry(utc_day(m.created_at))
                .or_default()
                .add(m.total_tokens(), m.price(spec).unwrap_or_default());
        }
    }
    days
}

/// The console API source's records (docs/run.md#aggregation), sorted by key.
pub(crate) fn compute_api(ws: &Workspace) -> Vec<TruthRecord> {
    let mut records = Records::default();
    for app in &ws.apps {
        match app.mode {
            Mode::Workflow | Mode::AdvancedChat => records.add_runs(ws, app),
            Mode::Chat | Mode::AgentChat => add_chat_api(ws, app, &mut records),
            Mode::Completion => add_remainders(app, &mut records, &BTreeMap::new()),
            // Not collected by the exporter: it only names the app in its log.
            Mode::Agent => {}
        }
    }
    records.into_truth()
}

/// Per UTC day: what the messages counted one by one add up to, and the currencies they were priced in.
type Seen = BTreeMap<NaiveDate, (DayTotals, BTreeSet<&'static str>)>;

/// End-user messages of listed conversations one by one; everything else token-costs counts as a remainder.
/// Each message is labelled with the app's current model: the conversation list names no model (Dify
/// serves `model_config.model` as null there), so the API cannot tell a conversation's own model.
fn add_chat_api(ws: &Workspace, app: &App, records: &mut Records) {
    let Some(label) = app.model.and_then(|m| MODELS.get(m)) else {
        return;
    };
    let mut seen = Seen::new();
    for conversation in app.conversations.iter().filter(|c| {
        !c.is_deleted && matches!(c.invoke_from, InvokeFrom::WebApp | InvokeFrom::ServiceApi)
    }) {
        // Prices and currencies are the conversation's own model's: `metadata.usage` carries them.
        let spec = &MODELS[conversation.model];
        let user = ws.user_of(conversation.sender);
        for m in app.conversation_messages(conversation) {
            let day = utc_day(m.created_at);
            // The API reads price and currency from `metadata.usage`, which a failed message lacks.
            let cost = m.price(spec).unwrap_or_default();
            let currency = m.currency(spec);
            records.add(
                app,
                &Item {
                    day,
                    user,
                    spec: label,
                    currency,
                    input: u64::from(m.message_tokens),
                    output: u64::from(m.answer_tokens),
                    total: m.total_tokens(),
                    cost,
                    requests: 1,
                    total_only: false,
                },
            );
            let entry = seen.entry(day).or_default();
            entry.0.add(m.total_tokens(), cost);
            entry.1.insert(currency);
        }
    }
    add_remainders(app, records, &seen);
}

/// Per UTC day: the statistics minus what was already counted one by one, for user "" with the app's current
/// model, `total_only`, in the one currency the day's counted messages share, else `USD`; omitted when zero.
fn add_remainders(app: &App, records: &mut Records, seen: &Seen) {
    let Some(spec) = app.model.and_then(|m| MODELS.get(m)) else {
        return;
    };
    for (day, stats) in statistics_by_utc_day(app) {
        let (counted, currencies) = seen
            .get(&day)
            .map_or((DayTotals::default(), None), |(t, c)| (*t, Some(c)));
        let tokens = stats.tokens - counted.tokens;
        let cost = stats.price - counted.price;
        let requests = stats.messages - counted.messages;
        if tokens == 0 && cost.is_zero() && requests == 0 {
            continue;
        }
        let currency = match currencies {
            Some(set) if set.len() == 1 => set.first().copied().unwrap_or("USD"),
            _ => "USD",
        };
        records.add(
            app,
            &Item {
                day,
                user: "",
                spec,
                currency,
                input: tokens,
                output: 0,
                total: tokens,
                cost,
                requests,
                total_only: true,
            },
        );
    }
}

/// The database source's records (docs/database.md#rules), sorted by key.
pub(crate) fn compute_database(ws: &Workspace) -> Vec<TruthRecord> {
    let mut records = Records::default();
    for app in &ws.apps {
        if app.mode.has_runs() {
            // Advanced-chat messages repeat their run's nodes: only the runs count.
            records.add_runs(ws, app);
            continue;
        }
        for conversation in app
            .conversations
            .iter()
            .filter(|c| c.invoke_from != InvokeFrom::Debugger)
        {
            let spec = &MODELS[conversation.model];
            let user = ws.user_of(conversation.sender);
            for m in app.conversation_messages(conversation) {
                records.add(
                    app,
                    &Item {
                        day: utc_day(m.created_at),
                        user,
                        spec,
                        currency: m.currency(spec),
                        input: u64::from(m.message_tokens),
                        output: u64::from(m.answer_tokens),
                        total: m.total_tokens(),
                        cost: m.price(spec).unwrap_or_default(),
                        requests: 1,
                        total_only: false,
                    },
                );
            }
        }
    }
    records.into_truth()
}

/// A currency as the exporter sends it: ISO 4217, so Dify's `RMB` is `CNY` (the amount unchanged).
fn iso_currency(currency: String) -> String {
    if currency == "RMB" {
        "CNY".to_owned()
    } else {
        currency
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_provider;

    #[test]
    fn providers_normalise_like_the_exporter() {
        assert_eq!(normalize_provider("langgenius/openai/openai"), "openai");
        assert_eq!(normalize_provider("anthropic"), "anthropic");
        assert_eq!(normalize_provider(""), "unknown");
    }
}
