//! The HTTP surface: the console routes of docs/console-api.md#endpoints-by-app-mode as JSON, plus `/_sim/truth` and
//! `/_sim/stats`. Handlers validate their query strictly (a bad parameter is a 400 with a message, never a
//! panic or a silent clamp), authenticate through `auth`, and render `data`'s workspace in Dify's wire shapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::SimState;
use super::auth::{self, authenticate};
use super::data::{
    App, Creator, InvokeFrom, MODELS, Mode, ModelSpec, Node, NodeKind, Run, RunStatus,
    TriggeredFrom, Usage, Workspace, generate_nodes, run_conversation_id, run_message_id,
    run_totals,
};
use super::{Source, archive, chat, faults};

/// Dify's error body `{"code","message","status"}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_param(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_param", message)
    }

    fn app_not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "App not found.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"code": self.code, "message": self.message, "status": self.status.as_u16()});
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult = Result<Json<Value>, ApiError>;
pub(crate) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(crate) fn router(state: Arc<SimState>) -> Router {
    let app_route = |rest: &str| format!("/console/api/apps/{{app_id}}/{rest}");
    Router::new()
        .route("/console/api/login", post(auth::login))
        .route("/console/api/refresh-token", post(auth::refresh))
        .route("/console/api/account/profile", get(profile))
        .route("/console/api/apps", get(apps))
        .route("/console/api/apps/{app_id}", get(app_detail))
        .route(&app_route("workflow-app-logs"), get(workflow_app_logs))
        .route(&app_route("workflow-runs"), get(workflow_runs))
        .route(
            &app_route("workflow-archived-logs"),
            get(archive::workflow_archived_logs),
        )
        .route(&app_route("workflow-runs/{run_id}"), get(run_detail))
        .route(
            &app_route("workflow-runs/{run_id}/node-executions"),
            get(node_executions),
        )
        .route(
            &app_route("chat-conversations"),
            get(chat::chat_conversations),
        )
        .route(
            &app_route("chat-conversations/{conversation_id}"),
            get(chat::chat_conversation_detail),
        )
        .route(
            &app_route("completion-conversations"),
            get(chat::completion_conversations),
        )
        .route(
            &app_route("completion-conversations/{conversation_id}"),
            get(chat::completion_conversation_detail),
        )
        .route(&app_route("chat-messages"), get(chat::chat_messages))
        .route(&app_route("statistics/token-costs"), get(token_costs))
        .route(&app_route("statistics/daily-messages"), get(daily_messages))
        .route(
            &app_route("workflow/statistics/token-costs"),
            get(workflow_token_costs),
        )
        .route("/_sim/truth", get(sim_truth))
        .route("/_sim/stats", get(sim_stats))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), faults::track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
    )
}

pub(crate) fn params(query: Params) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid_param(format!("Bad query string: {e}")))
}

/// An integer parameter within `range`, else `default` when absent; out of range is a 400, never clamped.
fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    match raw.parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid_param(format!(
            "{name}: {raw} is not a valid integer between 1 and {max}."
        ))),
    }
}

pub(crate) fn limit_param(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    int_param(q, "limit", 20, 100)
}

pub(crate) fn page_param(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    int_param(q, "page", 1, 99_999)
}

fn find_app<'w>(ws: &'w Workspace, app_id: &str) -> Result<&'w App, ApiError> {
    ws.app(app_id).ok_or_else(ApiError::app_not_found)
}

/// The modes whose apps have workflow runs (a wrong mode's error lists them in this order).
const RUN_MODES: &[Mode] = &[Mode::AdvancedChat, Mode::Workflow];

/// The checks an app's endpoint makes first, in Dify's order: the session, the app, then its mode.
pub(crate) fn authorized_app<'s>(
    state: &'s SimState,
    headers: &HeaderMap,
    app_id: &str,
    modes: &[Mode],
) -> Result<&'s App, ApiError> {
    authenticate(state, headers)?;
    let app = find_app(&state.workspace, app_id)?;
    require_mode(app, modes)?;
    Ok(app)
}

