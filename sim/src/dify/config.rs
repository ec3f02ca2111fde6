//! Configuration of the simulated Dify: which version's auth rules it plays, what workspace it generates and
//! which faults it injects. Plain data with public fields and a `Default`, so a test states only what it cares
//! about (`SimConfig { seed: 7, ..SimConfig::default() }`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};

/// Which Dify authentication behaviour to reproduce (docs/console-api.md#authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Tokens in the login body, `Authorization: Bearer`, no CSRF.
    V1_9_1,
    /// Tokens only as cookies; every console call needs the CSRF header and cookie.
    #[default]
    V1_9_2,
    /// As 1.9.2, and the login password must be base64 of the real one.
    V1_11_2,
    /// As 1.11.2, and the admin API key (`Bearer <key>` + `X-WORKSPACE-ID`) is enabled and skips CSRF.
    AdminKey,
}

impl AuthMode {
    /// Whether this version delivers tokens as cookies and enforces CSRF (1.9.2 and later).
    #[must_use]
    pub fn uses_cookies(self) -> bool {
        !matches!(self, AuthMode::V1_9_1)
    }

    /// Whether the login password arrives base64-encoded (1.11.2 and later).
    #[must_use]
    pub fn base64_password(self) -> bool {
        matches!(self, AuthMode::V1_11_2 | AuthMode::AdminKey)
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::V1_9_1 => "1.9.1",
            AuthMode::V1_9_2 => "1.9.2",
            AuthMode::V1_11_2 => "1.11.2",
            AuthMode::AdminKey => "admin-key",
        })
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.9.1" => Ok(AuthMode::V1_9_1),
            "1.9.2" => Ok(AuthMode::V1_9_2),
            "1.11.2" => Ok(AuthMode::V1_11_2),
            "admin-key" => Ok(AuthMode::AdminKey),
            other => Err(format!(
                "unknown auth mode {other:?}: expected 1.9.1, 1.9.2, 1.11.2 or admin-key"
            )),
        }
    }
}

/// Faults injected on demand into every console request (never into `/_sim/*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Share of requests, 0.0..=1.0, answered with 500, 502, 503 or 429 (drawn from an RNG seeded by the seed).
    pub error_share: f64,
    /// `Retry-After` seconds sent with an injected 429.
    pub retry_after_secs: u64,
    /// Added before every answer, to make slow servers and concurrency visible.
    pub delay: Duration,
    /// An access token serves this many requests, then answers 401 "Token has expired." until refreshed.
    pub expire_token_after_requests: Option<u64>,
    /// The first time page 1 of an app's `chat-conversations` is served with `has_more`, add a new end-user
    /// message "now" (after the window) to the last conversation of page 2 as it stood (its last end-user
    /// conversation, when page 2 has one), so that under `-updated_at` it jumps to page 1 while the client
    /// pages. The truth does not change; the message shows in listings and `chat-messages`, not in statistics.
    pub bump_conversation_while_listing: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_share: 0.0,
            retry_after_secs: 1,
            delay: Duration::ZERO,
            expire_token_after_requests: None,
            bump_conversation_while_listing: false,
        }
    }
}

/// Everything that shapes one simulated Dify.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the whole workspace and of the fault RNG: the same seed gives the same apps, runs and nodes.
    pub seed: u64,
    /// Which version's auth rules apply.
    pub auth: AuthMode,
    /// Name the cookies `__Host-…` and mark them `Secure`, as Dify does behind https.
    pub host_prefixed_cookies: bool,
    /// First UTC day with usage.
    pub first_day: NaiveDate,
    /// Number of UTC days with usage, from `first_day` on.
    pub days: u32,
    /// Apps generated for each mode of `modes`.
    pub apps_per_mode: u32,
    /// Production runs (workflow, advanced-chat) or messages (message-based modes) per app and UTC day.
    pub runs_per_app_per_day: u32,
    /// Messages are grouped into conversations of this many (completion apps: always 1).
    pub messages_per_conversation: u32,
    /// When > 0, the first `chat` app gets one more end-user conversation with this many messages spread evenly
    /// over all simulated days.
    pub long_conversation_messages: u32,
    /// App modes to generate `apps_per_mode` apps for: `workflow`, `advanced-chat`, `chat`, `agent-chat`,
    /// `completion`, `agent` (a mode the exporter does not know, as on Dify's main branch).
    pub modes: Vec<String>,
    /// IANA name of the account timezone, which drives the statistics endpoints.
    pub account_timezone: String,
    /// Dify 1.12's run archiving has moved every production run of a `workflow` app created before this UTC
    /// day to object storage: the runs, their nodes and app logs are gone from the lists and tables (and
    /// from both truths), and each leaves a `workflow_archive_logs` row, served by `workflow-archived-logs`.
    pub archived_before: Option<NaiveDate>,
    /// Faults to inject.
    pub faults: Faults,
    /// Port to bind on 127.0.0.1; 0 lets the OS choose.
    pub port: u16,
}

impl Default for SimConfig {
    /// Three days ending yesterday (UTC), so a default exporter run finds data, in Asia/Tokyo.
    fn default() -> Self {
        let today = Utc::now().date_naive();
        SimConfig {
            seed: 42,
            auth: AuthMode::default(),
            host_prefixed_cookies: false,
            first_day: today.checked_sub_days(Days::new(3)).unwrap_or(today),
            days: 3,
            apps_per_mode: 2,
            runs_per_app_per_day: 5,
            messages_per_conversation: 3,
            long_conversation_messages: 0,
            modes: [
                "workflow",
                "advanced-chat",
                "chat",
                "agent-chat",
                "completion",
                "agent",
            ]
            .map(str::to_owned)
            .to_vec(),
            account_timezone: "Asia/Tokyo".to_owned(),
            archived_before: None,
            faults: Faults::default(),
            port: 0,
        }
    }
}

/// The secrets a client needs, fixed per simulator so tests can use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Login email of the workspace owner.
    pub email: String,
    /// Login password in clear (base64 it yourself on 1.11.2 and later).
    pub password: String,
    /// Admin API key; accepted only in [`AuthMode::AdminKey`].
    pub admin_api_key: String,
    /// Workspace (tenant) uuid, for `X-WORKSPACE-ID`.
    pub workspace_id: String,
    /// A pre-issued access token, valid as `Authorization: Bearer` (it still needs CSRF on 1.9.2 and later).
    pub console_token: String,
}
