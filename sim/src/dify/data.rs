//! The simulated workspace: apps, users, workflow runs and chat messages generated from the seed, plus the
//! node executions of a run, generated lazily and deterministically from (seed, run id).
//!
//! Runs are kept compact (about 40 bytes each) because the benchmark asks for ~200,000 of them; their node
//! executions are regenerated on every request instead of being stored. Wire shapes live in `routes`; what
//! counts as usage lives in `truth`. This module only says what exists.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use super::config::SimConfig;

const SECONDS_PER_DAY: i64 = 86_400;

/// The five Dify app modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Workflow,
    AdvancedChat,
    Chat,
    AgentChat,
    Completion,
}

impl Mode {
    pub(crate) const ALL: [Mode; 5] = [
        Mode::Workflow,
        Mode::AdvancedChat,
        Mode::Chat,
        Mode::AgentChat,
        Mode::Completion,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Workflow => "workflow",
            Mode::AdvancedChat => "advanced-chat",
            Mode::Chat => "chat",
            Mode::AgentChat => "agent-chat",
            Mode::Completion => "completion",
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
            Mode::AgentChat => "Agent",
            Mode::Completion => "Text generator",
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

/// One workflow run, compact: its nodes are regenerated from `id` when asked for.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) id: Uuid,
    pub(crate) created_at: i64,
    pub(crate) status: RunStatus,
    pub(crate) creator: Creator,
    pub(crate) debug: bool,
}

/// One message of a chat-type app, as the statistics endpoints see it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) created_at: i64,
    pub(crate) tokens: u64,
    /// `None` for an unpriced message: a day of only those gives `total_price: null`.
    pub(crate) price: Option<Decimal>,
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) created_at: i64,
    /// Index into [`MODELS`] of the app's `model_config` model (chat types only).
    pub(crate) model: Option<usize>,
    /// Production runs, newest first, with distinct `created_at` so a cursor never skips a tie.
    pub(crate) runs: Vec<Run>,
    /// Editor test runs (`triggered_from=debugging`), newest first; they must never count.
    pub(crate) debug_runs: Vec<Run>,
    /// Run id -> (is debug, index in its list).
    pub(crate) run_index: HashMap<Uuid, (bool, usize)>,
    /// Chat-type messages, oldest first.
    pub(crate) messages: Vec<Message>,
}

impl App {
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
    /// Generates the workspace; `tz` is the already validated account timezone.
    pub(crate) fn generate(config: &SimConfig, tz: Tz) -> Workspace {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let workspace_id = uuid_from(&mut rng);
        let accounts = ["owner", "editor", "developer"]
            .iter()
            .map(|who| Account {
                id: uuid_from(&mut rng),
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
            let id = uuid_from(&mut rng);
            // Web-app sessions are opaque random strings in Dify.
            let session_id = if session.is_empty() {
                uuid_from(&mut rng).simple().to_string()
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

        let first = day_start(config.first_day);
        let mut apps = Vec::new();
        let mut chat_type_no = 0usize;
        // Chat types cycle over these models so that even one app per mode covers path-style, plain and "".
        let chat_models = [0usize, 1, 2, 3];
        for mode in Mode::ALL {
            for n in 0..config.apps_per_mode {
                let id = uuid_from(&mut rng);
                let model = if mode.has_runs() {
                    None
                } else {
                    chat_type_no += 1;
                    Some(chat_models[(chat_type_no - 1) % chat_models.len()])
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
                    debug_runs: Vec::new(),
                    run_index: HashMap::new(),
                    messages: Vec::new(),
                };
                if mode.has_runs() {
                    generate_runs(&mut app, config, &mut rng, first);
                } else {
                    generate_messages(&mut app, config, &mut rng, first);
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
                debug: false,
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
                debug: true,
            });
        }
    }
    app.runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
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
}

fn generate_messages(app: &mut App, config: &SimConfig, rng: &mut ChaCha8Rng, first: i64) {
    let Some(spec) = app.model.and_then(|m| MODELS.get(m)) else {
        return;
    };
    let mut used = HashSet::new();
    for d in 0..i64::from(config.days) {
        let base = first + d * SECONDS_PER_DAY;
        for _ in 0..config.runs_per_app_per_day {
            let created_at = distinct_second(rng, &mut used, base, 0..86_400);
            let prompt = rng.random_range(10..3000u64);
            let completion = rng.random_range(0..800u64);
            // The empty-provider model has no pricing in Dify here, and one message in ten is unpriced.
            let price = if spec.provider.is_empty() || rng.random_bool(0.1) {
                None
            } else {
                Some(
                    ModelSpec::price(prompt, spec.prompt_unit_price())
                        + ModelSpec::price(completion, spec.completion_unit_price()),
                )
            };
            app.messages.push(Message {
                created_at,
                tokens: prompt + completion,
                price,
            });
        }
    }
    app.messages.sort_by_key(|m| m.created_at);
}

/// The usage object of a model node (DIFY-API.md section 3).
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