/// A paged list of an app's records, checked as `authorized_app` and then its query, `page` and `limit` first.
pub(crate) struct AppListing<'s> {
    pub(crate) app: &'s App,
    pub(crate) q: HashMap<String, String>,
    pub(crate) page: usize,
    pub(crate) limit: usize,
}

/// `db.paginate`'s answer: page `page` of `rows`, `total`, and `has_more` (`has_next`).
pub(crate) fn page_json<T>(
    rows: &[T],
    page: usize,
    limit: usize,
    row: impl Fn(&T) -> Value,
) -> (Value, bool) {
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(row)
        .collect();
    let has_more = page.saturating_mul(limit) < total;
    let body =
        json!({"page": page, "limit": limit, "total": total, "has_more": has_more, "data": data});
    (body, has_more)
}

pub(crate) fn app_listing<'s>(
    state: &'s SimState,
    headers: &HeaderMap,
    app_id: &str,
    modes: &[Mode],
    query: Params,
) -> Result<AppListing<'s>, ApiError> {
    let app = authorized_app(state, headers, app_id, modes)?;
    let q = params(query)?;
    let page = page_param(&q)?;
    let limit = limit_param(&q)?;
    Ok(AppListing {
        app,
        q,
        page,
        limit,
    })
}

fn require_mode(app: &App, modes: &[Mode]) -> Result<(), ApiError> {
    if modes.contains(&app.mode) {
        Ok(())
    } else {
        let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "app_not_found",
            format!("App mode is not in the supported list: {names:?}"),
        ))
    }
}

/// Prices as Dify writes them: 7 decimals, and zero in Python's quantized form `"0E-7"`.
pub(crate) fn price_str(price: Decimal) -> String {
    if price.is_zero() {
        return "0E-7".to_owned();
    }
    let mut p = price;
    p.rescale(7);
    p.to_string()
}

async fn profile(State(state): State<Arc<SimState>>, headers: HeaderMap) -> ApiResult {
    authenticate(&state, &headers)?;
    let ws = &state.workspace;
    let owner = ws.owner();
    Ok(Json(json!({
        "id": owner.id, "name": owner.name, "avatar": null, "avatar_url": null, "email": owner.email,
        "is_password_set": true, "interface_language": "en-US", "interface_theme": "light",
        "timezone": ws.tz_name, "last_login_at": null, "last_login_ip": "127.0.0.1", "created_at": 1_700_000_000,
    })))
}

fn app_json(ws: &Workspace, app: &App) -> Value {
    let model_config = app.model.and_then(|m| MODELS.get(m)).map(|spec| {
        let model_mode = if app.mode == Mode::Completion {
            "completion"
        } else {
            "chat"
        };
        json!({
            "model": {"provider": spec.provider, "name": spec.name, "mode": model_mode,
                      "completion_params": {"temperature": 0.7}},
            "pre_prompt": "You are a helpful assistant.",
            "created_at": app.created_at, "updated_at": app.created_at,
        })
    });
    let workflow = app.mode.has_runs().then(|| {
        json!({"id": Uuid::from_u128(app.id.as_u128() ^ 0x5157), "created_at": app.created_at, "updated_at": app.created_at})
    });
    json!({
        "id": app.id, "name": app.name, "description": "", "mode": app.mode.as_str(),
        "icon_type": "emoji", "icon": "🤖", "icon_background": "#FFEAD5",
        "enable_site": true, "enable_api": true, "use_icon_as_answer_icon": false,
        "model_config": model_config, "workflow": workflow, "tags": [],
        "created_by": ws.owner().id, "created_at": app.created_at, "updated_at": app.created_at,
    })
}

async fn apps(State(state): State<Arc<SimState>>, headers: HeaderMap, query: Params) -> ApiResult {
    authenticate(&state, &headers)?;
    let q = params(query)?;
    let page = page_param(&q)?;
    let limit = limit_param(&q)?;
    let mode =
        match q.get("mode").map(String::as_str) {
            None | Some("all") => None,
            Some(m) => Some(Mode::parse(m).ok_or_else(|| {
                ApiError::invalid_param(format!("mode: {m} is not a valid choice."))
            })?),
        };
    let ws = &state.workspace;
    let matching: Vec<&App> = ws
        .apps
        .iter()
        .filter(|a| mode.is_none_or(|m| a.mode == m))
        .collect();
    Ok(Json(
        page_json(&matching, page, limit, |a| app_json(ws, a)).0,
    ))
}

