//! The conversation and message endpoints of message-based apps, following Dify's controllers
//! (`api/controllers/console/app/conversation.py`, `message.py`) and response models
//! (`api/fields/conversation_fields.py`): page-number listing with Dify's filters and ordering, the
//! `first_id` history cursor, and the detail endpoints that mark a conversation read (counted in stats, since
//! the exporter must never call them). `sim/DIFY-SOURCES.md` names the file behind each shape.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use super::SimState;
use rust_decimal::Decimal;

use super::data::{
    Account, App, Conversation, Creator, EndUser, MODELS, Message, Mode, ModelSpec, NodeKind,
    Usage, Workspace, generate_message, generate_nodes,
};
use super::live::Live;
use super::routes::{
    ApiError, ApiResult, AppListing, Params, app_listing, authorized_app, limit_param,
    local_minute_param, page_json, params, price_str, usage_json,
};

/// The modes the chat-conversation endpoints serve (a wrong mode's error lists them in this order).
const CHAT_MODES: &[Mode] = &[Mode::Chat, Mode::AgentChat, Mode::AdvancedChat];

fn not_found(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}

/// A conversation as it stands now: generated messages plus any the bump fault added.
struct View<'a> {
    index: u32,
    conversation: &'a Conversation,
    messages: Vec<&'a Message>,
    read_at: Option<i64>,
}

impl View<'_> {
    fn created_at(&self) -> i64 {
        self.messages.first().map_or(0, |m| m.created_at)
    }

    /// Dify moves `updated_at` to the time of every new message.
    fn updated_at(&self) -> i64 {
        self.messages.last().map_or(0, |m| m.created_at)
    }
}

fn view<'a>(app: &'a App, live: &'a Live, index: u32, conversation: &'a Conversation) -> View<'a> {
    let mut messages: Vec<&Message> = app.conversation_messages(conversation).iter().collect();
    messages.extend(live.added(app.id, index));
    View {
        index,
        conversation,
        messages,
        read_at: live.read_at.get(&conversation.id).copied(),
    }
}

fn lock(state: &SimState) -> std::sync::MutexGuard<'_, Live> {
    // Handlers never leave `Live` half-changed, so a poisoned lock is still consistent.
    state
        .live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn model_json(app: &App, model: usize) -> Value {
    let spec = &MODELS[model];
    let model_mode = if app.mode == Mode::Completion {
        "completion"
    } else {
        "chat"
    };
    json!({"provider": spec.provider, "name": spec.name, "mode": model_mode,
           "completion_params": {"temperature": 0.7}})
}

/// The end user or the account who sent a conversation, where the workspace has them.
fn sender_of(sender: Creator, ws: &Workspace) -> (Option<&EndUser>, Option<&Account>) {
    match sender {
        Creator::EndUser(i) => (ws.end_users.get(usize::from(i)), None),
        Creator::Account(i) => (None, ws.accounts.get(usize::from(i))),
        Creator::Nobody => (None, None),
    }
}

/// (`from_end_user_id`, `from_account_id`) of a sender; also the database rows' (`rows`).
pub(crate) fn sender_ids(sender: Creator, ws: &Workspace) -> (Value, Value) {
    let (end_user, account) = sender_of(sender, ws);
    (
        end_user.map_or(Value::Null, |u| json!(u.id)),
        account.map_or(Value::Null, |a| json!(a.id)),
    )
}

fn feedback_stats() -> Value {
    json!({"like": 0, "dislike": 0})
}

