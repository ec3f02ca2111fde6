//! The little state that requests change in the otherwise immutable workspace: messages added by the
//! `bump_conversation_while_listing` fault and conversations marked read by a detail request (Dify's side
//! effect the exporter must never trigger). Behind one mutex in `SimState`; handlers hold it only while they
//! build an answer, never across an await.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::data::Message;

#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Apps whose listing has already been bumped once.
    pub(crate) bumped_apps: HashSet<Uuid>,
    /// Messages added after generation, per (app id, conversation index), oldest first.
    pub(crate) added: HashMap<(Uuid, u32), Vec<Message>>,
    /// `read_at` (Unix seconds) of conversations a detail request marked read.
    pub(crate) read_at: HashMap<Uuid, i64>,
}

impl Live {
    pub(crate) fn added(&self, app: Uuid, conversation: u32) -> &[Message] {
        self.added
            .get(&(app, conversation))
            .map_or(&[], Vec::as_slice)
    }
}
