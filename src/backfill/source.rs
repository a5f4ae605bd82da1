//! The SQLite side of the backfill: batches read from a snapshot.
//!
//! A batch is one `SELECT`, which reads one snapshot of the file and takes
//! no write lock: the application's writers never wait for the backfill.
//! A live write may change or delete a batch's rows while the batch loads;
//! [`Source::gone`] finds, after the batch committed, the rows that are no
//! longer what was read, and the caller settles them against PostgreSQL
//! (see `target::settle_gone`). Rows are read in rowid order by
//! keyset (`rowid > last`), converted with `crate::row::convert_row` and
//! encoded for `COPY` right here, on the connection's thread, so the async
//! side only receives owned bytes.
//!
//! Tables with a TEXT primary key are rowid tables and the INTEGER PRIMARY
//! KEY tables' key *is* the rowid, so paginating on rowid is exact for all
//! ten tables, whatever mix of types the legacy keys hold.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::OpenFlags;
use serde_json::Value;

use super::encode;
use crate::convert::{self, Raw, RejectReason};
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::rejects::RejectRecord;
use crate::row::{self, Cell, Policy};
use crate::tables::{Kind, Table};

/// A row that converted and may be copied, pending the PostgreSQL checks.
#[derive(Debug)]
pub(crate) struct SourceRow {
    /// SQLite rowid.
    pub rowid: i64,
    /// Converted value of each unique column (the key first, then
    /// `table.unique`), as text.
    pub uniques: Vec<Option<String>>,
    /// Converted value of each foreign-key column, as text.
    pub parents: Vec<Option<String>>,
    /// The encoded tuple inside `Batch::buf`.
    pub range: Range<usize>,
    /// Values nulled under `null-and-record`, to record if the row is copied.
    pub nulled: Vec<RejectRecord>,
    /// The key as SQLite stored it, to tell later whether the row is still there.
    pub stored_key: StoredKey,
}

/// A key exactly as SQLite stored it (type and bytes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoredKey {
    Null,
    Int(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<Raw<'_>> for StoredKey {
    fn from(r: Raw<'_>) -> Self {
        match r {
            Raw::Null => StoredKey::Null,
            Raw::Integer(i) => StoredKey::Int(i),
            Raw::Real(f) => StoredKey::Real(f.to_bits()),
            Raw::Text(t) => StoredKey::Text(t.to_vec()),
            Raw::Blob(b) => StoredKey::Blob(b.to_vec()),
        }
    }
}

/// One batch as read from SQLite.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Rows that converted.
    pub rows: Vec<SourceRow>,
    /// Rows rejected by conversion or as duplicates.
    pub rejects: Vec<RejectRecord>,
    /// Encoded tuples of `rows`.
    pub buf: Vec<u8>,
    /// Rows read.
    pub read: u64,
    /// The highest rowid read.
    pub last_rowid: Option<i64>,
}

/// Rows that lose a key to another row after conversion: rowid → (column, winner rowid).
pub(crate) type Losers = HashMap<i64, (&'static str, i64)>;

/// The legacy file, opened for reading (the right to take its write lock is
/// checked once, at the start: a file the application cannot lock is not one
/// it writes through this path).
pub(crate) struct Source {
    conn: tokio_rusqlite::Connection,
}

fn sqlite_err(message: String) -> Error {
    Error::Database {
        backend: Backend::Sqlite,
        kind: DbErrorKind::Other,
        message,
    }
}

/// The backfill refusing a file it cannot hold SQLite's write lock on.
fn no_write_lock(path: &str, what: &str) -> Error {
    sqlite_err(format!(
        "cannot take SQLite's write lock on {path} ({what}): the file, or its directory, is \
         read-only for this user; the backfill needs write permission on the file and on its \
         directory (where SQLite keeps the -wal, -shm and journal files; no table is written) \
         because it reads in the same locking protocol as the application's writers, which \
         it checks here once: run it as the application's user"
    ))
}

/// Errors that say this user may not write the file or create its companions.
fn lacks_permission(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied
            )
    )
}

