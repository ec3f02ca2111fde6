//! Chat and agent-chat apps, message by message: every end user's tokens under their session id.
//!
//! Conversations come from `chat-conversations?sort_by=-updated_at&start=…` (the window's first
//! instant in the account's timezone: a conversation with a message in the window was updated after
//! it). Each conversation is one unit of work that reads its `chat-messages` newest page first
//! (`first_id` = the oldest message of the page before; pages are oldest first), stops at a page that
//! starts before the window, skips messages after it, and sums the end users' messages per UTC day as
//! it goes: a conversation of any length costs one page of memory. The conversation detail endpoints
//! are never called: they mark the conversation read for the admin.
//!
//! The list is paged by page number while Dify reorders it: a conversation that gets a message while
//! the list is read jumps to page 1, which was read already, and every later page shifts by one. The
//! shift shows a row twice (the pager drops it) and hides the one that moved. So after the pass the
//! top of the list is read again while rows are at least as new as the newest of the pass's first
//! page, taking the conversations not seen yet, until a re-read finds none (at most
//! [`MAX_REREADS`]).
//!
//! A conversation deleted between the listing and the reading of its messages answers 404; it is
//! skipped, and what was not counted of it lands in the remainder, as for any deleted conversation.
//!
//! Messages of accounts (explore page, debugger) are not counted here: the console cannot tell the two
//! apart, so they are left to the app-day remainder of [`super::statistics`].

use std::sync::Arc;

use anyhow::{Result, bail};
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use tracing::debug;

use super::{AppInfo, PAGE_LIMIT, Queue, Work, local_minute, utc_day};
use crate::http::RequestError;
use crate::run::window::Window;
use crate::source::console::DifyClient;
use crate::source::console::client::endpoint_name;
use crate::source::console::model::{Conversation, Message, Page};
use crate::source::console::paging::{CursorPages, NumberedPages};
use crate::usage::Usage;

/// Re-reads of the top of the conversation list before a list that keeps moving is an error.
const MAX_REREADS: u32 = 10;

/// Dify's currency when a message's usage names none.
const DEFAULT_CURRENCY: &str = "USD";

/// One conversation: read its messages.
pub(super) struct ConversationWork {
    app: Arc<AppInfo>,
    id: String,
    /// The end user's session id (empty for a conversation of an account).
    user: String,
    /// The conversation's model, as (provider, name).
    model: (String, String),
}

/// What one conversation's end users used in the window: one sum per UTC day and currency.
pub(super) struct ConversationUsage {
    pub(crate) usages: Vec<Usage>,
    /// End-user messages counted.
    pub(crate) messages: u64,
}

/// Queues every conversation updated since the window began, each once.
pub(super) async fn queue_conversations(
    dify: &DifyClient,
    app: &Arc<AppInfo>,
    window: Window,
    tz: Tz,
    queue: Queue<'_>,
) -> Result<u64> {
    let path = format!("/apps/{}/chat-conversations", app.id);
    let start = local_minute(window.first, tz);
    let mut pages = NumberedPages::new(&path, PAGE_LIMIT);
    let mut queued = 0;
    // The newest `updated_at` of the last pass's first page: rows moved to the top are as new or newer.
    let mut since: Option<i64> = None;
    for pass in 0..=MAX_REREADS {
        let mut found = 0;
        let mut top = None;
        while let Some(page) = pages.next_page() {
            let query = [
                ("page", page.to_string()),
                ("limit", PAGE_LIMIT.to_string()),
                ("sort_by", "-updated_at".to_owned()),
                ("start", start.clone()),
            ];
            let answer: Page<Conversation> = dify.get(&path, &query).await?;
            if page == 1 {
                top = answer.data.iter().map(|c| c.updated_at).max();
            }
            let below_moved =
                since.is_some_and(|since| answer.data.iter().any(|c| c.updated_at < since));
            for conversation in pages.accept(answer, |c| &c.id)? {
                if !queue
                    .push(Work::Conversation(conversation_work(app, conversation)))
                    .await
                {
                    return Ok(queued + found);
                }
                found += 1;
            }
            if below_moved {
                pages.finish();
            }
        }
        queued += found;
        if pass > 0 && found == 0 {
            return Ok(queued);
        }
        let Some(newest) = top.or(since) else {
            return Ok(queued); // no conversation in the window at all
        };
        since = Some(newest);
        pages.reread();
    }
    bail!(
        "{}: conversations of app {} kept moving to the top of the list through {MAX_REREADS} re-reads; run the export again when the app is quieter",
        endpoint_name(&path),
        app.id
    )
}