/// The fields `conversation_fields` and `conversation_with_summary_fields` share.
fn row_base(ws: &Workspace, app: &App, v: &View<'_>) -> serde_json::Map<String, Value> {
    let c = v.conversation;
    let (end_user, account) = sender_of(c.sender, ws);
    let (end_user_id, account_id) = sender_ids(c.sender, ws);
    let session_id = end_user.map_or(Value::Null, |u| json!(u.session_id));
    let account_name = account.map_or(Value::Null, |a| json!(a.name));
    // `simple_model_config_fields` reads `model` from `model_dict`, a key the dict `Conversation.model_config`
    // returns never has: Dify lists every conversation without its model (only the detail names it).
    let pre_prompt = if app.mode == Mode::AdvancedChat {
        Value::Null
    } else {
        json!("You are a helpful assistant.")
    };
    let model_config = json!({"model": null, "pre_prompt": pre_prompt});
    let row = json!({
        "id": c.id, "status": "normal", "from_source": c.invoke_from.source(),
        "from_end_user_id": end_user_id, "from_end_user_session_id": session_id,
        "from_account_id": account_id, "from_account_name": account_name,
        "read_at": v.read_at, "created_at": v.created_at(), "updated_at": v.updated_at(),
        "model_config": model_config,
        "user_feedback_stats": feedback_stats(), "admin_feedback_stats": feedback_stats(),
    });
    match row {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// A row of `chat-conversations`: `conversation_with_summary_fields`.
fn summary_row(ws: &Workspace, app: &App, v: &View<'_>) -> Value {
    let mut row = row_base(ws, app, v);
    let failed = v.messages.iter().filter(|m| !m.answered).count();
    let n = v.index + 1;
    row.extend([
        ("name".to_owned(), json!(format!("Conversation {n}"))),
        (
            "summary".to_owned(),
            json!(format!("Question 1 of conversation {n}")),
        ),
        ("annotated".to_owned(), json!(false)),
        ("message_count".to_owned(), json!(v.messages.len())),
        (
            "status_count".to_owned(),
            json!({"success": v.messages.len() - failed, "failed": failed, "partial_success": 0}),
        ),
    ]);
    Value::Object(row)
}

/// A row of `completion-conversations`: `conversation_fields`, with its first message in brief.
fn completion_row(ws: &Workspace, app: &App, v: &View<'_>) -> Value {
    let mut row = row_base(ws, app, v);
    let first = v.messages.first().map(|m| {
        json!({"inputs": {}, "query": "Question 1", "message": "Question 1",
               "answer": if m.answered { "Answer 1" } else { "" }})
    });
    row.extend([
        ("annotation".to_owned(), Value::Null),
        ("message".to_owned(), first.unwrap_or(Value::Null)),
    ]);
    Value::Object(row)
}

/// `model_config_fields` of the detail endpoints.
fn full_model_config(app: &App, c: &Conversation) -> Value {
    json!({
        "opening_statement": "", "suggested_questions": [], "model": conversation_model(app, c),
        "user_input_form": [], "pre_prompt": "You are a helpful assistant.",
        "agent_mode": {"enabled": app.mode == Mode::AgentChat, "tools": []},
    })
}

/// A message: `message_detail_fields`. `metadata.usage` is missing when the call failed before the model
/// answered.
fn message_json(ws: &Workspace, app: &App, v: &View<'_>, position: usize) -> Value {
    let m = v.messages[position];
    let c = v.conversation;
    let (end_user_id, account_id) = sender_ids(c.sender, ws);
    let (tokens, usage, workflow_run_id) = if app.mode == Mode::AdvancedChat {
        run_message(ws, app, c)
    } else {
        let spec: &ModelSpec = &MODELS[c.model];
        let usage = m.answered.then(|| {
            // A model without pricing in Dify reports zero prices.
            let priced = !spec.provider.is_empty();
            let usage = Usage {
                prompt_tokens: u64::from(m.message_tokens),
                completion_tokens: u64::from(m.answer_tokens),
                prompt_price: if priced {
                    m.prompt_price(spec)
                } else {
                    Decimal::ZERO
                },
                completion_price: if priced {
                    m.completion_price(spec)
                } else {
                    Decimal::ZERO
                },
                latency: 1.25,
            };
            usage_json(spec, &usage)
        });
        (
            (u64::from(m.message_tokens), u64::from(m.answer_tokens)),
            usage,
            Value::Null,
        )
    };
    let metadata = usage.map_or_else(
        || json!({}),
        |usage| json!({"usage": usage, "retriever_resources": []}),
    );
    let n = position + 1;
    // An agent-chat answer records its reasoning steps; usage stays on the message.
    let agent_thoughts = if app.mode == Mode::AgentChat && m.answered {
        json!([{"id": Uuid::from_u128(m.id.as_u128() ^ 0xA6), "chain_id": null, "message_id": m.id,
                "position": 1, "thought": format!("Answer {n}"), "tool": "", "tool_labels": {},
                "tool_input": "", "created_at": m.created_at, "observation": "", "files": []}])
    } else {
        json!([])
    };
    json!({
        "id": m.id, "conversation_id": c.id, "inputs": {}, "query": format!("Question {n}"),
        "message": [{"role": "user", "text": format!("Question {n}"), "files": []}],
        "message_tokens": tokens.0,
        "answer": if m.answered { format!("Answer {n}") } else { String::new() },
        "answer_tokens": tokens.1, "provider_response_latency": if m.answered { 1.25 } else { 0.0 },
        "from_source": c.invoke_from.source(), "from_end_user_id": end_user_id,
        "from_account_id": account_id, "feedbacks": [], "workflow_run_id": workflow_run_id, "annotation": null,
        "annotation_hit_history": null, "created_at": m.created_at,
        "agent_thoughts": agent_thoughts, "message_files": [], "metadata": metadata,
        "status": if m.answered { "normal" } else { "error" },
        "error": if m.answered { Value::Null } else { Value::from("[openai] Error: Request timed out.") },
        "parent_message_id": position.checked_sub(1).map(|p| v.messages[p].id),
    })
}

/// An advanced-chat message as Dify saves it once its run ends: the run's LLM usage summed over every node
/// with its own usage (prompt and completion tokens, total price, the first model's currency).
pub(crate) fn run_message(
    ws: &Workspace,
    app: &App,
    c: &Conversation,
) -> ((u64, u64), Option<Value>, Value) {
    let Some(run) = app.run_of_conversation(c) else {
        return ((0, 0), None, Value::Null);
    };
    let (mut prompt, mut completion, mut price, mut currency) = (0, 0, Decimal::ZERO, None);
    for node in generate_nodes(ws.seed, app.mode, run) {
        match node.kind {
            NodeKind::Model { model, usage } => {
                prompt += usage.prompt_tokens;
                completion += usage.completion_tokens;
                price += usage.total_price();
                currency.get_or_insert(MODELS[model].currency);
            }
            NodeKind::Truncated {
                model,
                total_tokens,
                total_price,
            } => {
                prompt += total_tokens;
                price += total_price;
                currency.get_or_insert(MODELS[model].currency);
            }
            NodeKind::Plain | NodeKind::Container { .. } => {}
        }
    }
    let usage = json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "total_price": price_str(price), "currency": currency.unwrap_or("USD"), "latency": 2.5,
    });
    ((prompt, completion), Some(usage), json!(run.id))
}

