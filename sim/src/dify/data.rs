//! The simulated workspace: apps, users, workflow runs, conversations and messages generated from the seed,
//! plus the node executions of a run, generated lazily and deterministically from (seed, run id).
//!
//! Runs are kept compact (about 40 bytes each) because the benchmark asks for ~200,000 of them; their node
//! executions are regenerated on every request instead of being stored. Messages are compact too (about 40
//! bytes: prices are derived from tokens and the conversation's model), and a conversation is a range of its
//! app's messages. Every row a database loader needs is here (ids, creators, `invoke_from`, `is_deleted`,
//! Unix-second timestamps, `triggered_from`); see `sim/DIFY-SOURCES.md`. Wire shapes live in `routes` and
//! `chat`; what counts as usage lives in `truth`. This module only says what exists.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use super::config::SimConfig;

const SECONDS_PER_DAY: i64 = 86_400;

/// Dify's five app modes of 1.9-1.11 plus `agent` from its main branch, which the exporter does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Workflow,
    AdvancedChat,
    Chat,
    AgentChat,
    Completion,
    Agent,
}

impl Mode {
    pub(crate) const ALL: [Mode; 6] = [
        Mode::Workflow,
        Mode::AdvancedChat,
        Mode::Chat,
        Mode::AgentChat,
        Mode::Completion,
        Mode::Agent,
    ];

    pub(crate) fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Workflow => "workflow",
            Mode::AdvancedChat => "advanced-chat",
            Mode::Chat => "chat",
            Mode::AgentChat => "agent-chat",
            Mode::Completion => "completion",
            Mode::Agent => "agent",
        }
    }

    /// Workflow and advanced-chat apps have workflow runs; the others only have messages.
    pub(crate) fn has_runs(self) -> bool {
        matches!(self, Mode::Workflow | Mode::AdvancedChat)
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Workflow => "Workflow",
            Mode::AdvancedChat => "Chatflow",
            Mode::Chat => "Chatbot",
            Mode::AgentChat => "Agent chat",
            Mode::Completion => "Text generator",
            Mode::Agent => "Agent",
        }
    }
}

/// A model with Dify-style pricing: price = tokens × unit price × price unit, rounded to 7 decimals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelSpec {
    pub(crate) provider: &'static str,
    pub(crate) name: &'static str,
    /// (mantissa, scale) of the prompt unit price; a const table cannot hold `Decimal`s.
    prompt_unit: (i64, u32),
    completion_unit: (i64, u32),
    pub(crate) currency: &'static str,
}

/// Providers as Dify writes them: plugin path style, plain, empty (the exporter maps "" to `unknown`), one
/// free model whose prices come out as `"0E-7"`, and one model priced in another currency.
pub(crate) const MODELS: [ModelSpec; 6] = [
    ModelSpec {
        provider: "langgenius/openai/openai",
        name: "gpt-4o",
        prompt_unit: (250, 2),
        completion_unit: (1000, 2),
        currency: "USD",
    },
    ModelSpec {
        provider: "anthropic",
        name: "claude-3-5-sonnet-20241022",
        prompt_unit: (300, 2),
        completion_unit: (1500, 2),
        currency: "USD",
    },
    ModelSpec {
        provider: "",
        name: "in-house-llm",
        prompt_unit: (50, 2),
        completion_unit: (150, 2),
        currency: "USD",
    },
    ModelSpec {
        provider: "langgenius/openai/openai",
        name: "gpt-4o-mini",
        prompt_unit: (15, 2),
        completion_unit: (60, 2),
        currency: "USD",
    },
    ModelSpec {
        provider: "langgenius/ollama/ollama",
        name: "llama3.1:8b",
        prompt_unit: (0, 0),
        completion_unit: (0, 0),
        currency: "USD",
    },
    ModelSpec {
        provider: "langgenius/tongyi/tongyi",
        name: "qwen-max",
        prompt_unit: (2400, 2),
        completion_unit: (9600, 2),
        currency: "RMB",
    },
];

impl ModelSpec {
    pub(crate) fn prompt_unit_price(&self) -> Decimal {
        Decimal::new(self.prompt_unit.0, self.prompt_unit.1)
    }

    pub(crate) fn completion_unit_price(&self) -> Decimal {
        Decimal::new(self.completion_unit.0, self.completion_unit.1)
    }

    /// Unit prices are per million tokens, as in Dify's model YAML files.
    pub(crate) fn price_unit() -> Decimal {
        Decimal::new(1, 6)
    }