/// The columns of unique constraints: the key, then `table.unique`.
pub(crate) fn unique_columns(table: &'static Table) -> Vec<&'static str> {
    std::iter::once(table.primary_key)
        .chain(table.unique.iter().copied())
        .collect()
}

fn cell_text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Text(s) => Some(s.clone()),
        Cell::Int(i) => Some(i.to_string()),
        Cell::Status(s) => Some(s.as_str().to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// `cutover.rejects.row_key` for a row: its key as text, told apart by rowid when NULL.
pub(crate) fn row_key(key: Raw<'_>, rowid: i64) -> String {
    match key {
        Raw::Null => format!("NULL#rowid={rowid}"),
        k => row::key_text(k),
    }
}

fn column_index(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|c| c.name == name)
        .expect("a column of the table")
}

impl Source {
    /// Opens the existing file (never creates one), refusing it when the
    /// connection could not take SQLite's write lock.
    ///
    /// `SQLITE_OPEN_READ_WRITE` falls back to a read-only connection, without
    /// a word, when the file is not writable for this user, and `BEGIN
    /// IMMEDIATE` on such a connection succeeds while taking no write lock
    /// (in WAL mode the application writes right through it). So the opened
    /// connection itself is asked, and the lock is taken once, here.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = tokio_rusqlite::Connection::open_with_flags(path, flags)
            .await
            .map_err(|e| Error::Database {
                backend: Backend::Sqlite,
                kind: DbErrorKind::Unavailable,
                message: format!("cannot open {}: {e}", path.display()),
            })?;
        let shown = path.display().to_string();
        conn.call(move |c| -> Result<()> {
            c.busy_timeout(busy_timeout)?;
            if c.is_readonly(rusqlite::MAIN_DB)? {
                return Err(no_write_lock(&shown, "SQLite opened it read-only"));
            }
            // Taking the lock may still need files this user cannot create
            // (WAL mode's -wal and -shm, next to the file).
            let probe = c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            match probe {
                Ok(()) => Ok(()),
                Err(e) if lacks_permission(&e) => Err(no_write_lock(&shown, &e.to_string())),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        Ok(Self { conn })
    }

    /// Rows left after `after`, and the rows that lose a unique value to an
    /// earlier row once converted (a blob key and a text key with the same
    /// bytes are distinct in SQLite, equal in PostgreSQL; the lowest rowid
    /// keeps the value).
    pub async fn prepare_table(&self, table: &'static Table, after: i64) -> Result<(u64, Losers)> {
        self.conn
            .call(move |c| -> Result<(u64, Losers)> {
                let remaining: i64 = c.query_row(
                    &format!("SELECT count(*) FROM {} WHERE rowid > ?1", table.name),
                    [after],
                    |r| r.get(0),
                )?;
                let mut losers = Losers::new();
                for col in unique_columns(table) {
                    if table.column(col).map(|c| c.kind) != Some(Kind::Text) {
                        continue;
                    }
                    // Only values stored with another type than text can
                    // collide after conversion; they are rare, so this is a
                    // scan that finds few rows and an index probe for each.
                    let odd: Vec<(i64, Option<String>)> = {
                        let mut st = c.prepare(&format!(
                            "SELECT rowid, {col} FROM {} WHERE typeof({col}) NOT IN ('text', 'null')",
                            table.name
                        ))?;
                        let rows = st.query_map([], |r| {
                            let raw = Raw::from(r.get_ref(1)?);
                            Ok((r.get(0)?, convert::text(col, raw).ok().flatten()))
                        })?;
                        rows.collect::<rusqlite::Result<_>>()?
                    };
                    let mut groups: HashMap<String, Vec<i64>> = HashMap::new();
                    for (rowid, text) in odd {
                        let Some(text) = text else { continue };
                        groups.entry(text).or_default().push(rowid);
                    }
                    let mut st = c.prepare(&format!(
                        "SELECT rowid FROM {} WHERE {col} = CAST(?1 AS TEXT)",
                        table.name
                    ))?;
                    for (text, mut rowids) in groups {
                        let same: Vec<i64> = st
                            .query_map([&text], |r| r.get(0))?
                            .collect::<rusqlite::Result<_>>()?;
                        rowids.extend(same);
                        rowids.sort_unstable();
                        rowids.dedup();
                        if let Some((&winner, rest)) = rowids.split_first() {
                            for &r in rest {
                                losers.insert(r, (col, winner));
                            }
                        }
                    }
                }
                Ok((remaining as u64, losers))
            })
            .await
            .map_err(Error::from)
    }

    /// Rows up to rowid `last`.
    pub async fn count_through(&self, table: &'static Table, last: i64) -> Result<u64> {
        self.count_where(table, "rowid <= ?1", last).await
    }

    /// Rows after rowid `after`.
    pub async fn count_after(&self, table: &'static Table, after: i64) -> Result<u64> {
        self.count_where(table, "rowid > ?1", after).await
    }

    async fn count_where(
        &self,
        table: &'static Table,
        cond: &'static str,
        rowid: i64,
    ) -> Result<u64> {
        self.conn
            .call(move |c| -> Result<u64> {
                let n: i64 = c.query_row(
                    &format!("SELECT count(*) FROM {} WHERE {cond}", table.name),
                    [rowid],
                    |r| r.get(0),
                )?;
                Ok(n as u64)
            })
            .await
            .map_err(Error::from)
    }

    /// Reads, converts and encodes up to `limit` rows after rowid `after`,
    /// from one snapshot, holding no lock.
    pub async fn read_batch(
        &self,
        table: &'static Table,
        after: i64,
        limit: usize,
        policy: Policy,
        losers: Arc<Losers>,
    ) -> Result<Batch> {
        self.conn
            .call(move |c| read_snapshot(c, table, after, limit, policy, &losers))
            .await
            .map_err(Error::from)
    }

    /// Of a committed batch's rows (rowid, key as stored), the keys of those
    /// whose rowid is gone or holds another key now: rows a live write
    /// deleted (or re-keyed) after the batch read them. One range scan.
    pub async fn gone(
        &self,
        table: &'static Table,
        rows: Vec<(i64, StoredKey, String)>,
    ) -> Result<Vec<String>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.conn
            .call(move |c| -> Result<Vec<String>> {
                let (lo, hi) = (rows[0].0, rows[rows.len() - 1].0);
                let mut st = c.prepare_cached(&format!(
                    "SELECT rowid, {} FROM {} WHERE rowid >= ?1 AND rowid <= ?2 ORDER BY rowid",
                    table.primary_key, table.name
                ))?;
                let now: HashMap<i64, StoredKey> = st
                    .query_map([lo, hi], |r| {
                        Ok((r.get(0)?, StoredKey::from(Raw::from(r.get_ref(1)?))))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(rows
                    .into_iter()
                    .filter(|(rowid, stored, _)| now.get(rowid) != Some(stored))
                    .map(|(_, _, key)| key)
                    .collect())
            })
            .await
            .map_err(Error::from)
    }

    /// SQLite's `data_version` on the source's connection: it moves when
    /// another connection (the application, in any process) commits.
    pub async fn data_version(&self) -> Result<i64> {
        self.conn
            .call(|c| c.query_row::<i64, _, _>("PRAGMA data_version", [], |r| r.get(0)))
            .await
            .map_err(Error::from)
    }

    /// Runs `f` on the source's connection (outside any transaction).
    pub async fn with_conn<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.conn.call(move |c| f(c)).await.map_err(Error::from)
    }

    /// Images of rows read in a batch, to record them as rejects found on
    /// the PostgreSQL side (orphans, clashes); a row a live write deleted
    /// since is left out (it is no longer there to reject).
    pub async fn images(
        &self,
        table: &'static Table,
        rowids: Vec<i64>,
    ) -> Result<Vec<(i64, String, Value)>> {
        self.conn
            .call(move |c| -> Result<Vec<(i64, String, Value)>> {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {} FROM {} WHERE rowid = ?1",
                    table.column_list(),
                    table.name
                ))?;
                let key_at = column_index(table, table.primary_key);
                let mut out = Vec::with_capacity(rowids.len());
                for rowid in rowids {
                    let mut rows = st.query([rowid])?;
                    let Some(row) = rows.next()? else {
                        continue;
                    };
                    let raws: Vec<Raw<'_>> = (0..table.columns.len())
                        .map(|i| row.get_ref(i).map(Raw::from))
                        .collect::<rusqlite::Result<_>>()?;
                    out.push((
                        rowid,
                        row_key(raws[key_at], rowid),
                        row::original_image(table, &raws),
                    ));
                }
                Ok(out)
            })
            .await
            .map_err(Error::from)
    }

    /// The tables and columns of the file the schema does not describe
    /// (`crate::audit::drift`, the audit's own rule).
    pub async fn drift(
        &self,
        schema: &'static crate::tables::Schema,
    ) -> Result<Vec<crate::audit::Unknown>> {
        self.conn
            .call(move |c| crate::audit::drift_from(c, schema))
            .await
            .map_err(Error::from)
    }

    /// The highest id SQLite has handed out for a serial table: its largest
    /// rowid, or the AUTOINCREMENT counter when that is higher.
    pub async fn max_id(&self, table: &'static Table) -> Result<i64> {
        self.conn
            .call(move |c| -> Result<i64> {
                let max: Option<i64> =
                    c.query_row(&format!("SELECT max(rowid) FROM {}", table.name), [], |r| {
                        r.get(0)
                    })?;
                let seq: Option<i64> = c
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                        [table.name],
                        |r| r.get(0),
                    )
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        // No AUTOINCREMENT table was ever written: no sqlite_sequence.
                        rusqlite::Error::SqliteFailure(_, Some(m))
                            if m.contains("no such table") =>
                        {
                            Ok(None)
                        }
                        e => Err(e),
                    })?;
                Ok(max.unwrap_or(0).max(seq.unwrap_or(0)))
            })
            .await
            .map_err(Error::from)
    }
}

