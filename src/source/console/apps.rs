//! The workspace's apps (`GET /apps`, page pagination) and their modes. Dify pages apps by offset,
//! so an app created while the list is read shifts the pages: the same app can come twice, and is
//! kept once. An app's mode decides where its usage is read from ([`AppMode`]).

use anyhow::Result;

use super::DifyClient;
use super::model::{App, Page};
use super::paging::NumberedPages;

/// Dify caps list pages at 100 and answers 400 beyond that.
const PAGE_LIMIT: u32 = 100;

impl DifyClient {
    /// Every app of the workspace, through all pages, each once.
    pub(crate) async fn list_apps(&self) -> Result<Vec<App>> {
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