    /// Dify quantizes each price to 7 decimals, half up.
    pub(crate) fn price(tokens: u64, unit_price: Decimal) -> Decimal {
        (Decimal::from(tokens) * unit_price * Self::price_unit())
            .round_dp_with_strategy(7, RoundingStrategy::MidpointAwayFromZero)
    }
}

/// A console account of the workspace.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) email: String,
}

/// An end user of a published app; `session_id` is what the exporter reports as the user.
#[derive(Debug, Clone)]
pub(crate) struct EndUser {
    pub(crate) id: Uuid,
    pub(crate) kind: &'static str,
    pub(crate) session_id: String,
}

/// Who started a run: an end user, an account, or nobody Dify can still name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Creator {
    EndUser(u16),
    Account(u16),
    Nobody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunStatus {
    Succeeded,
    Failed,
    Stopped,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
        }
    }
}

/// `workflow_runs.triggered_from` (`WorkflowRunTriggeredFrom` in `api/models/enums.py`). Triggered runs
/// (webhook, schedule, plugin; Dify >= 1.10, workflow apps only) are executed with `invoke_from=service-api`, so
/// they are logged in `workflow-app-logs` but never listed by `workflow-runs?triggered_from=app-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TriggeredFrom {
    AppRun,
    Debugging,
    Webhook,
    Schedule,
    Plugin,
}

impl TriggeredFrom {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TriggeredFrom::AppRun => "app-run",
            TriggeredFrom::Debugging => "debugging",
            TriggeredFrom::Webhook => "webhook",
            TriggeredFrom::Schedule => "schedule",
            TriggeredFrom::Plugin => "plugin",
        }
    }
}

/// One workflow run, compact: its nodes are regenerated from `id` when asked for.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) id: Uuid,
    /// Unix seconds (UTC).
    pub(crate) created_at: i64,
    pub(crate) status: RunStatus,
    /// `created_by_role` + `created_by`.
    pub(crate) creator: Creator,
    pub(crate) triggered_from: TriggeredFrom,
}

/// `messages.invoke_from` / `conversations.invoke_from` (`InvokeFrom` in `api/core/app/entities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvokeFrom {
    WebApp,
    ServiceApi,
    Explore,
    Debugger,
}

impl InvokeFrom {
    /// The column value, for whoever loads the world into Dify's tables.
    #[allow(
        dead_code,
        reason = "the database loader writes messages.invoke_from with it"
    )]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InvokeFrom::WebApp => "web-app",
            InvokeFrom::ServiceApi => "service-api",
            InvokeFrom::Explore => "explore",
            InvokeFrom::Debugger => "debugger",
        }
    }

    /// The `from_source` column: `api` for end users, `console` for accounts (explore and debugger alike).
    pub(crate) fn source(self) -> &'static str {
        match self {
            InvokeFrom::WebApp | InvokeFrom::ServiceApi => "api",
            InvokeFrom::Explore | InvokeFrom::Debugger => "console",
        }
    }
}

/// One conversation (`conversations` row). Its messages are `App::messages[first_message..][..message_count]`.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub(crate) id: Uuid,
    /// `from_end_user_id` (end user) or `from_account_id` (account).
    pub(crate) sender: Creator,
    pub(crate) invoke_from: InvokeFrom,
    /// Index into [`MODELS`] of the conversation's own `model_config` (the app's config when it was created).
    pub(crate) model: usize,
    pub(crate) is_deleted: bool,
    pub(crate) first_message: u32,
    pub(crate) message_count: u32,
}

// `message_tokens` is Dify's own column name; keeping it makes the wire and table mapping obvious.
#[allow(clippy::struct_field_names)]
/// One message (`messages` row); its conversation is the one whose range holds it, and its sender,
/// invoke_from and model are that conversation's.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) id: Uuid,
    /// Unix seconds (UTC); strictly increasing within a conversation.
    pub(crate) created_at: i64,
    pub(crate) message_tokens: u32,
    pub(crate) answer_tokens: u32,
    /// False when the call failed before the model answered: no `metadata.usage`, 0 tokens, price 0, `USD`.
    pub(crate) answered: bool,
}

impl Message {
    /// `messages.total_price`: `None` (NULL) for a model Dify has no pricing for.
    pub(crate) fn price(&self, spec: &ModelSpec) -> Option<Decimal> {
        if !self.answered {
            return Some(Decimal::ZERO);
        }
        if spec.provider.is_empty() {
            return None;
        }
        Some(self.prompt_price(spec) + self.completion_price(spec))
    }

