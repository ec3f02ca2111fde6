//! Several PostgreSQL sessions reading one snapshot (`DIFY_DATABASE_CONNECTIONS`), as `pg_dump -j`
//! does.
//!
//! Why: PostgreSQL scans a table with parallel workers only for a query it may run to the end at
//! once, never for rows streamed to a client as they come, so one session is one core of the server,
//! and the node executions are most of the work. The first session exports its snapshot
//! (`pg_export_snapshot()`) and the others import it (`SET TRANSACTION SNAPSHOT`): every session sees
//! exactly the same rows, so the parts they read are disjoint parts of one consistent view. The parts
//! are the message groups and `workflow_node_executions` cut into ranges of physical pages (`ctid`),
//! two per session, so that one slow range leaves no session idle for long. Each session folds its
//! parts into an aggregator of its own; sums of whole numbers and exact decimals do not depend on the
//! order and the records come out sorted by key, so the records are those of one session, byte for byte.
//!
//! The reading starts once every session has joined or given up. A session that cannot join (it
//! cannot connect, or the import fails or gets no answer within the connect timeout, as behind a
//! PgBouncer that sends it to another server or whose pool is full) takes no part: the others read
//! its parts, and one `warn` says so. When the snapshot cannot be exported at all, the first session
//! reads everything alone, in a fresh snapshot.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::anyhow;
use futures::FutureExt as _;
use tokio::sync::oneshot;
use tokio_postgres::Transaction;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::postgres::{self, Pages, Span};
use super::settings::DatabaseSource;
use super::{AttemptError, rules};
use crate::postgres::{Connection, describe};
use crate::usage::{Aggregator, SumOverflow};

/// Ranges of `workflow_node_executions` pages per session.
const NODE_PARTS_PER_SESSION: u64 = 2;

/// What every session of a collection reads.
pub(super) struct Plan {
    pub(crate) apps: rules::Apps,
    pub(crate) run_apps: Vec<Uuid>,
    pub(crate) message_apps: Vec<Uuid>,
    pub(crate) span: Span,
}

/// What the sessions found, together.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(crate) aggregator: Aggregator,
    pub(crate) messages: u64,
    pub(crate) nodes_read: u64,
    pub(crate) nodes_counted: u64,
}

impl Tally {
    fn absorb(&mut self, other: Tally) -> Result<(), SumOverflow> {
        self.aggregator.absorb(other.aggregator)?;
        self.messages += other.messages;
        self.nodes_read += other.nodes_read;
        self.nodes_counted += other.nodes_counted;
        Ok(())
    }
}

/// One query's worth of the collection.
#[derive(Debug, Clone, Copy)]
enum Part {
    Messages,
    Nodes(Pages),
}

/// The parts of a collection, taken one at a time by whichever session is free.
struct Parts {
    list: Vec<Part>,
    next: AtomicUsize,
}

