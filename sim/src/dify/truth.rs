//! The exact usage totals the exporter must deliver for the generated workspace, computed by the exporter's
//! own rules (ARCHITECTURE.md 7.3) from the simulator's data rather than from its HTTP answers, so that a test
//! comparing the two catches mistakes on either side.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::data::{MODELS, NodeKind, Workspace, generate_nodes, utc_day};

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

/// Every record of the workspace, sorted by key.
pub(crate) fn compute(ws: &Workspace) -> Vec<TruthRecord> {
    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();
    for app in &ws.apps {
        let app_id = app.id.to_string();
        // Only production runs: debug runs are served but never count.
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
                let spec = MODELS[model];
                let key = (
                    day,
                    app_id.clone(),
                    user.to_owned(),
                    normalize_provider(spec.provider),
                    spec.name.to_owned(),
                    spec.currency.to_owned(),
                );
                let a = acc.entry(key).or_default();
                a.app_name.clone_from(&app.name);
                a.input += input;
                a.output += output;
                a.total += total;
                a.cost += cost;
                a.requests += 1;
                a.total_only |= total_only;
            }
        }
        // Chat types: token costs give only a daily total and no user; the request count is the message count.
        if let Some(spec) = app.model.and_then(|m| MODELS.get(m)) {
            for message in &app.messages {
                let key = (
                    utc_day(message.created_at),
                    app_id.clone(),
                    String::new(),
                    normalize_provider(spec.provider),
                    spec.name.to_owned(),
                    "USD".to_owned(),
                );
                let a = acc.entry(key).or_default();
                a.app_name.clone_from(&app.name);
                a.input += message.tokens;
                a.total += message.tokens;
                a.cost += message.price.unwrap_or_default();
                a.requests += 1;
                a.total_only = true;
            }
        }
    }
    acc.into_iter()
        .map(
            |((usage_date, app_id, user, provider, model, currency), a)| TruthRecord {
                usage_date,
                app_id,
                app_name: a.app_name,
                user,
                provider,
                model,
                currency,
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
