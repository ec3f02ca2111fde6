//! Pagers that cannot hang and never hand over a row twice.
//!
//! Dify pages its lists two ways: by page number (`/apps`, `workflow-app-logs`, `chat-conversations`:
//! offset paging with `total` and `has_more`) and by cursor (`workflow-runs?last_id=`,
//! `chat-messages?first_id=`). A server that ignores the page or the cursor would keep the exporter
//! asking forever, and offset paging over a list that changes while it is read shifts rows from one
//! page to the next. So every page goes through a pager that
//!
//! - drops the rows it has already handed over (by id), and
//! - stops with an error naming the endpoint when a page makes no progress: `has_more` with an empty
//!   page or one whose ids were all seen, a cursor that was used before, or more pages than `total`
//!   allows.
//!
//! Page-numbered lists remember every id (as 16 bytes when it is a UUID, as Dify's ids are), because
//! a shifted row can come back on any later page. Cursor lists are ordered by creation, so a repeat
//! can only come from the page before: they remember one page of ids and the cursors, which keeps
//! memory flat for a conversation of any length.

use std::collections::HashSet;

use anyhow::{Result, bail};
use uuid::Uuid;

use super::client::endpoint_name;
use super::model::Page;

/// Ids handed over so far.
#[derive(Debug, Default)]
pub(super) struct SeenIds {
    uuids: HashSet<u128>,
    others: HashSet<String>,
}

impl SeenIds {
    /// Records `id`; false if it was recorded before.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        match Uuid::try_parse(id) {
            Ok(uuid) => self.uuids.insert(uuid.as_u128()),
            Err(_) => self.others.insert(id.to_owned()),
        }
    }

    fn contains(&self, id: &str) -> bool {
        match Uuid::try_parse(id) {
            Ok(uuid) => self.uuids.contains(&uuid.as_u128()),
            Err(_) => self.others.contains(id),
        }
    }
}

/// A walk through a page-numbered list.
#[derive(Debug)]
pub(super) struct NumberedPages {
    endpoint: String,
    limit: u32,
    next: Option<u32>,
    seen: SeenIds,
    /// Whether a page of rows that were all seen before is an error (the first pass) or expected
    /// (a re-read of the top of a list, see [`NumberedPages::reread`]).
    strict: bool,
}

impl NumberedPages {
    /// A walk from page 1 of the list at console `path`, `limit` rows per page.
    pub(super) fn new(path: &str, limit: u32) -> Self {
        NumberedPages {
            endpoint: endpoint_name(path),
            limit,
            next: Some(1),
            seen: SeenIds::default(),
            strict: true,
        }
    }

    /// The page to request next, if any.
    pub(super) fn next_page(&self) -> Option<u32> {
        self.next
    }

    /// Ends the walk early (the rows are older than the window).
    pub(super) fn finish(&mut self) {
        self.next = None;
    }

    /// Starts again from page 1, remembering what was handed over: rows that moved to the top of
    /// the list while it was read are found there. Pages of known rows are expected now.
    pub(super) fn reread(&mut self) {
        self.next = Some(1);
        self.strict = false;
    }

    /// Takes the answer for [`NumberedPages::next_page`]: the rows not handed over before, in order.
    pub(super) fn accept<T>(&mut self, answer: Page<T>, id: impl Fn(&T) -> &str) -> Result<Vec<T>> {
        let page = self.next.unwrap_or(1);
        let listed = answer.data.len();
        let fresh: Vec<T> = answer
            .data
            .into_iter()
            .filter(|row| self.seen.insert(id(row)))
            .collect();
        self.next = None;
        if !answer.has_more {
            return Ok(fresh);
        }
        let endpoint = &self.endpoint;
        if listed == 0 {
            bail!(
                "{endpoint} answered page {page} with no rows but has_more: true; Dify's paging is not advancing, so the exporter stopped instead of asking forever"
            );
        }
        if self.strict && fresh.is_empty() {
            bail!(
                "{endpoint} answered page {page} with only rows of earlier pages and has_more: true; Dify's paging is not advancing, so the exporter stopped instead of asking forever"
            );
        }
        if let Some(total) = answer.total
            && u64::from(page) * u64::from(self.limit) >= total
        {
            bail!(
                "{endpoint} answered page {page} with has_more: true although its total of {total} fits in {} page(s) of {}; Dify's paging is not advancing, so the exporter stopped instead of asking forever",
                total.div_ceil(u64::from(self.limit)),
                self.limit
            );
        }
        self.next = Some(page + 1);
        Ok(fresh)
    }
}

/// A walk through a cursor-paged list.
#[derive(Debug)]
pub(super) struct CursorPages {
    endpoint: String,
    /// The cursor parameter's name (`last_id`, `first_id`), for messages.
    parameter: &'static str,
    /// None before the first page; then the cursor of the next page.
    cursor: Option<String>,
    done: bool,
    used: HashSet<String>,
    previous: SeenIds,
}

impl CursorPages {
    pub(super) fn new(path: &str, parameter: &'static str) -> Self {
        CursorPages {
            endpoint: endpoint_name(path),
            parameter,
            cursor: None,
            done: false,
            used: HashSet::new(),
            previous: SeenIds::default(),
        }
    }

