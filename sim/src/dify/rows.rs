//! The simulated world as rows of Dify's own tables (`tests/data/dify-schema.sql` in the exporter), so that the
//! exporter's database source reads the same world the console API serves, and `truth_database` says what it
//! must find there.
//!
//! The output is a psql script of `COPY … FROM STDIN` blocks (text format), streamed table by table; node
//! executions are regenerated run by run as they are written, so a world of a million nodes never sits in
//! memory. Every value comes from the same functions that shape the API answers (`routes::node_json` for
//! `process_data` and `execution_metadata`, `chat::run_message` for an advanced-chat message's usage), so the
//! two sources cannot drift apart.
//!
//! Besides the world itself, rows that Dify has and that must never count are added: single-step runs of
//! model nodes (`triggered_from = 'single-step'`, no run), and RAG pipeline runs (`rag-pipeline-run`,
//! `rag-pipeline-debugging`) with model nodes, one of each per debug run of a workflow app. Debug runs,
//! debugger conversations, deleted conversations and advanced-chat messages are part of the world already.

use std::io::{self, Write};

use chrono::DateTime;
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use super::archive::archive_log_id;
use super::chat::{run_message, sender_ids};
use super::data::{
    App, Creator, MODELS, Mode, Node, NodeKind, Run, Workspace, generate_nodes, run_totals,
};
use super::routes::{app_log_id, node_json, role};

/// Distinct id spaces derived from a real id, for the rows the world does not have itself.
const SINGLE_STEP: u128 = 0x5_1E55;
const RAG_RUN: u128 = 0x4A6_0001;
const RAG_DEBUG: u128 = 0x4A6_0002;
const WORKFLOW: u128 = 0xF10;
const DELETED_USER: u128 = 0xDE1_E7ED;

/// Writes every row of `ws` as a psql script.
pub(crate) fn write(ws: &Workspace, out: &mut dyn Write) -> io::Result<()> {
    let tenant = ws.id.to_string();
    let mut copy = Copy::new(out);

    copy.begin("tenants", &["id", "name"])?;
    copy.row(&[Some(&tenant), Some(&format!("Sim workspace {}", ws.seed))])?;
    copy.end()?;

    copy.begin("accounts", &["id", "name", "email"])?;
    for a in &ws.accounts {
        copy.row(&[Some(&a.id.to_string()), Some(&a.name), Some(&a.email)])?;
    }
    copy.end()?;

    copy.begin(
        "end_users",
        &["id", "tenant_id", "type", "is_anonymous", "session_id"],
    )?;
    for u in &ws.end_users {
        let anonymous = if u.kind == "browser" { "t" } else { "f" };
        copy.row(&[
            Some(&u.id.to_string()),
            Some(&tenant),
            Some(u.kind),
            Some(anonymous),
            Some(&u.session_id),
        ])?;
    }
    copy.end()?;

    copy.begin(
        "apps",
        &[
            "id",
            "tenant_id",
            "name",
            "mode",
            "created_at",
            "updated_at",
        ],
    )?;
    for app in &ws.apps {
        let created = timestamp(app.created_at);
        copy.row(&[
            Some(&app.id.to_string()),
            Some(&tenant),
            Some(&app.name),
            Some(app.mode.as_str()),
            Some(&created),
            Some(&created),
        ])?;
    }
    copy.end()?;

    write_conversations(ws, &mut copy)?;
    write_messages(ws, &mut copy)?;
    write_runs(ws, &mut copy)?;
    write_nodes(ws, &mut copy)?;
    write_archive_logs(ws, &mut copy)?;
    copy.out.flush()
}

fn write_conversations(ws: &Workspace, copy: &mut Copy<'_>) -> io::Result<()> {
    copy.begin(
        "conversations",
        &[
            "id",
            "app_id",
            "model_provider",
            "model_id",
            "mode",
            "name",
            "from_source",
            "from_end_user_id",
            "from_account_id",
            "invoke_from",
            "is_deleted",
            "created_at",
            "updated_at",
        ],
    )?;
    for app in &ws.apps {
        for (n, c) in app.conversations.iter().enumerate() {
            let messages = app.conversation_messages(c);
            let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
                continue;
            };
            let (end_user, account) = senders(ws, c.sender);
            let spec = &MODELS[c.model];
            let (provider, model) = if app.mode == Mode::AdvancedChat {
                (None, None)
            } else {
                (Some(spec.provider), Some(spec.name))
            };
            copy.row(&[
                Some(&c.id.to_string()),
                Some(&app.id.to_string()),
                provider,
                model,
                Some(app.mode.as_str()),
                Some(&format!("Conversation {}", n + 1)),
                Some(c.invoke_from.source()),
                end_user.as_deref(),
                account.as_deref(),
                Some(c.invoke_from.as_str()),
                Some(if c.is_deleted { "t" } else { "f" }),
                Some(&timestamp(first.created_at)),
                Some(&timestamp(last.created_at)),
            ])?;
        }
    }
    copy.end()
}