    pub(crate) fn prompt_price(&self, spec: &ModelSpec) -> Decimal {
        ModelSpec::price(u64::from(self.message_tokens), spec.prompt_unit_price())
    }

    pub(crate) fn completion_price(&self, spec: &ModelSpec) -> Decimal {
        ModelSpec::price(u64::from(self.answer_tokens), spec.completion_unit_price())
    }

    /// `messages.currency`: Dify writes `USD` when it creates the row and the model's currency once it answered.
    pub(crate) fn currency(&self, spec: &ModelSpec) -> &'static str {
        if self.answered { spec.currency } else { "USD" }
    }

    pub(crate) fn total_tokens(&self) -> u64 {
        u64::from(self.message_tokens) + u64::from(self.answer_tokens)
    }
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) created_at: i64,
    /// Index into [`MODELS`] of the app's current `model_config` model (message-based modes only).
    pub(crate) model: Option<usize>,
    /// Production runs (app-run and triggered), newest first, with distinct `created_at` so a cursor never
    /// skips a tie.
    pub(crate) runs: Vec<Run>,
    /// Production runs archived by Dify (`SimConfig::archived_before`), newest first: only in
    /// `workflow_archive_logs`.
    pub(crate) archived_runs: Vec<Run>,
    /// Editor test runs (`triggered_from=debugging`), newest first; they must never count.
    pub(crate) debug_runs: Vec<Run>,
    /// Run id -> (is debug, index in its list).
    pub(crate) run_index: HashMap<Uuid, (bool, usize)>,
    /// Conversations of message-based apps, oldest first.
    pub(crate) conversations: Vec<Conversation>,
    pub(crate) conversation_index: HashMap<Uuid, u32>,
    /// Messages grouped by conversation, each group oldest first.
    pub(crate) messages: Vec<Message>,
}

/// An advanced-chat run answers one message of one conversation; their ids derive from the run's.
pub(crate) fn run_conversation_id(run: Uuid) -> Uuid {
    Uuid::from_u128(run.as_u128() ^ 0xC0)
}

pub(crate) fn run_message_id(run: Uuid) -> Uuid {
    Uuid::from_u128(run.as_u128() ^ 0x3E)
}

impl App {
    /// The run behind a conversation of an advanced-chat app.
    pub(crate) fn run_of_conversation(&self, conversation: &Conversation) -> Option<&Run> {
        self.find_run(run_conversation_id(conversation.id))
    }

    pub(crate) fn conversation_messages(&self, conversation: &Conversation) -> &[Message] {
        let start = conversation.first_message as usize;
        self.messages
            .get(start..start + conversation.message_count as usize)
            .unwrap_or_default()
    }

    pub(crate) fn find_conversation(&self, id: Uuid) -> Option<(u32, &Conversation)> {
        let &i = self.conversation_index.get(&id)?;
        self.conversations.get(i as usize).map(|c| (i, c))
    }

    pub(crate) fn find_run(&self, id: Uuid) -> Option<&Run> {
        let &(debug, i) = self.run_index.get(&id)?;
        if debug {
            self.debug_runs.get(i)
        } else {
            self.runs.get(i)
        }
    }
}

/// The whole generated workspace; immutable once built, shared by every request.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub(crate) seed: u64,
    pub(crate) id: Uuid,
    pub(crate) accounts: Vec<Account>,
    pub(crate) end_users: Vec<EndUser>,
    /// Newest first, as `/apps` lists them.
    pub(crate) apps: Vec<App>,
    pub(crate) app_index: HashMap<Uuid, usize>,
    pub(crate) tz: Tz,
    pub(crate) tz_name: String,
}

fn uuid_from(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
}