/// A conversation's `model_config`: the config it was created with; an advanced-chat conversation has none
/// (`Conversation.model_config` in `api/models/model.py`), so its model is null.
fn conversation_model(app: &App, c: &Conversation) -> Value {
    if app.mode == Mode::AdvancedChat {
        Value::Null
    } else {
        model_json(app, c.model)
    }
}

/// Which conversation field `sort_by` orders and filters on, and in which direction.
#[derive(Clone, Copy)]
struct SortBy {
    updated: bool,
    descending: bool,
}

impl SortBy {
    fn time(self, v: &View<'_>) -> i64 {
        if self.updated {
            v.updated_at()
        } else {
            v.created_at()
        }
    }
}

fn sort_by_param(q: &HashMap<String, String>) -> Result<SortBy, ApiError> {
    match q.get("sort_by").map_or("-updated_at", String::as_str) {
        "created_at" => Ok(SortBy {
            updated: false,
            descending: false,
        }),
        "-created_at" => Ok(SortBy {
            updated: false,
            descending: true,
        }),
        "updated_at" => Ok(SortBy {
            updated: true,
            descending: false,
        }),
        "-updated_at" => Ok(SortBy {
            updated: true,
            descending: true,
        }),
        other => Err(ApiError::invalid_param(format!(
            "sort_by: {other} is not a valid choice (created_at, -created_at, updated_at, -updated_at)."
        ))),
    }
}