async fn app_detail(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult {
    authenticate(&state, &headers)?;
    let ws = &state.workspace;
    Ok(Json(app_json(ws, find_app(ws, &app_id)?)))
}

pub(crate) fn account_json(ws: &Workspace, creator: Creator) -> Value {
    match creator {
        Creator::Account(i) => ws.accounts.get(usize::from(i)).map_or(
            Value::Null,
            |a| json!({"id": a.id, "name": a.name, "email": a.email}),
        ),
        _ => Value::Null,
    }
}

pub(crate) fn end_user_json(ws: &Workspace, creator: Creator) -> Value {
    match creator {
        Creator::EndUser(i) => ws.end_users.get(usize::from(i)).map_or(Value::Null, |u| {
            json!({"id": u.id, "type": u.kind, "is_anonymous": u.kind == "browser", "session_id": u.session_id})
        }),
        _ => Value::Null,
    }
}

/// The id of a run's `workflow_app_logs` row (and of its archive row's `log_id`).
pub(crate) fn app_log_id(run: &Run) -> Uuid {
    Uuid::from_u128(run.id.as_u128() ^ 0x1065)
}

pub(crate) fn role(creator: Creator) -> &'static str {
    if matches!(creator, Creator::Account(_)) {
        "account"
    } else {
        "end_user"
    }
}

/// What a run's regenerated nodes say about it.
pub(crate) struct RunFacts {
    pub(crate) total_tokens: u64,
    pub(crate) total_steps: usize,
    pub(crate) finished_at: i64,
}

pub(crate) fn run_facts(ws: &Workspace, app: &App, run: &Run) -> RunFacts {
    let nodes = generate_nodes(ws.seed, app.mode, run);
    let (total_tokens, _) = run_totals(&nodes);
    RunFacts {
        total_tokens,
        total_steps: nodes.len(),
        finished_at: nodes.last().map_or(run.created_at, |n| n.created_at + 1),
    }
}

fn run_error(run: &Run) -> Value {
    if run.status == RunStatus::Failed {
        Value::from("Node LLM run failed")
    } else {
        Value::Null
    }
}

const RUN_VERSION: &str = "2025-01-01 00:00:00.000000";

/// A row of `workflow-runs`: `workflow_run_for_list_fields` (`WorkflowRunForListResponse`), which carries the
/// account that started the run and never its end user; advanced-chat rows add the conversation and message.
fn run_list_json(ws: &Workspace, app: &App, run: &Run) -> Value {
    let f = run_facts(ws, app, run);
    let mut value = json!({
        "id": run.id, "version": RUN_VERSION, "status": run.status.as_str(),
        "elapsed_time": f.finished_at - run.created_at, "total_tokens": f.total_tokens,
        "total_steps": f.total_steps, "created_by_account": account_json(ws, run.creator),
        "created_at": run.created_at, "finished_at": f.finished_at, "exceptions_count": 0, "retry_index": 0,
    });
    if app.mode == Mode::AdvancedChat {
        value["conversation_id"] = json!(run_conversation_id(run.id));
        value["message_id"] = json!(run_message_id(run.id));
    }
    value
}

/// The run inside a `workflow-app-logs` row: `workflow_run_for_log_fields`.
fn run_log_json(ws: &Workspace, app: &App, run: &Run) -> Value {
    let f = run_facts(ws, app, run);
    json!({
        "id": run.id, "version": RUN_VERSION, "status": run.status.as_str(),
        "triggered_from": run.triggered_from.as_str(), "error": run_error(run),
        "elapsed_time": f.finished_at - run.created_at, "total_tokens": f.total_tokens,
        "total_steps": f.total_steps, "created_at": run.created_at, "finished_at": f.finished_at,
        "exceptions_count": 0,
    })
}