fn write_messages(ws: &Workspace, copy: &mut Copy<'_>) -> io::Result<()> {
    copy.begin(
        "messages",
        &[
            "id",
            "app_id",
            "conversation_id",
            "model_provider",
            "model_id",
            "query",
            "message",
            "message_tokens",
            "message_unit_price",
            "answer",
            "answer_tokens",
            "answer_unit_price",
            "total_price",
            "currency",
            "from_source",
            "from_end_user_id",
            "from_account_id",
            "workflow_run_id",
            "status",
            "invoke_from",
            "created_at",
            "updated_at",
        ],
    )?;
    for app in &ws.apps {
        for c in &app.conversations {
            let (end_user, account) = senders(ws, c.sender);
            let spec = &MODELS[c.model];
            for (n, m) in app.conversation_messages(c).iter().enumerate() {
                // An advanced-chat message carries its run's summed usage, as Dify saves it.
                let (tokens, price, currency, run, provider, model) =
                    if app.mode == Mode::AdvancedChat {
                        let (tokens, usage, run) = run_message(ws, app, c);
                        let usage = usage.unwrap_or(Value::Null);
                        let price = usage["total_price"].as_str().map(str::to_owned);
                        let currency = usage["currency"].as_str().unwrap_or("USD").to_owned();
                        (
                            tokens,
                            price,
                            currency,
                            run.as_str().map(str::to_owned),
                            None,
                            None,
                        )
                    } else {
                        (
                            (u64::from(m.message_tokens), u64::from(m.answer_tokens)),
                            m.price(spec).map(|p| p.to_string()),
                            m.currency(spec).to_owned(),
                            None,
                            Some(spec.provider),
                            Some(spec.name),
                        )
                    };
                let created = timestamp(m.created_at);
                copy.row(&[
                    Some(&m.id.to_string()),
                    Some(&app.id.to_string()),
                    Some(&c.id.to_string()),
                    provider,
                    model,
                    Some(&format!("Question {}", n + 1)),
                    Some("[]"),
                    Some(&tokens.0.to_string()),
                    Some(&spec.prompt_unit_price().round_dp(4).to_string()),
                    Some(if m.answered { "Answer" } else { "" }),
                    Some(&tokens.1.to_string()),
                    Some(&spec.completion_unit_price().round_dp(4).to_string()),
                    price.as_deref(),
                    Some(&currency),
                    Some(c.invoke_from.source()),
                    end_user.as_deref(),
                    account.as_deref(),
                    run.as_deref(),
                    Some(if m.answered { "normal" } else { "error" }),
                    Some(c.invoke_from.as_str()),
                    Some(&created),
                    Some(&created),
                ])?;
            }
        }
    }
    copy.end()
}

