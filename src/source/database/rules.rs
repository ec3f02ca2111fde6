//! The rules of `docs/database.md#rules`, independent of the SQL dialect: which apps are read how, and how one row
//! of a dialect's answer becomes a usage observation. A second dialect (MySQL) produces the same
//! row types and reuses all of this.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use chrono::NaiveDate;
use rust_decimal::Decimal;

use uuid::Uuid;

use crate::source::AppMode;
use crate::source::console::model::{ExecutionMetadata, ProcessData};
use crate::usage::{Usage, sum};

/// How an app's usage is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// `workflow`, `advanced-chat`: the node executions of production runs.
    Runs,
    /// `chat`, `agent-chat`, `completion`, `agent`: message by message.
    Messages,
}

/// One row of `apps`.
#[derive(Debug)]
pub(super) struct AppRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    pub(crate) name: String,
    pub(crate) mode: String,
}

impl AppRow {
    /// How this app is read, or `None` for a mode the exporter does not know (logged by the caller).
    pub(super) fn reading(&self) -> Option<Reading> {
        match self.mode.as_str() {
            "workflow" | "advanced-chat" => Some(Reading::Runs),
            "chat" | "agent-chat" | "completion" | "agent" => Some(Reading::Messages),
            _ => None,
        }
    }

    /// The mode as the run summary counts it (`agent` and newer modes are `other` there).
    pub(super) fn app_mode(&self) -> AppMode {
        AppMode::from_name(&self.mode)
    }
}

/// What the records need to know about an app.
#[derive(Debug)]
pub(super) struct AppInfo {
    pub(crate) id: Arc<str>,
    pub(crate) name: Arc<str>,
}

/// Apps by id, for attributing rows.
pub(super) type Apps = HashMap<Uuid, AppInfo>;

/// The messages of one (app, UTC day, user, provider, model, currency), summed by the database.
#[derive(Debug)]
pub(super) struct MessageGroup {
    pub(crate) app_id: Uuid,
    pub(crate) day: NaiveDate,
    pub(crate) user: String,
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) currency: String,
    pub(crate) message_tokens: u64,
    pub(crate) answer_tokens: u64,
    pub(crate) total_price: Decimal,
    pub(crate) messages: u64,
}

/// The first row of a message group (if any) that breaks a rule the console source applies to
/// the same values: a count or price below zero, a currency that is not three letters. Summed in, it
/// would hide in a total (or make the receiver refuse the whole day), so the run stops before
/// anything is queued, naming table, column and row.
#[derive(Debug)]
pub(super) struct MessageFlaws {
    pub(crate) negative_message_tokens: Option<Uuid>,
    pub(crate) negative_answer_tokens: Option<Uuid>,
    pub(crate) negative_total_price: Option<Uuid>,
    pub(crate) malformed_currency: Option<Uuid>,
}

impl MessageFlaws {
    /// `currency` is the group's currency, as Dify stored it.
    pub(super) fn check(&self, currency: &str) -> Result<()> {
        for (row, column) in [
            (self.negative_message_tokens, "message_tokens"),
            (self.negative_answer_tokens, "answer_tokens"),
            (self.negative_total_price, "total_price"),
        ] {
            if let Some(row) = row {
                bail!(
                    "messages row {row}: {column} is negative, which no usage can be; correct the row in Dify's \
                     database (the console API source refuses it too)"
                );
            }
        }
        if let Some(row) = self.malformed_currency {
            bail!(
                "messages row {row}: currency `{}` is not a currency of three ASCII letters such as \"USD\"; \
                 correct the row in Dify's database (the console API source refuses it too)",
                currency.escape_debug()
            );
        }
        Ok(())
    }
}

/// One counted node execution, with its run's day and creator.
#[derive(Debug)]
pub(super) struct NodeRow<'a> {
    pub(crate) app_id: Uuid,
    pub(crate) node_id: Uuid,
    pub(crate) day: NaiveDate,
    pub(crate) user: &'a str,
    pub(crate) process_data: Option<&'a str>,
    pub(crate) execution_metadata: Option<&'a str>,
}

fn app(apps: &Apps, id: Uuid) -> Result<&AppInfo> {
    apps.get(&id)
        .with_context(|| format!("a row names app {id}, which the apps query did not return"))
}

/// A message group as one observation: exact split, the message's own model and currency.
pub(super) fn message_usage(apps: &Apps, group: MessageGroup) -> Result<Usage> {
    let app = app(apps, group.app_id)?;
    Ok(Usage {
        day: group.day,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        user: group.user,
        provider: group.provider,
        model: group.model,
        currency: group.currency,
        input_tokens: group.message_tokens,
        output_tokens: group.answer_tokens,
        total_tokens: sum(group.message_tokens, group.answer_tokens, "total tokens")
            .map_err(|field| anyhow::anyhow!("messages of app {}: the {field} overflow", app.id))?,
        cost: group.total_price,
        requests: group.messages,
        total_only: false,
    })
}