/// `GET .../workflow-runs/{run_id}`: `workflow_run_detail_fields` (`WorkflowRunDetailResponse`), with the creator.
fn run_detail_json(ws: &Workspace, app: &App, run: &Run) -> Value {
    let f = run_facts(ws, app, run);
    json!({
        "id": run.id, "version": RUN_VERSION, "graph": {"nodes": [], "edges": []}, "inputs": {},
        "status": run.status.as_str(), "outputs": {}, "error": run_error(run),
        "elapsed_time": f.finished_at - run.created_at, "total_tokens": f.total_tokens,
        "total_steps": f.total_steps, "created_by_role": role(run.creator),
        "created_by_account": account_json(ws, run.creator),
        "created_by_end_user": end_user_json(ws, run.creator),
        "created_at": run.created_at, "finished_at": f.finished_at, "exceptions_count": 0,
    })
}

/// ISO 8601 as Dify's `isoparse` takes it: naive means UTC; an offset is converted to UTC.
fn iso_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(raw) = q.get(name) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.timestamp()));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Some(t.and_utc().timestamp()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()));
    }
    Err(ApiError::invalid_param(format!(
        "{name}: {raw} is not an ISO 8601 date-time."
    )))
}

async fn workflow_app_logs(
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
    } = app_listing(&state, &headers, &app_id, &[Mode::Workflow], query)?;
    let ws = &state.workspace;
    let after = iso_param(&q, "created_at__after")?;
    let before = iso_param(&q, "created_at__before")?;
    let status = q.get("status").map(String::as_str);
    // Runs are newest first, so the inclusive window is one contiguous slice.
    let start = before.map_or(0, |b| app.runs.partition_point(|r| r.created_at > b));
    let end = after.map_or(app.runs.len(), |a| {
        app.runs.partition_point(|r| r.created_at >= a)
    });
    let window = app.runs.get(start..end.max(start)).unwrap_or_default();
    let rows: Vec<&Run> = window
        .iter()
        .filter(|r| status.is_none_or(|s| r.status.as_str() == s))
        .collect();
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(|run| {
            // Triggered runs are executed as service-API calls, so Dify logs them as such.
            let created_from = match (run.triggered_from, run.creator) {
                (TriggeredFrom::AppRun, Creator::EndUser(i)) if i % 2 == 1 => "web-app",
                (TriggeredFrom::AppRun, Creator::Account(_)) => "installed-app",
                _ => "service-api",
            };
            json!({
                "id": app_log_id(run),
                "workflow_run": run_log_json(ws, app, run),
                // Dify >= 1.10 adds `details` (trigger metadata); null when the log has none.
                "details": null,
                "created_from": created_from, "created_by_role": role(run.creator),
                "created_by_account": account_json(ws, run.creator),
                "created_by_end_user": end_user_json(ws, run.creator),
                "created_at": run.created_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "page": page, "limit": limit, "total": total, "has_more": page.saturating_mul(limit) < total, "data": data,
    })))
}

async fn workflow_runs(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    let app = authorized_app(&state, &headers, &app_id, RUN_MODES)?;
    let ws = &state.workspace;
    let q = params(query)?;
    let limit = limit_param(&q)?;
    // Dify's default is the editor's debug runs: a client that forgets `app-run` gets the wrong data.
    let debug = match q.get("triggered_from").map(String::as_str) {
        None | Some("debugging") => true,
        Some("app-run") => false,
        Some(other) => {
            return Err(ApiError::invalid_param(format!(
                "triggered_from: {other} is not a valid choice (debugging, app-run)."
            )));
        }
    };
    // `triggered_from=app-run` lists only runs started from the app itself: triggered runs (webhook,
    // schedule, plugin) are in `app.runs` but match neither choice.
    let (list, wanted) = if debug {
        (&app.debug_runs, TriggeredFrom::Debugging)
    } else {
        (&app.runs, TriggeredFrom::AppRun)
    };
    let start = match q.get("last_id") {
        None => 0,
        Some(raw) => {
            let found = Uuid::parse_str(raw)
                .ok()
                .and_then(|id| app.run_index.get(&id))
                .filter(|&&(is_debug, i)| {
                    is_debug == debug && list.get(i).is_some_and(|r| r.triggered_from == wanted)
                });
            match found {
                Some(&(_, i)) => i + 1,
                None => return Err(ApiError::invalid_param("Last workflow run not exists")),
            }
        }
    };
    let mut rest = list
        .get(start..)
        .unwrap_or_default()
        .iter()
        .filter(|r| r.triggered_from == wanted);
    let data: Vec<Value> = rest
        .by_ref()
        .take(limit)
        .map(|run| run_list_json(ws, app, run))
        .collect();
    let has_more = rest.next().is_some();
    Ok(Json(
        json!({"limit": limit, "has_more": has_more, "data": data}),
    ))
}