impl Workspace {
    /// Generates the workspace; `tz` is the already validated account timezone, `modes` the validated modes to
    /// generate apps for, `now` the Unix time messages "after the window" must not pass.
    pub(crate) fn generate(config: &SimConfig, tz: Tz, app_modes: &[Mode], now: i64) -> Workspace {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let workspace_id = uuid_from(&mut rng);
        let (accounts, end_users) = generate_people(&mut rng);
        let first = day_start(config.first_day);
        let plan = MessagePlan {
            first,
            days: config.days,
            per_day: config.runs_per_app_per_day,
            per_conversation: config.messages_per_conversation.max(1),
            long_conversation: 0,
            after_window: (first + i64::from(config.days) * SECONDS_PER_DAY).min(now - 1),
            now,
            ordinal: 0,
        };
        let mut apps = Vec::new();
        let mut message_app_no = 0usize;
        // Message-based apps cycle over these models so that even one app per mode covers path-style, plain
        // and "" providers; the second chat app is priced in RMB.
        let chat_models = [0usize, 1, 2, 3];
        for &mode in app_modes {
            for n in 0..config.apps_per_mode {
                let id = uuid_from(&mut rng);
                let model = if mode.has_runs() {
                    None
                } else if mode == Mode::Chat && n == 1 {
                    Some(RMB_MODEL)
                } else {
                    message_app_no += 1;
                    Some(chat_models[(message_app_no - 1) % chat_models.len()])
                };
                let created_at =
                    first - 30 * SECONDS_PER_DAY + i64::try_from(apps.len()).unwrap_or(0) * 600;
                let mut app = App {
                    id,
                    name: format!("{} {}", mode.label(), n + 1),
                    mode,
                    created_at,
                    model,
                    runs: Vec::new(),
                    archived_runs: Vec::new(),
                    debug_runs: Vec::new(),
                    run_index: HashMap::new(),
                    conversations: Vec::new(),
                    conversation_index: HashMap::new(),
                    messages: Vec::new(),
                };
                if mode.has_runs() {
                    generate_runs(&mut app, config, &mut rng, first);
                } else {
                    let long = if mode == Mode::Chat && n == 0 {
                        config.long_conversation_messages
                    } else {
                        0
                    };
                    generate_conversations(
                        &mut app,
                        &MessagePlan {
                            long_conversation: long,
                            ordinal: n as usize,
                            ..plan
                        },
                        &mut rng,
                    );
                }
                apps.push(app);
            }
        }
        apps.sort_by_key(|a| std::cmp::Reverse(a.created_at));
        let app_index = apps.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        Workspace {
            seed: config.seed,
            id: workspace_id,
            accounts,
            end_users,
            apps,
            app_index,
            tz,
            tz_name: config.account_timezone.clone(),
        }
    }

    pub(crate) fn app(&self, id: &str) -> Option<&App> {
        let id = Uuid::parse_str(id).ok()?;
        self.app_index.get(&id).and_then(|&i| self.apps.get(i))
    }

    pub(crate) fn owner(&self) -> &Account {
        &self.accounts[0]
    }

    /// The user string the exporter must report for a run: session id, else email, else "".
    pub(crate) fn user_of(&self, creator: Creator) -> &str {
        match creator {
            Creator::EndUser(i) => self
                .end_users
                .get(usize::from(i))
                .map_or("", |u| u.session_id.as_str()),
            Creator::Account(i) => self
                .accounts
                .get(usize::from(i))
                .map_or("", |a| a.email.as_str()),
            Creator::Nobody => "",
        }
    }
}

/// The workspace's three accounts and five end users (three service-API users, two web-app sessions).
fn generate_people(rng: &mut ChaCha8Rng) -> (Vec<Account>, Vec<EndUser>) {
    let accounts = ["owner", "editor", "developer"]
        .iter()
        .map(|who| Account {
            id: uuid_from(rng),
            name: format!("Sim {who}"),
            email: format!("{who}@example.com"),
        })
        .collect();
    let end_users = [
        ("service_api", "customer-0042".to_owned()),
        ("service_api", "alice@example.org".to_owned()),
        ("browser", String::new()),
        ("browser", String::new()),
        ("service_api", "bob".to_owned()),
    ]
    .into_iter()
    .map(|(kind, session)| {
        let id = uuid_from(rng);
        // Web-app sessions are opaque random strings in Dify.
        let session_id = if session.is_empty() {
            uuid_from(rng).simple().to_string()
        } else {
            session
        };
        EndUser {
            id,
            kind,
            session_id,
        }
    })
    .collect();

    (accounts, end_users)
}

/// Draws a second of the day not used yet by this app's list, so timestamps never tie.
fn distinct_second(
    rng: &mut ChaCha8Rng,
    used: &mut HashSet<i64>,
    base: i64,
    range: std::ops::Range<i64>,
) -> i64 {
    loop {
        let t = base + rng.random_range(range.clone());
        if used.insert(t) {
            return t;
        }
    }
}