fn read_snapshot(
    c: &mut rusqlite::Connection,
    table: &'static Table,
    after: i64,
    limit: usize,
    policy: Policy,
    losers: &Losers,
) -> Result<Batch> {
    let mut st = c.prepare_cached(&format!(
        "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        table.column_list(),
        table.name
    ))?;
    let ncols = table.columns.len();
    let key_at = column_index(table, table.primary_key);
    let unique_at: Vec<usize> = unique_columns(table)
        .into_iter()
        .map(|n| column_index(table, n))
        .collect();
    let parent_at: Vec<usize> = table
        .foreign_keys
        .iter()
        .map(|f| column_index(table, f.column))
        .collect();
    let mut batch = Batch {
        buf: Vec::with_capacity(limit * 256),
        ..Batch::default()
    };
    let mut rows = st.query(rusqlite::params![after, limit as i64])?;
    while let Some(r) = rows.next()? {
        let rowid: i64 = r.get(0)?;
        batch.read += 1;
        batch.last_rowid = Some(rowid);
        let mut raws: Vec<Raw<'_>> = Vec::with_capacity(ncols);
        for i in 0..ncols {
            raws.push(Raw::from(r.get_ref(i + 1)?));
        }
        let reject = |e: &convert::ValueError, copied: bool| RejectRecord {
            table: table.name.to_string(),
            row_key: row_key(raws[key_at], rowid),
            source_rowid: Some(rowid),
            column: e.column.to_string(),
            reason: e.reason,
            detail: e.detail.clone(),
            policy,
            row_copied: copied,
            original: row::original_image(table, &raws),
        };
        let converted = row::convert_row(table, &raws, policy);
        let conv = match converted {
            Ok(conv) => conv,
            Err(errors) => {
                let mut rec = reject(&errors[0], false);
                for e in &errors[1..] {
                    rec.detail.push_str(&format!(
                        "; also column {}: {}: {}",
                        e.column, e.reason, e.detail
                    ));
                }
                batch.rejects.push(rec);
                continue;
            }
        };
        if let Some(&(column, winner)) = losers.get(&rowid) {
            let e = convert::ValueError {
                column,
                reason: RejectReason::UniqueViolation,
                detail: format!(
                    "{} equals the value of rowid {winner} once converted ({})",
                    column,
                    raws[column_index(table, column)].describe()
                ),
            };
            batch.rejects.push(reject(&e, false));
            continue;
        }
        let start = batch.buf.len();
        let stored_key = StoredKey::from(raws[key_at]);
        encode::encode_row(&mut batch.buf, &conv.cells, &raws);
        let nulled = conv.nulled.iter().map(|e| reject(e, true)).collect();
        batch.rows.push(SourceRow {
            rowid,
            uniques: unique_at
                .iter()
                .map(|&i| cell_text(&conv.cells[i]))
                .collect(),
            parents: parent_at
                .iter()
                .map(|&i| cell_text(&conv.cells[i]))
                .collect(),
            range: start..batch.buf.len(),
            nulled,
            stored_key,
        });
    }
    drop(rows);
    Ok(batch)
}
