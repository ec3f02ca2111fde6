//! The workspace's apps (`GET /apps`, page pagination) and their modes. Dify pages apps by offset,
//! so an app created while the list is read shifts the pages: the same app can come twice, and is
//! kept once.

use std::fmt;

use anyhow::Result;

use super::DifyClient;
use super::model::{App, Page};
use super::paging::NumberedPages;

/// Dify caps list pages at 100 and answers 400 beyond that.
const PAGE_LIMIT: u32 = 100;

/// The kind of app, which decides where its usage is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppMode {
    Workflow,
    AdvancedChat,
    Chat,
    AgentChat,
    Completion,
    /// A mode this version does not know (a newer Dify, e.g. `agent`); its usage is not collected.
    Other,
}

impl AppMode {
    /// The mode Dify calls `name`; [`AppMode::Other`] for any name this version does not know.
    #[must_use]
    pub fn from_name(name: &str) -> AppMode {
        match name {
            "workflow" => AppMode::Workflow,
            "advanced-chat" => AppMode::AdvancedChat,
            "chat" => AppMode::Chat,
            "agent-chat" => AppMode::AgentChat,
            "completion" => AppMode::Completion,
            _ => AppMode::Other,
        }
    }

    /// Modes whose usage the statistics endpoints hold and whose model the app names.
    #[must_use]
    pub fn is_chat_type(self) -> bool {
        matches!(
            self,
            AppMode::Chat | AppMode::AgentChat | AppMode::Completion
        )
    }
}

impl fmt::Display for AppMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppMode::Workflow => "workflow",
            AppMode::AdvancedChat => "advanced-chat",
            AppMode::Chat => "chat",
            AppMode::AgentChat => "agent-chat",
            AppMode::Completion => "completion",
            AppMode::Other => "other",
        })
    }
}

impl DifyClient {
    /// Every app of the workspace, through all pages, each once.
    pub async fn list_apps(&self) -> Result<Vec<App>> {
        let mut apps = Vec::new();
        let mut pages = NumberedPages::new("/apps", PAGE_LIMIT);
        while let Some(page) = pages.next_page() {
            let answer: Page<App> = self
                .get(
                    "/apps",
                    &[
                        ("page", page.to_string()),
                        ("limit", PAGE_LIMIT.to_string()),
                    ],
                )
                .await?;
            apps.extend(pages.accept(answer, |app| &app.id)?);
        }
        Ok(apps)
    }
}