fn generate_runs(app: &mut App, config: &SimConfig, rng: &mut ChaCha8Rng, first: i64) {
    let mut used = HashSet::new();
    let mut used_debug = HashSet::new();
    for d in 0..i64::from(config.days) {
        let base = first + d * SECONDS_PER_DAY;
        for k in 0..config.runs_per_app_per_day {
            // The first run of each day starts at 23:59:5x, so its nodes run after midnight while its usage
            // still belongs to the day the run was created.
            let created_at = if k == 0 {
                distinct_second(rng, &mut used, base, 86_390..86_400)
            } else {
                distinct_second(rng, &mut used, base, 0..86_380)
            };
            let roll: f64 = rng.random();
            let creator = if roll < 0.5 {
                Creator::EndUser(rng.random_range(0..5))
            } else if roll < 0.85 {
                Creator::Account(rng.random_range(0..3))
            } else {
                Creator::Nobody
            };
            // Workflow apps (only they can start on a trigger node) get some triggered runs: plugin and
            // webhook runs as an end user (Dify creates one per app for triggers), schedules as the owner.
            let (triggered_from, creator) = if app.mode == Mode::Workflow && rng.random_bool(0.12) {
                match rng.random_range(0..3u8) {
                    0 => (
                        TriggeredFrom::Webhook,
                        Creator::EndUser(rng.random_range(0..5)),
                    ),
                    1 => (TriggeredFrom::Schedule, Creator::Account(0)),
                    _ => (
                        TriggeredFrom::Plugin,
                        Creator::EndUser(rng.random_range(0..5)),
                    ),
                }
            } else {
                (TriggeredFrom::AppRun, creator)
            };
            let roll: f64 = rng.random();
            let status = if roll < 0.1 {
                RunStatus::Failed
            } else if roll < 0.13 {
                RunStatus::Stopped
            } else {
                RunStatus::Succeeded
            };
            app.runs.push(Run {
                id: uuid_from(rng),
                created_at,
                status,
                creator,
                triggered_from,
            });
        }
        for _ in 0..config.runs_per_app_per_day.div_ceil(3) {
            let created_at = distinct_second(rng, &mut used_debug, base, 0..86_400);
            let creator = Creator::Account(rng.random_range(0..3));
            app.debug_runs.push(Run {
                id: uuid_from(rng),
                created_at,
                status: RunStatus::Succeeded,
                creator,
                triggered_from: TriggeredFrom::Debugging,
            });
        }
    }
    app.runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    if let Some(day) = config
        .archived_before
        .filter(|_| app.mode == Mode::Workflow)
    {
        let cut = day_start(day);
        let kept = app.runs.partition_point(|r| r.created_at >= cut);
        app.archived_runs = app.runs.split_off(kept);
    }
    app.debug_runs
        .sort_by_key(|r| std::cmp::Reverse(r.created_at));
    app.run_index = app
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, (false, i)))
        .collect();
    app.run_index.extend(
        app.debug_runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, (true, i))),
    );
    if app.mode == Mode::AdvancedChat {
        conversations_from_runs(app);
    }
}

/// An advanced-chat app's conversations: one per run, debugger ones from the editor's runs. Their message's
/// tokens and price are the run's, computed from its nodes when served (placeholders here), and they never
/// count as messages in either truth: the runs do.
fn conversations_from_runs(app: &mut App) {
    let runs = app.runs.iter().chain(&app.debug_runs).rev();
    let (conversations, messages): (Vec<Conversation>, Vec<Message>) = runs
        .enumerate()
        .map(|(i, run)| {
            let invoke_from = match (run.triggered_from, run.creator) {
                (TriggeredFrom::Debugging, _) => InvokeFrom::Debugger,
                (_, Creator::EndUser(u)) if u % 2 == 1 => InvokeFrom::WebApp,
                (_, Creator::Account(_)) => InvokeFrom::Explore,
                _ => InvokeFrom::ServiceApi,
            };
            let conversation = Conversation {
                id: run_conversation_id(run.id),
                sender: run.creator,
                invoke_from,
                model: 0,
                is_deleted: false,
                first_message: u32::try_from(i).unwrap_or(u32::MAX),
                message_count: 1,
            };
            let message = Message {
                id: run_message_id(run.id),
                created_at: run.created_at,
                message_tokens: 0,
                answer_tokens: 0,
                answered: true,
            };
            (conversation, message)
        })
        .unzip();
    app.conversation_index = conversations
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    app.conversations = conversations;
    app.messages = messages;
}

/// What every message-based app's conversations are generated from.
#[derive(Debug, Clone, Copy)]
struct MessagePlan {
    first: i64,
    days: u32,
    per_day: u32,
    per_conversation: u32,
    /// Messages of one extra end-user conversation spread evenly over all days (0: none).
    long_conversation: u32,
    /// Start of the day after the window (capped at `now`): where "today's" messages go.
    after_window: i64,
    now: i64,
    /// Which app of its mode this is (0-based).
    ordinal: usize,
}