    /// Whether the walk is over.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The cursor to send for the next page; None for the first.
    pub(super) fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Ends the walk early (the rows are older than the window).
    pub(super) fn finish(&mut self) {
        self.done = true;
    }

    /// Takes the answer for [`CursorPages::cursor`]: the rows not on the page before, in order.
    /// `cursor_row` picks the row whose id leads to the next page (the oldest).
    pub(super) fn accept<T>(
        &mut self,
        answer: Page<T>,
        id: impl Fn(&T) -> &str,
        cursor_row: impl Fn(&[T]) -> Option<&T>,
    ) -> Result<Vec<T>> {
        let next = cursor_row(&answer.data).map(|row| id(row).to_owned());
        let mut page = SeenIds::default();
        for row in &answer.data {
            page.insert(id(row));
        }
        let previous = std::mem::replace(&mut self.previous, page);
        let mut repeated = SeenIds::default();
        let fresh: Vec<T> = answer
            .data
            .into_iter()
            .filter(|row| !previous.contains(id(row)) && repeated.insert(id(row)))
            .collect();
        self.done = true;
        if !answer.has_more {
            return Ok(fresh);
        }
        let (endpoint, parameter) = (&self.endpoint, self.parameter);
        let after = self.cursor.as_deref().map_or_else(
            || "the first page".to_owned(),
            |c| format!("{parameter}={c}"),
        );
        let Some(next) = next else {
            bail!(
                "{endpoint} answered {after} with no rows but has_more: true; Dify's paging is not advancing, so the exporter stopped instead of asking forever"
            );
        };
        if fresh.is_empty() {
            bail!(
                "{endpoint} answered {after} with the rows of the page before and has_more: true; it ignores {parameter}, so the exporter stopped instead of asking forever"
            );
        }
        if !self.used.insert(next.clone()) {
            bail!(
                "{endpoint} led back to {parameter}={next}, a cursor it gave before; Dify's paging is not advancing, so the exporter stopped instead of asking forever"
            );
        }
        self.cursor = Some(next);
        self.done = false;
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[&'static str], has_more: bool, total: Option<u64>) -> Page<&'static str> {
        Page {
            data: ids.to_vec(),
            has_more,
            total,
        }
    }

    #[test]
    fn numbered_pages_drop_rows_seen_before_and_stop_without_progress() {
        let mut pages = NumberedPages::new("/apps", 2);
        assert_eq!(
            pages
                .accept(page(&["a", "b"], true, Some(5)), |r| r)
                .unwrap(),
            ["a", "b"]
        );
        assert_eq!(pages.next_page(), Some(2));
        // b shifted onto page 2: handed over once.
        assert_eq!(
            pages
                .accept(page(&["b", "c"], true, Some(5)), |r| r)
                .unwrap(),
            ["c"]
        );
        let error = pages
            .accept(page(&["b", "c"], true, Some(5)), |r| r)
            .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "GET /console/api/apps answered page 3 with only rows of earlier pages"
            ),
            "{error}"
        );

        let mut pages = NumberedPages::new("/apps", 2);
        let error = pages
            .accept(page(&["a", "b"], true, Some(2)), |r| r)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("although its total of 2 fits in 1 page(s) of 2"),
            "{error}"
        );
        let mut pages = NumberedPages::new("/apps", 2);
        assert!(pages.accept(page(&[], true, None), |r| r).is_err());
        // A re-read expects known rows.
        let mut pages = NumberedPages::new("/apps", 2);
        pages
            .accept(page(&["a", "b"], false, Some(2)), |r| r)
            .unwrap();
        assert_eq!(pages.next_page(), None);
        pages.reread();
        assert!(
            pages
                .accept(page(&["a", "b"], true, Some(3)), |r| r)
                .unwrap()
                .is_empty()
        );
        assert_eq!(pages.next_page(), Some(2));
    }

    #[test]
    fn cursor_pages_stop_on_a_repeated_cursor_or_page() {
        let last = <[&str]>::last;
        let mut pages = CursorPages::new("/apps/x/workflow-runs", "last_id");
        assert_eq!(pages.cursor(), None);
        pages
            .accept(page(&["a", "b"], true, None), |r| r, last)
            .unwrap();
        assert_eq!(pages.cursor(), Some("b"));
        // The page before's last row again is dropped; c leads on.
        assert_eq!(
            pages
                .accept(page(&["b", "c"], true, None), |r| r, last)
                .unwrap(),
            ["c"]
        );
        // A server that cycles back to a cursor it gave before.
        let error = pages
            .accept(page(&["d", "b"], true, None), |r| r, last)
            .unwrap_err();
        assert!(
            error.to_string().contains("led back to last_id=b"),
            "{error}"
        );
        let mut pages = CursorPages::new("/apps/x/workflow-runs", "last_id");
        pages
            .accept(page(&["a", "b"], true, None), |r| r, last)
            .unwrap();
        let error = pages
            .accept(page(&["a", "b"], true, None), |r| r, last)
            .unwrap_err();
        assert!(error.to_string().contains("it ignores last_id"), "{error}");
    }
}