impl Parts {
    /// The messages first (one query), then the node executions: in `pages` cut into ranges,
    /// the last open-ended, or as one query when the table is not split.
    fn new(plan: &Plan, pages: Option<u64>, sessions: usize) -> Parts {
        let mut list = Vec::new();
        if !plan.message_apps.is_empty() {
            list.push(Part::Messages);
        }
        if !plan.run_apps.is_empty() {
            let ranges = (sessions as u64 * NODE_PARTS_PER_SESSION).max(1);
            let pages = pages.unwrap_or(0);
            let step = pages.div_ceil(ranges).max(1);
            let mut first = 0;
            while first + step < pages {
                list.push(Part::Nodes(Pages {
                    first,
                    end: Some(first + step),
                }));
                first += step;
            }
            list.push(Part::Nodes(Pages { first, end: None }));
        }
        Parts {
            list,
            next: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> Option<Part> {
        self.list
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .copied()
    }

    /// No session starts another part: the collection has failed.
    fn abandon(&self) {
        self.next.store(self.list.len(), Ordering::Relaxed);
    }
}

/// Reads the plan in `transaction` and, when `exported` names its snapshot, in up to
/// `DIFY_DATABASE_CONNECTIONS - 1` more sessions on the same snapshot. The reading starts once every
/// session has joined or given up, so that one line can say how many read.
pub(super) async fn read(
    transaction: &Transaction<'_>,
    exported: Option<String>,
    source: &DatabaseSource,
    plan: Plan,
) -> Result<Tally, AttemptError> {
    let pages = match &exported {
        Some(_) if !plan.run_apps.is_empty() => Some(postgres::node_pages(transaction).await?),
        _ => None,
    };
    let plan = Arc::new(plan);
    let parts = Arc::new(Parts::new(&plan, pages, source.connections));
    let (mut helpers, mut joins) = (Vec::new(), Vec::new());
    for id in exported
        .iter()
        .flat_map(|id| (1..source.connections).map(move |_| id))
    {
        let (joined, join) = oneshot::channel();
        joins.push(join);
        helpers.push(AbortOnDropHandle::new(tokio::spawn(helper(
            source.clone(),
            id.clone(),
            plan.clone(),
            parts.clone(),
            joined,
        ))));
    }
    let mut declined = Vec::new();
    for join in joins {
        if let Err(reason) = join.await.unwrap_or_else(|_| Err("it ended".to_owned())) {
            declined.push(reason);
        }
    }
    let sessions = 1 + helpers.len() - declined.len();
    if let Some(reason) = declined.first() {
        let message = if sessions == 1 {
            "the snapshot cannot be shared; reading through one connection"
        } else {
            "some sessions cannot join the shared snapshot; the others read their parts"
        };
        warn!(
            sessions,
            requested = source.connections,
            error = %reason,
            "{message}"
        );
    }
    let mut tally = read_parts(transaction, &plan, &parts).await?;
    for helper in helpers {
        match helper.await {
            Ok(Ok(Some(part))) => tally
                .absorb(part)
                .map_err(|e| AttemptError::Fatal(e.into()))?,
            Ok(Ok(None)) => {}
            Ok(Err(error)) => return Err(error),
            Err(error) => {
                return Err(AttemptError::Fatal(anyhow!(
                    "a database session ended unexpectedly: {error}"
                )));
            }
        }
    }
    info!(sessions, parts = parts.list.len(), "database parts read");
    Ok(tally)
}

/// Takes and reads parts until none is left.
async fn read_parts(
    transaction: &Transaction<'_>,
    plan: &Plan,
    parts: &Parts,
) -> Result<Tally, AttemptError> {
    let mut tally = Tally::default();
    while let Some(part) = parts.take() {
        let read = match part {
            Part::Messages => postgres::messages(
                transaction,
                &plan.message_apps,
                &plan.span,
                &plan.apps,
                &mut tally.aggregator,
            )
            .await
            .map(|messages| tally.messages += messages),
            Part::Nodes(pages) => postgres::nodes(
                transaction,
                &plan.run_apps,
                &plan.span,
                pages,
                &plan.apps,
                &mut tally.aggregator,
            )
            .await
            .map(|(read, counted)| {
                tally.nodes_read += read;
                tally.nodes_counted += counted;
            }),
        };
        if let Err(error) = read {
            parts.abandon();
            return Err(error);
        }
    }
    Ok(tally)
}

/// One more session: connects and imports the snapshot, says whether it could (`joined`), then
/// reads parts until none is left; `None` when it could not join.
async fn helper(
    source: DatabaseSource,
    snapshot: String,
    plan: Arc<Plan>,
    parts: Arc<Parts>,
    joined: oneshot::Sender<Result<(), String>>,
) -> Result<Option<Tally>, AttemptError> {
    let limit = source.connect_timeout;
    let (mut client, connection) =
        match tokio::time::timeout(limit, postgres::connect(&source)).await {
            Ok(Ok(session)) => session,
            Ok(Err(AttemptError::Transient(error) | AttemptError::Fatal(error))) => {
                let _ = joined.send(Err(format!("cannot connect: {error:#}")));
                return Ok(None);
            }
            Err(_) => {
                let _ = joined.send(Err(timed_out(limit)));
                return Ok(None);
            }
        };
    polled(connection, async {
        let transaction =
            match tokio::time::timeout(limit, postgres::import_snapshot(&mut client, &snapshot))
                .await
            {
                Ok(Ok(transaction)) => transaction,
                Ok(Err(error)) => {
                    let _ = joined.send(Err(format!(
                        "cannot import the snapshot: {}",
                        describe(&error)
                    )));
                    return Ok(None);
                }
                Err(_) => {
                    let _ = joined.send(Err(timed_out(limit)));
                    return Ok(None);
                }
            };
        debug!(snapshot = %snapshot, "database session joined the snapshot");
        let _ = joined.send(Ok(()));
        let tally = read_parts(&transaction, &plan, &parts).await?;
        transaction
            .rollback()
            .await
            .map_err(|e| AttemptError::from_postgres(&e, "cannot end the snapshot"))?;
        Ok(Some(tally))
    })
    .await
}

fn timed_out(limit: std::time::Duration) -> String {
    format!(
        "no answer within {} s (HTTP_TIMEOUT, at most 10 s)",
        limit.as_secs()
    )
}

/// Runs `work` while polling its session's `connection` in the same task (no cross-thread wake-up
/// per batch of rows). When the connection ends first, the server's last words (why it ended the
/// session) may be waiting for `work` already: they say more than "connection closed".
pub(super) async fn polled<T>(
    connection: Connection,
    work: impl Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        outcome = &mut work => outcome,
        ended = connection => {
            work.as_mut()
                .now_or_never()
                .unwrap_or_else(|| Err(postgres::connection_ended(ended)))
        }
    }
}