/// `GET /apps/{id}/chat-conversations` as `ChatConversationApi.get`: deleted conversations never, debugger ones
/// left out for advanced-chat apps only; `start` (second 0, `>=`) and `end` (second 59, `<=`) in the account
/// timezone filter on `updated_at` under an `updated_at` sort, else on `created_at`; `db.paginate` paging.
pub(crate) async fn chat_conversations(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    let AppListing {
        app,
        q,
        page,
        limit,
    } = app_listing(&state, &headers, &app_id, CHAT_MODES, query)?;
    let ws = &state.workspace;
    let sort = sort_by_param(&q)?;
    let start = local_minute_param(ws, &q, "start")?;
    let end = local_minute_param(ws, &q, "end")?.map(|t| t + 59);
    let mut live = lock(&state);
    let rows = listed_views(app, &live, sort, |t| {
        start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
    });
    let (body, has_more) = page_json(&rows, page, limit, |v| summary_row(ws, app, v));
    let bump = (state.config.faults.bump_conversation_while_listing
        && page == 1
        && has_more
        && !live.bumped_apps.contains(&app.id))
    .then(|| bump_target(&rows, limit))
    .flatten();
    drop(rows);
    if let Some((index, last)) = bump {
        live.bumped_apps.insert(app.id);
        let mut rng = ChaCha8Rng::seed_from_u64(ws.seed ^ u64::from(index));
        let now = chrono::Utc::now().timestamp().max(last + 1);
        let mut message = generate_message(&mut rng, now);
        message.answered = true;
        message.message_tokens = message.message_tokens.max(1);
        live.added.entry((app.id, index)).or_default().push(message);
    }
    Ok(Json(body))
}

/// The listed conversations whose sort time passes `within`, in `sort` order (ties by id; Dify leaves them to
/// PostgreSQL).
fn listed_views<'a>(
    app: &'a App,
    live: &'a Live,
    sort: SortBy,
    within: impl Fn(i64) -> bool,
) -> Vec<View<'a>> {
    let mut rows: Vec<View<'_>> = app
        .conversations
        .iter()
        .zip(0u32..)
        .filter(|(c, _)| is_listed(app, c))
        .map(|(c, i)| view(app, live, i, c))
        .filter(|v| within(sort.time(v)))
        .collect();
    let key = |v: &View<'_>| (sort.time(v), v.conversation.id);
    if sort.descending {
        rows.sort_by_key(|v| Reverse(key(v)));
    } else {
        rows.sort_by_key(key);
    }
    rows
}

/// `GET /apps/{id}/completion-conversations` as `CompletionConversationApi.get`: deleted ones never, newest
/// `created_at` first; `start` (second 0, `>=`) and `end` (second 59, `<`) on `created_at`.
pub(crate) async fn completion_conversations(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    let AppListing {
        app,
        q,
        page,
        limit,
    } = app_listing(&state, &headers, &app_id, &[Mode::Completion], query)?;
    let ws = &state.workspace;
    let start = local_minute_param(ws, &q, "start")?;
    let end = local_minute_param(ws, &q, "end")?.map(|t| t + 59);
    let live = lock(&state);
    let newest_created = SortBy {
        updated: false,
        descending: true,
    };
    let rows = listed_views(app, &live, newest_created, |t| {
        start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e)
    });
    Ok(Json(
        page_json(&rows, page, limit, |v| completion_row(ws, app, v)).0,
    ))
}

/// Deleted conversations are never listed; debugger ones only for chat and agent-chat apps.
fn is_listed(app: &App, c: &Conversation) -> bool {
    let hidden_debugger =
        app.mode == Mode::AdvancedChat && c.invoke_from == super::data::InvokeFrom::Debugger;
    !c.is_deleted && !hidden_debugger
}

