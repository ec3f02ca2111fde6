//! The `file` sink: one file per UTC day in `SINK_FILE_DIR`, `dify-usage-YYYY-MM-DD.<ext>`,
//! holding every current ledger row of that day, in CSV, JSON lines or Parquet, in the native or
//! the FOCUS schema (`docs/sink-file.md`).
//!
//! A file is a snapshot of a day, so the sink is of [`Kind::Days`]: whenever a row of a day
//! changes, the whole day is queued and its file rewritten. A rewrite is atomic: the new content
//! goes to a hidden temp file in the same directory (`.dify-usage-….tmp`, which a reader's glob
//! `dify-usage-*` never matches), is fsynced, renamed over the old file, and the directory is
//! fsynced; so the final name always holds a complete file, the old day or the new one. A temp
//! file left by a killed run is overwritten by the next rewrite of its day and removed when the
//! sink first writes in a run.
//!
//! | failure | kind | why |
//! |---|---|---|
//! | permission denied, read-only file system, not a directory | configuration | a later run fails the same way until someone fixes SINK_FILE_DIR |
//! | disk full, quota, any other I/O error | transient | it can clear by itself (space freed); the batch stays queued |
//! | a value the format cannot hold exactly (a cost past DECIMAL(18,7) in Parquet) | rejected | the same rows always fail; never rounded |

mod csv;
mod focus;
mod jsonl;
mod native;
mod parquet;
mod table;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::NaiveDate;

use super::{Kind, Part, SendError, Sink, rows};
use crate::config::{FileFormat, FileSchema, FileSinkConfig};
use crate::ledger::{Change, LedgerRow};
use crate::state::Batch;

/// What every file name starts with.
const PREFIX: &str = "dify-usage-";

/// A directory of day files, for one run.
pub(crate) struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    schema: FileSchema,
    /// Whether stale temp files have been looked for in this run.
    swept: AtomicBool,
}

impl FileSink {
    pub(crate) fn new(config: &FileSinkConfig) -> Self {
        FileSink {
            dir: config.dir.clone(),
            format: config.format,
            schema: config.schema,
            swept: AtomicBool::new(false),
        }
    }

    /// The file's content for one day's rows.
    fn render(&self, rows: &[LedgerRow]) -> anyhow::Result<Vec<u8>> {
        let table = match self.schema {
            FileSchema::Native => native::table(rows),
            FileSchema::Focus => focus::table(rows),
        };
        match self.format {
            FileFormat::Csv => csv::write(&table),
            FileFormat::Jsonl => jsonl::write(&table),
            FileFormat::Parquet => parquet::write(&table),
        }
    }

    fn write_day(&self, day: NaiveDate, content: &[u8]) -> Result<(), SendError> {
        let io = |action: &str, path: &Path, error: std::io::Error| {
            classify(&format!("{action} {}", path.display()), &error)
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io("cannot create", &self.dir, e))?;
        if !self.swept.swap(true, Ordering::Relaxed) {
            self.sweep().map_err(|e| io("cannot list", &self.dir, e))?;
        }
        let extension: &'static str = self.format.into();
        let name = format!("{PREFIX}{day}.{extension}");
        let (path, temp) = (self.dir.join(&name), self.dir.join(format!(".{name}.tmp")));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            file.write_all(content)?;
            file.sync_all()
        })();
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(io("cannot write", &temp, error));
        }
        fs::rename(&temp, &path).map_err(|e| io("cannot rename into", &path, e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io("cannot sync", &self.dir, e))
    }

    /// Removes temp files a killed run left behind (one run at a time holds the state lock).
    fn sweep(&self) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") {
                fs::remove_file(self.dir.join(&*name))?;
            }
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn kind(&self) -> Kind {
        Kind::Days
    }

    fn encode(&self, changes: &[Change]) -> String {
        rows::encode(changes)
    }

    /// A file holds a whole day, so a batch is never cut: anything smaller than the day is refused.
    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        let rows = rows::decode(payload)?;
        if rows.len() > size {
            anyhow::bail!(
                "the file sink writes whole days; a day of {} rows cannot be cut into parts of {size}",
                rows.len()
            );
        }
        rows::split(payload, rows.len().max(1))
    }

    async fn send(&self, batch: &Batch, payload: &str) -> Result<(), SendError> {
        let rows = rows::decode(payload).map_err(|e| SendError::Rejected(format!("{e:#}")))?;
        if let Some(other) = rows.iter().find(|r| r.record.key.day != batch.first_day) {
            return Err(SendError::Rejected(format!(
                "the batch for {} holds a row of {}; a file holds one day",
                batch.first_day, other.record.key.day
            )));
        }
        let content = self
            .render(&rows)
            .map_err(|e| SendError::Rejected(format!("{e:#}")))?;
        self.write_day(batch.first_day, &content)
    }
}

/// An I/O failure under SINK_FILE_DIR, as the table in the module docs sorts it.
fn classify(what: &str, error: &std::io::Error) -> SendError {
    let message = format!("SINK_FILE_DIR: {what}: {error}");
    match error.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::NotADirectory => {
            SendError::Configuration(message)
        }
        _ => SendError::Transient(message),
    }
}

#[cfg(test)]
mod tests;