/// Index into [`MODELS`] of `qwen-max`, priced in RMB.
const RMB_MODEL: usize = 5;

/// The kinds of conversation, cycled so that even five conversations per app cover every case Dify has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConversationKind {
    /// Service API end user, the app's current model.
    EndUser,
    /// An account on the explore page.
    Explore,
    /// A web-app end user on an older model, with one more message after the window.
    OlderModelUpdatedLater,
    /// An account in the editor's debugger.
    Debugger,
    /// An end user's conversation the admin deleted; its messages still count in Dify's statistics.
    Deleted,
}

const CONVERSATION_KINDS: [ConversationKind; 5] = [
    ConversationKind::EndUser,
    ConversationKind::Explore,
    ConversationKind::OlderModelUpdatedLater,
    ConversationKind::Debugger,
    ConversationKind::Deleted,
];

/// An end user of the wanted kind (`browser` for web-app sessions, `service_api` otherwise).
fn end_user_of_kind(rng: &mut ChaCha8Rng, web_app: bool) -> u16 {
    // Indices into `Workspace::end_users`: 2 and 3 are browser sessions, 0, 1 and 4 service API users.
    if web_app {
        rng.random_range(2..4)
    } else {
        [0u16, 1, 4][rng.random_range(0..3usize)]
    }
}

fn generate_conversations(app: &mut App, plan: &MessagePlan, rng: &mut ChaCha8Rng) {
    let Some(current) = app.model else {
        return;
    };
    let older = if current == 3 { 0 } else { 3 };
    let mut used = HashSet::new();
    let mut times = Vec::new();
    for d in 0..i64::from(plan.days) {
        let base = plan.first + d * SECONDS_PER_DAY;
        for _ in 0..plan.per_day {
            times.push(distinct_second(rng, &mut used, base, 0..86_400));
        }
    }
    times.sort_unstable();
    // A completion app answers each request in a conversation of its own.
    let size = if app.mode == Mode::Completion {
        1
    } else {
        plan.per_conversation as usize
    };
    for (k, chunk) in times.chunks(size).enumerate() {
        // Each app of a mode starts the cycle one kind later, so small worlds still show every kind.
        let kind = CONVERSATION_KINDS[(k + plan.ordinal) % CONVERSATION_KINDS.len()];
        let (sender, invoke_from) = match kind {
            ConversationKind::EndUser | ConversationKind::Deleted => (
                Creator::EndUser(end_user_of_kind(rng, false)),
                InvokeFrom::ServiceApi,
            ),
            ConversationKind::OlderModelUpdatedLater => (
                Creator::EndUser(end_user_of_kind(rng, true)),
                InvokeFrom::WebApp,
            ),
            ConversationKind::Explore => (
                Creator::Account(rng.random_range(0..3)),
                InvokeFrom::Explore,
            ),
            ConversationKind::Debugger => (
                Creator::Account(rng.random_range(0..3)),
                InvokeFrom::Debugger,
            ),
        };
        let model = if kind == ConversationKind::OlderModelUpdatedLater {
            older
        } else {
            current
        };
        let mut at: Vec<i64> = chunk.to_vec();
        if kind == ConversationKind::OlderModelUpdatedLater && app.mode != Mode::Completion {
            let later = (plan.after_window + rng.random_range(0..86_400)).min(plan.now - 1);
            at.push(later.max(chunk[chunk.len() - 1] + 1));
        }
        push_conversation(
            app,
            rng,
            (sender, invoke_from, model),
            kind == ConversationKind::Deleted,
            &at,
        );
    }
    if plan.long_conversation > 0 {
        let span = i64::from(plan.days) * SECONDS_PER_DAY;
        let n = i64::from(plan.long_conversation);
        let at: Vec<i64> = (0..n)
            .map(|k| plan.first + (2 * k + 1) * span / (2 * n))
            .collect();
        push_conversation(
            app,
            rng,
            (Creator::EndUser(0), InvokeFrom::ServiceApi, current),
            false,
            &at,
        );
    }
    app.conversation_index = app
        .conversations
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
}

/// Adds one conversation with a message at each of `at` (strictly increasing Unix seconds).
fn push_conversation(
    app: &mut App,
    rng: &mut ChaCha8Rng,
    (sender, invoke_from, model): (Creator, InvokeFrom, usize),
    is_deleted: bool,
    at: &[i64],
) {
    app.conversations.push(Conversation {
        id: uuid_from(rng),
        sender,
        invoke_from,
        model,
        is_deleted,
        first_message: u32::try_from(app.messages.len()).unwrap_or(u32::MAX),
        message_count: u32::try_from(at.len()).unwrap_or(u32::MAX),
    });
    for &created_at in at {
        app.messages.push(generate_message(rng, created_at));
    }
}