/// The last end-user conversation of page 2 (else its last one): (index, its `updated_at`).
fn bump_target(rows: &[View<'_>], limit: usize) -> Option<(u32, i64)> {
    let page2 = rows.get(limit..rows.len().min(2 * limit))?;
    page2
        .iter()
        .rev()
        .find(|v| matches!(v.conversation.sender, Creator::EndUser(_)))
        .or_else(|| page2.last())
        .map(|v| (v.index, v.updated_at()))
}

fn parse_uuid(q: &HashMap<String, String>, name: &str) -> Result<Option<Uuid>, ApiError> {
    match q.get(name).filter(|raw| !raw.is_empty()) {
        None => Ok(None),
        Some(raw) => Uuid::parse_str(raw)
            .map(Some)
            .map_err(|_| ApiError::invalid_param(format!("{name}: {raw} is not a valid uuid."))),
    }
}

/// `GET /apps/{id}/chat-messages` as `ChatMessageListApi.get`: the newest `limit` messages older than
/// `first_id` (all, without it), returned oldest first; `has_more` only when the page is full and an older
/// message exists.
pub(crate) async fn chat_messages(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    let app = authorized_app(
        &state,
        &headers,
        &app_id,
        &[Mode::Chat, Mode::AgentChat, Mode::AdvancedChat, Mode::Agent],
    )?;
    let ws = &state.workspace;
    let q = params(query)?;
    let conversation_id = parse_uuid(&q, "conversation_id")?
        .ok_or_else(|| ApiError::invalid_param("conversation_id: Missing required parameter."))?;
    let first_id = parse_uuid(&q, "first_id")?;
    let limit = limit_param(&q)?;
    let live = lock(&state);
    let (index, conversation) = app
        .find_conversation(conversation_id)
        .filter(|(_, c)| !c.is_deleted)
        .ok_or_else(|| not_found("Conversation Not Exists."))?;
    let v = view(app, &live, index, conversation);
    let older_than = match first_id {
        None => None,
        Some(id) => Some(
            v.messages
                .iter()
                .find(|m| m.id == id)
                .ok_or_else(|| not_found("First message not found"))?,
        ),
    };
    let before = |m: &Message, pivot: &Message| m.created_at < pivot.created_at && m.id != pivot.id;
    // Positions of the page, newest first, as Dify's `ORDER BY created_at DESC LIMIT`.
    let page: Vec<usize> = (0..v.messages.len())
        .rev()
        .filter(|&p| older_than.is_none_or(|pivot| before(v.messages[p], pivot)))
        .take(limit)
        .collect();
    let has_more = page.len() == limit
        && page
            .last()
            .is_some_and(|&oldest| v.messages.iter().any(|m| before(m, v.messages[oldest])));
    let data: Vec<Value> = page
        .iter()
        .rev()
        .map(|&p| message_json(ws, app, &v, p))
        .collect();
    Ok(Json(
        json!({"limit": limit, "has_more": has_more, "data": data}),
    ))
}

/// Finds a conversation for a detail endpoint (deleted ones too, as `_get_conversation`) and marks it read.
fn read_conversation<'a>(
    state: &'a SimState,
    app: &'a App,
    conversation_id: &str,
) -> Result<(u32, &'a Conversation, i64), ApiError> {
    let (index, conversation) = Uuid::parse_str(conversation_id)
        .ok()
        .and_then(|id| app.find_conversation(id))
        .ok_or_else(|| not_found("Conversation Not Exists."))?;
    let read_at = *lock(state)
        .read_at
        .entry(conversation.id)
        .or_insert_with(|| chrono::Utc::now().timestamp());
    Ok((index, conversation, read_at))
}

/// `GET /apps/{id}/chat-conversations/{cid}`: `conversation_detail_fields`. Marks the conversation read.
pub(crate) async fn chat_conversation_detail(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((app_id, conversation_id)): Path<(String, String)>,
) -> ApiResult {
    let app = authorized_app(&state, &headers, &app_id, CHAT_MODES)?;
    let ws = &state.workspace;
    let (index, c, _) = read_conversation(&state, app, &conversation_id)?;
    let live = lock(&state);
    let v = view(app, &live, index, c);
    let (end_user_id, account_id) = sender_ids(c.sender, ws);
    Ok(Json(json!({
        "id": c.id, "status": "normal", "from_source": c.invoke_from.source(),
        "from_end_user_id": end_user_id, "from_account_id": account_id,
        "created_at": v.created_at(), "updated_at": v.updated_at(), "annotated": false, "introduction": "",
        "model_config": full_model_config(app, c), "message_count": v.messages.len(),
        "user_feedback_stats": feedback_stats(), "admin_feedback_stats": feedback_stats(),
    })))
}

/// `GET /apps/{id}/completion-conversations/{cid}`: `conversation_message_detail_fields`. Marks it read.
pub(crate) async fn completion_conversation_detail(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((app_id, conversation_id)): Path<(String, String)>,
) -> ApiResult {
    let app = authorized_app(&state, &headers, &app_id, &[Mode::Completion])?;
    let ws = &state.workspace;
    let (index, c, _) = read_conversation(&state, app, &conversation_id)?;
    let live = lock(&state);
    let v = view(app, &live, index, c);
    let (end_user_id, account_id) = sender_ids(c.sender, ws);
    let message = if v.messages.is_empty() {
        Value::Null
    } else {
        message_json(ws, app, &v, 0)
    };
    Ok(Json(json!({
        "id": c.id, "status": "normal", "from_source": c.invoke_from.source(),
        "from_end_user_id": end_user_id, "from_account_id": account_id, "created_at": v.created_at(),
        "model_config": full_model_config(app, c), "message": message,
    })))
}
