//! `cutover backup`: a consistent online copy of the live SQLite file.
//!
//! Copying the file of a WAL database is not a backup (committed pages may
//! still sit in the `-wal` file); this uses SQLite's online backup API. The
//! source holds one read transaction for the whole copy, so every page comes
//! from the same snapshot, while writers go on committing to the WAL. Pages
//! are copied a few at a time with short pauses so the copy never hogs the
//! disk. The copy is built as `PATH.partial`, checked with
//! `PRAGMA integrity_check`, and renamed into place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::{Error, Result};

/// Pages copied per step.
pub const PAGES_PER_STEP: i32 = 256;
/// Pause between steps.
pub const PAUSE: Duration = Duration::from_millis(2);

/// Row count of one table of the copy.
#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    /// Table name.
    pub table: String,
    /// Rows in the copy.
    pub rows: i64,
}

/// The result of `cutover backup`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The file written.
    pub out: PathBuf,
    /// Pages copied.
    pub pages: i32,
    /// The source's journal mode (`wal`, `delete`, ...).
    pub journal_mode: String,
    /// `PRAGMA integrity_check` of the copy (`ok`).
    pub integrity: String,
    /// Row counts of the copy's tables, by name.
    pub tables: Vec<TableCount>,
    /// Wall time.
    pub elapsed_ms: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Copies `sqlite_path` to `out` (which must not exist) with the online
/// backup API. Blocking: call it from a blocking thread.
pub fn backup(sqlite_path: &Path, out: &Path) -> Result<BackupReport> {
    let started = Instant::now();
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; a backup never overwrites a file, choose another path",
            out.display()
        )));
    }
    if !sqlite_path.exists() {
        return Err(Error::Config(format!(
            "the SQLite file {} does not exist",
            sqlite_path.display()
        )));
    }
    let partial = crate::export::partial_path(out);
    if partial.exists() {
        std::fs::remove_file(&partial)
            .map_err(io(format!("removing the stale {}", partial.display())))?;
    }
    let src = Connection::open_with_flags(
        sqlite_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(10))?;
    let journal_mode: String = src.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let mut dst = Connection::open(&partial)?;

    let wal = journal_mode.eq_ignore_ascii_case("wal");
    if wal {
        // One read transaction across all steps: every page from one
        // snapshot, and the backup never restarts; WAL writers are not blocked.
        src.execute_batch("BEGIN")?;
        src.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
    }
    let pages = {
        let b = Backup::new(&src, &mut dst)?;
        let mut steps_left_before_one_go = 10_000u32;
        loop {
            // Without WAL, a write between steps restarts the copy; after many
            // restarts copy the rest in one step (writers then wait once).
            let n = if steps_left_before_one_go == 0 {
                -1
            } else {
                PAGES_PER_STEP
            };
            match b.step(n)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    steps_left_before_one_go = steps_left_before_one_go.saturating_sub(1);
                    std::thread::sleep(PAUSE);
                }
                _ => std::thread::sleep(PAUSE),
            }
        }
        b.progress().pagecount
    };
    if wal {
        src.execute_batch("COMMIT")?;
    }
    drop(src);

    let integrity: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(Error::Database {
            backend: crate::Backend::Sqlite,
            kind: crate::DbErrorKind::Other,
            message: format!(
                "the copy {} failed PRAGMA integrity_check: {integrity}",
                partial.display()
            ),
        });
    }
    let names: Vec<String> = {
        let mut stmt = dst.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let v = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        v
    };
    let mut tables = Vec::new();
    for name in names {
        let rows: i64 = dst.query_row(
            &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
            [],
            |r| r.get(0),
        )?;
        tables.push(TableCount { table: name, rows });
    }
    dst.close().map_err(|(_, e)| Error::from(e))?;
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} appeared while the backup ran; the copy is left at {}",
            out.display(),
            partial.display()
        )));
    }
    std::fs::rename(&partial, out).map_err(io(format!(
        "renaming {} to {}",
        partial.display(),
        out.display()
    )))?;
    Ok(BackupReport {
        out: out.to_path_buf(),
        pages,
        journal_mode,
        integrity,
        tables,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