/// A run endpoint's checks: `authorized_app` for an app with runs, then the run.
fn authorized_run<'s>(
    state: &'s SimState,
    headers: &HeaderMap,
    app_id: &str,
    run_id: &str,
) -> Result<(&'s App, &'s Run), ApiError> {
    let app = authorized_app(state, headers, app_id, RUN_MODES)?;
    let run = Uuid::parse_str(run_id)
        .ok()
        .and_then(|id| app.find_run(id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Workflow run not found.",
            )
        })?;
    Ok((app, run))
}

/// `GET /apps/{id}/workflow-runs/{run_id}`: served, and counted, so a test can show the exporter never needs it.
async fn run_detail(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((app_id, run_id)): Path<(String, String)>,
) -> ApiResult {
    let (app, run) = authorized_run(&state, &headers, &app_id, &run_id)?;
    Ok(Json(run_detail_json(&state.workspace, app, run)))
}

pub(crate) fn usage_json(spec: &ModelSpec, usage: &Usage) -> Value {
    let unit = ModelSpec::price_unit().to_string();
    json!({
        "prompt_tokens": usage.prompt_tokens, "prompt_unit_price": spec.prompt_unit_price().to_string(),
        "prompt_price_unit": unit, "prompt_price": price_str(usage.prompt_price),
        "completion_tokens": usage.completion_tokens,
        "completion_unit_price": spec.completion_unit_price().to_string(),
        "completion_price_unit": unit, "completion_price": price_str(usage.completion_price),
        "total_tokens": usage.total_tokens(), "total_price": price_str(usage.total_price()),
        "currency": spec.currency, "latency": usage.latency,
    })
}

/// A node execution as the console API shows it; `rows` takes `process_data` and `execution_metadata` from it.
pub(crate) fn node_json(ws: &Workspace, run: &Run, node: &Node) -> Value {
    let mut metadata = serde_json::Map::new();
    let mut truncated = false;
    let process_data = match &node.kind {
        NodeKind::Plain => Value::Null,
        NodeKind::Model { model, usage } => {
            let spec = &MODELS[*model];
            metadata.insert("total_tokens".into(), json!(usage.total_tokens()));
            metadata.insert("total_price".into(), json!(price_str(usage.total_price())));
            metadata.insert("currency".into(), json!(spec.currency));
            json!({
                "model_mode": "chat", "prompts": [{"role": "user", "text": "…", "files": []}],
                "usage": usage_json(spec, usage), "finish_reason": "stop",
                "model_provider": spec.provider, "model_name": spec.name,
            })
        }
        NodeKind::Truncated {
            model,
            total_tokens,
            total_price,
        } => {
            let spec = &MODELS[*model];
            truncated = true;
            metadata.insert("total_tokens".into(), json!(total_tokens));
            metadata.insert("total_price".into(), json!(price_str(*total_price)));
            metadata.insert("currency".into(), json!(spec.currency));
            // Dify ≥ 1.10 cuts big payloads; the model names survive, the usage object does not.
            json!({"model_mode": "chat", "model_provider": spec.provider, "model_name": spec.name})
        }
        NodeKind::Container {
            total_tokens,
            total_price,
            currency,
        } => {
            metadata.insert("total_tokens".into(), json!(total_tokens));
            metadata.insert("total_price".into(), json!(price_str(*total_price)));
            metadata.insert("currency".into(), json!(currency));
            Value::Null
        }
    };
    if let Some(parent) = &node.parent {
        let (id_key, index_key) = if parent.is_loop {
            ("loop_id", "loop_index")
        } else {
            ("iteration_id", "iteration_index")
        };
        metadata.insert(id_key.into(), json!(parent.node_id));
        metadata.insert(index_key.into(), json!(parent.index));
    }
    json!({
        "id": node.id, "index": node.index, "predecessor_node_id": null,
        "node_id": node.node_id, "node_type": node.node_type, "title": node.title,
        "inputs": {}, "process_data": process_data, "process_data_truncated": truncated,
        "outputs": {}, "outputs_truncated": false, "inputs_truncated": false,
        "status": node.status,
        "error": if node.status == "failed" { Value::from("Model invocation failed") } else { Value::Null },
        "elapsed_time": f64::from(node.elapsed_ms) / 1000.0,
        "execution_metadata": if metadata.is_empty() { Value::Null } else { Value::Object(metadata) },
        "extras": {}, "created_at": node.created_at,
        "finished_at": node.created_at + i64::from(node.elapsed_ms / 1000),
        "created_by_role": role(run.creator),
        "created_by_account": account_json(ws, run.creator),
        "created_by_end_user": end_user_json(ws, run.creator),
    })
}