/// A node's usage, as the API source counts it: `process_data.usage` (exact), else the totals of
/// `execution_metadata` (total only); `None` for a node without either (a code or tool node).
pub(super) fn node_usage(apps: &Apps, row: &NodeRow<'_>) -> Result<Option<Usage>> {
    let parse_error = |column: &str| {
        format!(
            "workflow_node_executions row {} has a {column} that is not the JSON Dify writes",
            row.node_id
        )
    };
    // A JSON `null` (Dify writes it for nodes that ran nothing) holds no usage, as no text does.
    let process: ProcessData = match row.process_data {
        Some(text) if !text.trim().is_empty() => serde_json::from_str::<Option<ProcessData>>(text)
            .with_context(|| parse_error("process_data"))?
            .unwrap_or_default(),
        _ => ProcessData::default(),
    };
    let (input, output, cost, currency, total_only) = if let Some(usage) = process.usage {
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_price,
            usage.currency,
            false,
        )
    } else {
        let Some(text) = row.execution_metadata.filter(|t| !t.trim().is_empty()) else {
            return Ok(None);
        };
        let metadata: Option<ExecutionMetadata> =
            serde_json::from_str(text).with_context(|| parse_error("execution_metadata"))?;
        let Some(metadata) = metadata else {
            return Ok(None);
        };
        let Some(total) = metadata.total_tokens else {
            return Ok(None);
        };
        (total, 0, metadata.total_price, metadata.currency, true)
    };
    let app = app(apps, row.app_id)?;
    Ok(Some(Usage {
        day: row.day,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        user: row.user.to_owned(),
        provider: process.model_provider.unwrap_or_default(),
        model: process.model_name.unwrap_or_default(),
        currency: currency.unwrap_or_default(),
        input_tokens: input,
        output_tokens: output,
        total_tokens: sum(input, output, "total tokens").map_err(|field| {
            anyhow::anyhow!(
                "workflow_node_executions row {}: the {field} overflow",
                row.node_id
            )
        })?,
        cost,
        requests: 1,
        total_only,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: Uuid = Uuid::from_u128(0xa1);

    fn apps() -> Apps {
        HashMap::from([(
            APP,
            AppInfo {
                id: "a1".into(),
                name: "Flow".into(),
            },
        )])
    }

    fn row<'a>(process: Option<&'a str>, metadata: Option<&'a str>) -> NodeRow<'a> {
        NodeRow {
            app_id: APP,
            node_id: Uuid::from_u128(0x1),
            day: "2026-11-27".parse().unwrap(),
            user: "u",
            process_data: process,
            execution_metadata: metadata,
        }
    }

    #[test]
    fn usage_in_process_data_is_exact() {
        let usage = node_usage(
            &apps(),
            &row(
                Some(r#"{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","prompts":[{"text":"hi"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"total_price":"0.0004500","currency":"USD"}}"#),
                Some(r#"{"total_tokens":120,"total_price":"0.00045","currency":"USD"}"#),
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (100, 20, 120)
        );
        assert_eq!(usage.cost.to_string(), "0.0004500");
        assert_eq!(usage.model, "gpt-4o");
        assert!(!usage.total_only);
    }

    #[test]
    fn without_usage_the_metadata_totals_count_as_total_only() {
        let usage = node_usage(
            &apps(),
            &row(
                Some(r#"{"model_provider":"anthropic","model_name":"claude"}"#),
                Some(r#"{"total_tokens":"77","total_price":"0E-7","currency":"RMB"}"#),
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.currency.as_str()
            ),
            (77, 0, "RMB")
        );
        assert!(usage.total_only);
    }

    #[test]
    fn nodes_without_usage_and_broken_json_are_told_apart() {
        assert!(
            node_usage(&apps(), &row(Some("{}"), None))
                .unwrap()
                .is_none()
        );
        assert!(
            node_usage(&apps(), &row(Some("{}"), Some("{}")))
                .unwrap()
                .is_none()
        );
        assert!(
            node_usage(&apps(), &row(Some("null"), Some("null")))
                .unwrap()
                .is_none(),
            "a JSON null holds no usage"
        );
        let err = node_usage(&apps(), &row(Some("{\"usage\":"), None)).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("row 00000000-0000-0000-0000-000000000001 has a process_data"),
            "{err:#}"
        );
    }
}