/// Every run of a workflow-type app: production and debug runs of the world, plus the RAG pipeline runs.
fn all_runs(app: &App) -> impl Iterator<Item = (Run, &'static str)> + '_ {
    let world = app
        .runs
        .iter()
        .chain(&app.debug_runs)
        .map(|r| (r.clone(), r.triggered_from.as_str()));
    let rag = app
        .debug_runs
        .iter()
        .filter(move |_| app.mode == Mode::Workflow)
        .flat_map(|r| {
            [
                (derived(r, RAG_RUN), "rag-pipeline-run"),
                (derived(r, RAG_DEBUG), "rag-pipeline-debugging"),
            ]
        });
    world.chain(rag)
}

/// A copy of `run` under a new id; its nodes stay those of `run` (see [`nodes_of`]).
fn derived(run: &Run, space: u128) -> Run {
    let mut copy = run.clone();
    copy.id = Uuid::from_u128(run.id.as_u128() ^ space);
    copy
}

fn write_runs(ws: &Workspace, copy: &mut Copy<'_>) -> io::Result<()> {
    copy.begin(
        "workflow_runs",
        &[
            "id",
            "tenant_id",
            "app_id",
            "workflow_id",
            "type",
            "triggered_from",
            "version",
            "status",
            "total_tokens",
            "created_by_role",
            "created_by",
            "created_at",
            "finished_at",
        ],
    )?;
    let tenant = ws.id.to_string();
    for app in ws.apps.iter().filter(|a| a.mode.has_runs()) {
        for (run, triggered_from) in all_runs(app) {
            let (total_tokens, _) = run_totals(&nodes_of(ws, app, &run));
            copy.row(&[
                Some(&run.id.to_string()),
                Some(&tenant),
                Some(&app.id.to_string()),
                Some(&workflow_id(app)),
                Some(if app.mode == Mode::Workflow {
                    "workflow"
                } else {
                    "chat"
                }),
                Some(triggered_from),
                Some("2026-11-01 00:00:00.000000"),
                Some(run.status.as_str()),
                Some(&total_tokens.to_string()),
                Some(role(run.creator)),
                Some(&creator_id(ws, &run)),
                Some(&timestamp(run.created_at)),
                Some(&timestamp(run.created_at + 5)),
            ])?;
        }
    }
    copy.end()
}

fn write_nodes(ws: &Workspace, copy: &mut Copy<'_>) -> io::Result<()> {
    copy.begin(
        "workflow_node_executions",
        &[
            "id",
            "tenant_id",
            "app_id",
            "workflow_id",
            "triggered_from",
            "workflow_run_id",
            "index",
            "node_id",
            "node_type",
            "title",
            "inputs",
            "process_data",
            "outputs",
            "status",
            "elapsed_time",
            "execution_metadata",
            "created_at",
            "created_by_role",
            "created_by",
            "finished_at",
        ],
    )?;
    for app in ws.apps.iter().filter(|a| a.mode.has_runs()) {
        let ids = AppIds {
            tenant: ws.id.to_string(),
            app: app.id.to_string(),
            workflow: workflow_id(app),
        };
        for (run, _) in all_runs(app) {
            let debug = run.triggered_from.as_str() == "debugging" && !is_derived(app, &run);
            for node in nodes_of(ws, app, &run) {
                let mut node = node;
                if is_derived(app, &run) {
                    node.id = Uuid::from_u128(node.id.as_u128() ^ (run.id.as_u128() & 0xFFFF_FFFF));
                }
                write_node(ws, copy, &ids, &run, &node, "workflow-run")?;
                // Every model node of a debug run was also tried alone in the editor.
                if debug && matches!(node.kind, NodeKind::Model { .. }) {
                    let mut single = node.clone();
                    single.id = Uuid::from_u128(node.id.as_u128() ^ SINGLE_STEP);
                    write_node(ws, copy, &ids, &run, &single, "single-step")?;
                }
            }
        }
    }
    copy.end()
}

/// The ids every node row of an app repeats.
struct AppIds {
    tenant: String,
    app: String,
    workflow: String,
}

fn write_node(
    ws: &Workspace,
    copy: &mut Copy<'_>,
    ids: &AppIds,
    run: &Run,
    node: &Node,
    triggered_from: &str,
) -> io::Result<()> {
    let json = node_json(ws, run, node);
    let text = |v: &Value| (!v.is_null()).then(|| v.to_string());
    let run_id = (triggered_from == "workflow-run").then(|| run.id.to_string());
    copy.row(&[
        Some(&node.id.to_string()),
        Some(&ids.tenant),
        Some(&ids.app),
        Some(&ids.workflow),
        Some(triggered_from),
        run_id.as_deref(),
        Some(&node.index.to_string()),
        Some(&node.node_id),
        Some(node.node_type),
        Some(&node.title),
        Some("{}"),
        text(&json["process_data"]).as_deref(),
        Some("{}"),
        Some(node.status),
        Some(&(Decimal::from(node.elapsed_ms) / Decimal::from(1000)).to_string()),
        text(&json["execution_metadata"]).as_deref(),
        Some(&timestamp(node.created_at)),
        Some(role(run.creator)),
        Some(&creator_id(ws, run)),
        Some(&timestamp(
            node.created_at + i64::from(node.elapsed_ms / 1000),
        )),
    ])
}

/// One `workflow_archive_logs` row per archived run (`WorkflowArchiveLog` in `api/models/workflow.py`):
/// the run's own fields as `run_*`, its app log as `log_*`.
fn write_archive_logs(ws: &Workspace, copy: &mut Copy<'_>) -> io::Result<()> {
    copy.begin(
        "workflow_archive_logs",
        &[
            "id",
            "log_id",
            "tenant_id",
            "app_id",
            "workflow_id",
            "workflow_run_id",
            "created_by_role",
            "created_by",
            "log_created_at",
            "log_created_from",
            "run_version",
            "run_status",
            "run_triggered_from",
            "run_total_tokens",
            "run_created_at",
            "run_finished_at",
        ],
    )?;
    let tenant = ws.id.to_string();
    for app in &ws.apps {
        for run in &app.archived_runs {
            let (total_tokens, _) = run_totals(&generate_nodes(ws.seed, app.mode, run));
            let created = timestamp(run.created_at);
            copy.row(&[
                Some(&archive_log_id(run).to_string()),
                Some(&app_log_id(run).to_string()),
                Some(&tenant),
                Some(&app.id.to_string()),
                Some(&workflow_id(app)),
                Some(&run.id.to_string()),
                Some(role(run.creator)),
                Some(&creator_id(ws, run)),
                Some(&created),
                Some("service-api"),
                Some("2026-11-01 00:00:00.000000"),
                Some(run.status.as_str()),
                Some(run.triggered_from.as_str()),
                Some(&total_tokens.to_string()),
                Some(&created),
                Some(&timestamp(run.created_at + 5)),
            ])?;
        }
    }
    copy.end()
}

/// Whether `run` is one of the RAG pipeline runs made from a debug run.
fn is_derived(app: &App, run: &Run) -> bool {
    app.find_run(run.id).is_none()
}

/// The nodes of a run; a derived run has the nodes of the debug run it was made from.
fn nodes_of(ws: &Workspace, app: &App, run: &Run) -> Vec<Node> {
    if !is_derived(app, run) {
        return generate_nodes(ws.seed, app.mode, run);
    }
    let original = [RAG_RUN, RAG_DEBUG]
        .iter()
        .map(|space| Uuid::from_u128(run.id.as_u128() ^ space))
        .find_map(|id| app.find_run(id));
    original.map_or_else(Vec::new, |r| generate_nodes(ws.seed, app.mode, r))
}

fn workflow_id(app: &App) -> String {
    Uuid::from_u128(app.id.as_u128() ^ WORKFLOW).to_string()
}

/// `created_by`: the account or end user, or (nobody) an end user Dify no longer has.
fn creator_id(ws: &Workspace, run: &Run) -> String {
    let (end_user, account) = senders(ws, run.creator);
    end_user
        .or(account)
        .unwrap_or_else(|| Uuid::from_u128(run.id.as_u128() ^ DELETED_USER).to_string())
}

/// (`from_end_user_id`, `from_account_id`) of a sender, as the API shows them.
fn senders(ws: &Workspace, sender: Creator) -> (Option<String>, Option<String>) {
    let (end_user, account) = sender_ids(sender, ws);
    let id = |v: Value| v.as_str().map(str::to_owned);
    (id(end_user), id(account))
}

/// Unix seconds as `timestamp without time zone` text in UTC.
fn timestamp(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A `COPY … FROM STDIN` stream in PostgreSQL's text format.
struct Copy<'a> {
    out: &'a mut dyn Write,
    line: String,
}

impl<'a> Copy<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Copy {
            out,
            line: String::new(),
        }
    }

    fn begin(&mut self, table: &str, columns: &[&str]) -> io::Result<()> {
        writeln!(
            self.out,
            "COPY {table} ({}) FROM STDIN;",
            columns.join(", ")
        )
    }

    /// One row; `None` is SQL NULL. Backslashes, tabs and line breaks are escaped as COPY requires.
    fn row(&mut self, values: &[Option<&str>]) -> io::Result<()> {
        self.line.clear();
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.line.push('\t');
            }
            match value {
                None => self.line.push_str("\\N"),
                Some(text) => {
                    for c in text.chars() {
                        match c {
                            '\\' => self.line.push_str("\\\\"),
                            '\t' => self.line.push_str("\\t"),
                            '\n' => self.line.push_str("\\n"),
                            '\r' => self.line.push_str("\\r"),
                            c => self.line.push(c),
                        }
                    }
                }
            }
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    fn end(&mut self) -> io::Result<()> {
        self.out.write_all(b"\\.\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_postgresql_would_misread() {
        let mut out = Vec::new();
        let mut copy = Copy::new(&mut out);
        copy.begin("t", &["a", "b"]).unwrap();
        copy.row(&[Some("tab\there \\ line\nend\r"), None]).unwrap();
        copy.end().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "COPY t (a, b) FROM STDIN;\ntab\\there \\\\ line\\nend\\r\t\\N\n\\.\n"
        );
    }

    #[test]
    fn timestamps_are_utc_text() {
        assert_eq!(timestamp(1_764_547_199), "2025-11-30 23:59:59");
    }
}