async fn node_executions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((app_id, run_id)): Path<(String, String)>,
) -> ApiResult {
    let (app, run) = authorized_run(&state, &headers, &app_id, &run_id)?;
    let ws = &state.workspace;
    let data: Vec<Value> = generate_nodes(ws.seed, app.mode, run)
        .iter()
        .map(|n| node_json(ws, run, n))
        .collect();
    Ok(Json(json!({"data": data})))
}

/// A `YYYY-MM-DD HH:MM` parameter in the account timezone as Unix seconds, if present.
pub(crate) fn local_minute_param(
    ws: &Workspace,
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(raw) = q.get(name).filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let local = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M").map_err(|_| {
        ApiError::invalid_param(format!(
            "{name}: {raw} does not match the format YYYY-MM-DD HH:MM."
        ))
    })?;
    ws.tz
        .from_local_datetime(&local)
        .earliest()
        .map(|t| Some(t.timestamp()))
        .ok_or_else(|| {
            ApiError::invalid_param(format!("{name}: {raw} does not exist in {}.", ws.tz_name))
        })
}

/// `start`/`end` of the statistics endpoints, converted to a UTC `[start, end)` window.
fn stats_window(ws: &Workspace, q: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    Ok((
        local_minute_param(ws, q, "start")?.unwrap_or(i64::MIN),
        local_minute_param(ws, q, "end")?.unwrap_or(i64::MAX),
    ))
}

/// (timestamp, tokens, price) of everything the statistics endpoints count for an app: every message not sent
/// from the debugger, deleted conversations included (`api/controllers/console/app/statistic.py`).
fn stat_items(ws: &Workspace, app: &App, from: i64, to: i64) -> Vec<(i64, u64, Option<Decimal>)> {
    let inside = |t: i64| t >= from && t < to;
    if app.mode.has_runs() {
        // An advanced-chat run answers one message; its tokens are the run's. The exporter must not add these
        // to the same runs' node usage. Workflow apps have no messages.
        if app.mode == Mode::Workflow {
            return Vec::new();
        }
        return app
            .runs
            .iter()
            .filter(|r| inside(r.created_at))
            .map(|r| {
                let (tokens, price) = run_totals(&generate_nodes(ws.seed, app.mode, r));
                (r.created_at, tokens, Some(price))
            })
            .collect();
    }
    app.conversations
        .iter()
        .filter(|c| c.invoke_from != InvokeFrom::Debugger)
        .flat_map(|c| {
            let spec = &MODELS[c.model];
            app.conversation_messages(c)
                .iter()
                .filter(|m| inside(m.created_at))
                .map(move |m| (m.created_at, m.total_tokens(), m.price(spec)))
        })
        .collect()
}

