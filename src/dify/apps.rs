//! The workspace's apps (`GET /apps`, page pagination) and their modes.

use std::fmt;

use anyhow::Result;
use serde::Deserialize;

use super::DifyClient;
use super::model::{App, Page};

/// Dify caps list pages at 100 and answers 400 beyond that.
const PAGE_LIMIT: u32 = 100;

/// The kind of app, which decides where its usage is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppMode {
    Workflow,
    AdvancedChat,
    Chat,
    AgentChat,
    Completion,
    /// A mode this version does not know (a newer Dify); its usage is not collected.
    #[serde(other)]
    Other,
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
    /// Every app of the workspace, through all pages.
    pub async fn list_apps(&self) -> Result<Vec<App>> {
        let mut apps = Vec::new();
        for page in 1.. {
            let answer: Page<App> = self
                .get(
                    "/apps",
                    &[
                        ("page", page.to_string()),
                        ("limit", PAGE_LIMIT.to_string()),
                    ],
                )
                .await?;
            let empty = answer.data.is_empty();
            apps.extend(answer.data);
            // An empty page ends the walk even if a server claims more, so a bug there cannot loop forever.
            if !answer.has_more || empty {
                break;
            }
        }
        Ok(apps)
    }
}