fn conversation_work(app: &Arc<AppInfo>, conversation: Conversation) -> ConversationWork {
    let model = conversation
        .model_config
        .and_then(|c| c.model)
        .filter(|m| !m.name.is_empty())
        .map_or_else(|| app.model.clone(), |m| (m.provider, m.name));
    ConversationWork {
        app: app.clone(),
        id: conversation.id,
        user: conversation.from_end_user_session_id.unwrap_or_default(),
        model,
    }
}

/// Reads one conversation's messages, newest page first, down to the window's first day.
pub(super) async fn read_conversation(
    dify: &DifyClient,
    conversation: &ConversationWork,
    window: Window,
) -> Result<ConversationUsage> {
    let path = format!("/apps/{}/chat-messages", conversation.app.id);
    let mut pages = CursorPages::new(&path, "first_id");
    let mut sums = ConversationUsage {
        usages: Vec::new(),
        messages: 0,
    };
    while !pages.is_done() {
        let mut query = vec![
            ("conversation_id", conversation.id.clone()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        if let Some(id) = pages.cursor() {
            query.push(("first_id", id.to_owned()));
        }
        let answer: Page<Message> = match dify.get(&path, &query).await {
            Ok(answer) => answer,
            Err(error) if is_not_found(&error) => {
                // Deleted after it was listed: Dify's statistics still count its messages, so what
                // was not counted here lands in the app-day's remainder.
                debug!(
                    app_id = %conversation.app.id,
                    conversation_id = %conversation.id,
                    "conversation deleted while it was read; its other messages count in the remainder"
                );
                break;
            }
            Err(error) => return Err(error),
        };
        let oldest = answer.data.iter().map(|m| m.created_at).min();
        // Pages are oldest first: the first message leads further back.
        for message in pages.accept(answer, |m| &m.id, <[Message]>::first)? {
            let day = utc_day(message.created_at, &path)?;
            if window.contains(day)
                && message
                    .from_end_user_id
                    .as_deref()
                    .is_some_and(|id| !id.is_empty())
            {
                sums.add(message_usage(conversation, day, &message));
            }
        }
        if let Some(oldest) = oldest
            && utc_day(oldest, &path)? < window.first
        {
            pages.finish();
        }
    }
    Ok(sums)
}

/// Whether `error` is Dify's 404 for a conversation that no longer exists.
fn is_not_found(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<RequestError>(),
        Some(RequestError::Status { status, .. }) if *status == reqwest::StatusCode::NOT_FOUND
    )
}

/// An end user's message: exact tokens, price and currency from its `metadata.usage` (none: 0 USD).
fn message_usage(conversation: &ConversationWork, day: NaiveDate, message: &Message) -> Usage {
    let price = message.metadata.as_ref().and_then(|m| m.usage.as_ref());
    Usage {
        day,
        app_id: conversation.app.id.clone(),
        app_name: conversation.app.name.clone(),
        user: conversation.user.clone(),
        provider: conversation.model.0.clone(),
        model: conversation.model.1.clone(),
        currency: price
            .and_then(|p| p.currency.clone())
            .unwrap_or_else(|| DEFAULT_CURRENCY.to_owned()),
        input_tokens: message.input_tokens,
        output_tokens: message.output_tokens,
        total_tokens: message.input_tokens + message.output_tokens,
        cost: price.map_or(Decimal::ZERO, |p| p.total_price),
        requests: 1,
        total_only: false,
    }
}

impl ConversationUsage {
    /// Folds a message into the sum of its day and currency (a handful per conversation).
    fn add(&mut self, usage: Usage) {
        self.messages += 1;
        let same = self
            .usages
            .iter_mut()
            .find(|u| u.day == usage.day && u.currency == usage.currency);
        match same {
            Some(sum) => {
                sum.input_tokens += usage.input_tokens;
                sum.output_tokens += usage.output_tokens;
                sum.total_tokens += usage.total_tokens;
                sum.cost += usage.cost;
                sum.requests += usage.requests;
            }
            None => self.usages.push(usage),
        }
    }
}