/// Rows grouped by account-timezone day: (tokens, price sum or None when nothing was priced, messages).
fn by_local_day(
    ws: &Workspace,
    items: Vec<(i64, u64, Option<Decimal>)>,
) -> BTreeMap<NaiveDate, (u64, Option<Decimal>, u64)> {
    let mut days: BTreeMap<NaiveDate, (u64, Option<Decimal>, u64)> = BTreeMap::new();
    for (t, tokens, price) in items {
        let Some(day) = ws.tz.timestamp_opt(t, 0).single().map(|d| d.date_naive()) else {
            continue;
        };
        let row = days.entry(day).or_default();
        row.0 += tokens;
        if let Some(p) = price {
            row.1 = Some(row.1.unwrap_or_default() + p);
        }
        row.2 += 1;
    }
    days
}

async fn token_costs(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    statistics(
        &state,
        &headers,
        &app_id,
        query,
        |day, (tokens, price, _)| json!({"date": day, "token_count": tokens, "total_price": price.map(price_str), "currency": "USD"}),
    )
}

async fn daily_messages(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    statistics(
        &state,
        &headers,
        &app_id,
        query,
        |day, (_, _, count)| json!({"date": day, "message_count": count}),
    )
}

/// `GET /apps/{id}/workflow/statistics/token-costs` as `WorkflowDailyTokenCostStatistic`: the sum of
/// `workflow_runs.total_tokens` of the app's `app-run` runs per account-timezone day, and no price.
async fn workflow_token_costs(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    authenticate(&state, &headers)?;
    let ws = &state.workspace;
    let app = find_app(ws, &app_id)?;
    let (from, to) = stats_window(ws, &params(query)?)?;
    let items = app
        .runs
        .iter()
        .filter(|r| r.triggered_from == TriggeredFrom::AppRun)
        .filter(|r| r.created_at >= from && r.created_at < to)
        .map(|r| (r.created_at, run_facts(ws, app, r).total_tokens, None))
        .collect();
    let data: Vec<Value> = by_local_day(ws, items)
        .into_iter()
        .map(|(day, (tokens, _, _))| json!({"date": day.format("%Y-%m-%d").to_string(), "token_count": tokens}))
        .collect();
    Ok(Json(json!({"data": data})))
}

/// The statistics endpoints share everything but the row they write for each account-timezone day.
fn statistics(
    state: &SimState,
    headers: &HeaderMap,
    app_id: &str,
    query: Params,
    row: impl Fn(String, (u64, Option<Decimal>, u64)) -> Value,
) -> ApiResult {
    authenticate(state, headers)?;
    let ws = &state.workspace;
    let app = find_app(ws, app_id)?;
    let (from, to) = stats_window(ws, &params(query)?)?;
    let data: Vec<Value> = by_local_day(ws, stat_items(ws, app, from, to))
        .into_iter()
        .map(|(day, totals)| row(day.format("%Y-%m-%d").to_string(), totals))
        .collect();
    Ok(Json(json!({"data": data})))
}

fn date_param(
    q: &HashMap<String, String>,
    name: &str,
    default: NaiveDate,
) -> Result<NaiveDate, ApiError> {
    // An empty value (`?from=&to=`) means no bound, as the binary's banner suggests.
    q.get(name)
        .filter(|raw| !raw.is_empty())
        .map_or(Ok(default), |raw| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
                ApiError::invalid_param(format!("{name}: {raw} is not a date YYYY-MM-DD."))
            })
        })
}

async fn sim_truth(State(state): State<Arc<SimState>>, query: Params) -> ApiResult {
    let q = params(query)?;
    let from = date_param(&q, "from", NaiveDate::MIN)?;
    let to = date_param(&q, "to", NaiveDate::MAX)?;
    let source = match q.get("source").map_or("api", String::as_str) {
        "api" => Source::Api,
        "database" => Source::Database,
        other => {
            return Err(ApiError::invalid_param(format!(
                "source: {other} is not api or database."
            )));
        }
    };
    Ok(Json(json!({"records": state.truth(source, from, to)})))
}

async fn sim_stats(State(state): State<Arc<SimState>>) -> Json<super::SimStats> {
    Json(state.counters.snapshot())
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::price_str;

    #[test]
    fn prices_are_written_like_dify() {
        assert_eq!(price_str(Decimal::ZERO), "0E-7");
        assert_eq!(price_str(Decimal::new(25_825, 7)), "0.0025825");
        assert_eq!(price_str(Decimal::new(3, 3)), "0.0030000");
    }
}