/// One message; one in twenty failed before the model answered.
pub(crate) fn generate_message(rng: &mut ChaCha8Rng, created_at: i64) -> Message {
    let answered = !rng.random_bool(0.05);
    let (message_tokens, answer_tokens) = if answered {
        (rng.random_range(10..3000u32), rng.random_range(1..800u32))
    } else {
        (0, 0)
    };
    Message {
        id: uuid_from(rng),
        created_at,
        message_tokens,
        answer_tokens,
        answered,
    }
}

/// The usage object of a model node (docs/console-api.md#the-usage-object).
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) prompt_price: Decimal,
    pub(crate) completion_price: Decimal,
    pub(crate) latency: f64,
}

impl Usage {
    pub(crate) fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub(crate) fn total_price(&self) -> Decimal {
        self.prompt_price + self.completion_price
    }
}

/// What a node execution carries, which decides whether and how it counts.
#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// start, end, answer, code, if-else: no usage.
    Plain,
    /// llm, question-classifier, parameter-extractor with a full usage object.
    Model { model: usize, usage: Usage },
    /// A model node whose `process_data` was truncated: model names kept, usage only in `execution_metadata`.
    Truncated {
        model: usize,
        total_tokens: u64,
        total_price: Decimal,
    },
    /// iteration or loop: sums of its children, never counted.
    Container {
        total_tokens: u64,
        total_price: Decimal,
        currency: &'static str,
    },
}

/// Where a child of an iteration or loop sits.
#[derive(Debug, Clone)]
pub(crate) struct Parent {
    pub(crate) node_id: String,
    pub(crate) is_loop: bool,
    pub(crate) index: u32,
}

// `node_id` and `node_type` are Dify's own field names; keeping them makes the wire mapping obvious.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: Uuid,
    pub(crate) index: u32,
    pub(crate) node_id: String,
    pub(crate) node_type: &'static str,
    pub(crate) title: String,
    pub(crate) status: &'static str,
    pub(crate) created_at: i64,
    pub(crate) elapsed_ms: u32,
    pub(crate) kind: NodeKind,
    pub(crate) parent: Option<Parent>,
}

impl Node {
    /// The (tokens, price) this node adds to the run's own total (containers excluded, they repeat).
    pub(crate) fn counted(&self) -> Option<(u64, Decimal)> {
        match &self.kind {
            NodeKind::Model { usage, .. } => Some((usage.total_tokens(), usage.total_price())),
            NodeKind::Truncated {
                total_tokens,
                total_price,
                ..
            } => Some((*total_tokens, *total_price)),
            NodeKind::Plain | NodeKind::Container { .. } => None,
        }
    }
}

/// Builds nodes in execution order, advancing a clock so that a run's nodes take some seconds.
struct NodeBuilder {
    rng: ChaCha8Rng,
    clock: i64,
    nodes: Vec<Node>,
}

impl NodeBuilder {
    fn push(
        &mut self,
        node_type: &'static str,
        title: String,
        kind: NodeKind,
        parent: Option<Parent>,
    ) -> usize {
        let index = u32::try_from(self.nodes.len() + 1).unwrap_or(u32::MAX);
        let id = uuid_from(&mut self.rng);
        self.clock += self.rng.random_range(0..4);
        let elapsed_ms = self.rng.random_range(5..4000u32);
        self.nodes.push(Node {
            id,
            index,
            node_id: format!("{node_type}-{index}"),
            node_type,
            title,
            status: "succeeded",
            created_at: self.clock,
            elapsed_ms,
            kind,
            parent,
        });
        self.nodes.len() - 1
    }

    fn model_kind(&mut self) -> NodeKind {
        let model = self.rng.random_range(0..MODELS.len());
        let spec = MODELS[model];
        let (prompt_tokens, completion_tokens) = if self.rng.random_bool(0.06) {
            // Some model plugins report no tokens at all; the call still counts as a request.
            (0, 0)
        } else {
            (
                self.rng.random_range(20..4000u64),
                self.rng.random_range(0..900u64),
            )
        };
        let prompt_price = ModelSpec::price(prompt_tokens, spec.prompt_unit_price());
        let completion_price = ModelSpec::price(completion_tokens, spec.completion_unit_price());
        if self.rng.random_bool(0.08) {
            return NodeKind::Truncated {
                model,
                total_tokens: prompt_tokens + completion_tokens,
                total_price: prompt_price + completion_price,
            };
        }
        let latency = f64::from(self.rng.random_range(100..5000u32)) / 1000.0;
        NodeKind::Model {
            model,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                prompt_price,
                completion_price,
                latency,
            },
        }
    }

    fn model_node(&mut self, parent: Option<Parent>) {
        let node_type = match self.rng.random_range(0..10) {
            0..=5 => "llm",
            6 | 7 => "question-classifier",
            _ => "parameter-extractor",
        };
        let kind = self.model_kind();
        let title = match node_type {
            "llm" => "LLM",
            "question-classifier" => "Question Classifier",
            _ => "Parameter Extractor",
        };
        self.push(node_type, title.to_owned(), kind, parent);
    }

    /// An iteration or loop container followed by its children; the container carries their sums.
    fn container(&mut self, is_loop: bool) {
        let node_type = if is_loop { "loop" } else { "iteration" };
        let title = if is_loop { "Loop" } else { "Iteration" };
        let at = self.push(
            node_type,
            title.to_owned(),
            NodeKind::Container {
                total_tokens: 0,
                total_price: Decimal::ZERO,
                currency: "USD",
            },
            None,
        );
        let container_id = self.nodes[at].node_id.clone();
        let rounds = self.rng.random_range(1..=3u32);
        let first_child = self.nodes.len();
        for round in 0..rounds {
            let parent = Parent {
                node_id: container_id.clone(),
                is_loop,
                index: round,
            };
            if self.rng.random_bool(0.3) {
                self.push(
                    "code",
                    "Code".to_owned(),
                    NodeKind::Plain,
                    Some(parent.clone()),
                );
            }
            self.model_node(Some(parent));
        }
        let (mut tokens, mut price, mut currency) = (0, Decimal::ZERO, None);
        for child in &self.nodes[first_child..] {
            if let Some((t, p)) = child.counted() {
                tokens += t;
                price += p;
                if let NodeKind::Model { model, .. } | NodeKind::Truncated { model, .. } =
                    child.kind
                {
                    currency.get_or_insert(MODELS[model].currency);
                }
            }
        }
        self.nodes[at].kind = NodeKind::Container {
            total_tokens: tokens,
            total_price: price,
            currency: currency.unwrap_or("USD"),
        };
    }
}

/// The node executions of one run, always the same for the same (seed, run id).
pub(crate) fn generate_nodes(seed: u64, mode: Mode, run: &Run) -> Vec<Node> {
    let bytes = run.id.as_bytes();
    let mut key = [0u8; 8];
    key.copy_from_slice(&bytes[..8]);
    let rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from_le_bytes(key));
    let mut b = NodeBuilder {
        rng,
        clock: run.created_at,
        nodes: Vec::new(),
    };
    b.push("start", "Start".to_owned(), NodeKind::Plain, None);
    let models = b.rng.random_range(1..=3);
    for _ in 0..models {
        if b.rng.random_bool(0.4) {
            let (t, title) = if b.rng.random_bool(0.5) {
                ("code", "Code")
            } else {
                ("if-else", "IF/ELSE")
            };
            b.push(t, title.to_owned(), NodeKind::Plain, None);
        }
        b.model_node(None);
    }
    if b.rng.random_bool(0.35) {
        b.container(false);
    }
    if b.rng.random_bool(0.25) {
        b.container(true);
    }
    match run.status {
        RunStatus::Succeeded => {
            let (t, title) = if mode == Mode::AdvancedChat {
                ("answer", "Answer")
            } else {
                ("end", "End")
            };
            b.push(t, title.to_owned(), NodeKind::Plain, None);
        }
        // A failed or stopped run ends on its last node, which still used (and paid for) its tokens.
        RunStatus::Failed => {
            if let Some(last) = b.nodes.last_mut() {
                last.status = "failed";
            }
        }
        RunStatus::Stopped => {
            if let Some(last) = b.nodes.last_mut() {
                last.status = "stopped";
            }
        }
    }
    b.nodes
}

/// Sum of the counted nodes of a run: what Dify shows as the run's `total_tokens`.
pub(crate) fn run_totals(nodes: &[Node]) -> (u64, Decimal) {
    nodes
        .iter()
        .filter_map(Node::counted)
        .fold((0, Decimal::ZERO), |(t, p), (nt, np)| (t + nt, p + np))
}

/// UTC day of a Unix timestamp.
pub(crate) fn utc_day(ts: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(ts, 0).map_or(NaiveDate::MIN, |t| t.date_naive())
}
