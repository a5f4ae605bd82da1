//! The write transaction: an application write under SQLite's write lock
//! (`lock.rs`), as a savepoint of a held transaction or one of its own,
//! with the change capture (TEMP triggers noting each changed key, read
//! before the commit, recorded in the outbox when it is on).

use std::sync::atomic::Ordering as AtomicOrdering;

use rusqlite::Connection;

use super::connect::SqliteStore;
use crate::changes::{self, Change};
use crate::error::Result;
use crate::tables::Schema;

impl SqliteStore {
    /// Runs `f` on the write connection under SQLite's write lock, as one
    /// unit: committed when `f` succeeds, rolled back (nothing written) when
    /// it fails. Inside `lock::within` the caller holds the lock already and
    /// `f` runs as a savepoint of the caller's transaction (and sees what it
    /// wrote so far); otherwise it takes the lock itself.
    pub async fn locked<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let body = move |c: &mut Connection| -> Result<R> {
            let sp = c.savepoint()?;
            let out = f(&sp)?;
            sp.commit()?;
            Ok(out)
        };
        if crate::sqlite::lock::is_held() {
            return Ok(self.conn.call(body).await?);
        }
        let held = self.lock().await?;
        match held.call(body).await {
            Ok(v) => {
                held.commit().await?;
                Ok(v)
            }
            Err(e) => {
                held.rollback().await;
                Err(e)
            }
        }
    }

    /// Runs an application write `f` (see `locked`), noting the rows it
    /// changed: recorded in the outbox when it is on, and reported.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let outbox = self.outbox.clone();
        let schema = self.schema;
        let (out, changed) = self
            .locked(move |c| -> Result<(R, Vec<Change>)> {
                c.execute_batch("UPDATE temp._cutover_capture SET active = 1")?;
                let out = match f(c) {
                    Ok(out) => out,
                    Err(e) => {
                        // The savepoint rolls back the notes too; the flag
                        // is reset in case the connection is reused unrolled.
                        let _ = c.execute_batch("UPDATE temp._cutover_capture SET active = 0");
                        return Err(e);
                    }
                };
                let changed = take_changes(c, schema)?;
                if outbox.load(AtomicOrdering::SeqCst) {
                    crate::outbox::sqlite_record(c, &changed)?;
                }
                Ok((out, changed))
            })
            .await?;
        changes::report(changed);
        Ok(out)
    }
}

/// Installs, for this connection only, triggers that note the key of every
/// row a write inserts, updates or deletes. They are TEMP triggers: nothing
/// is added to the legacy file, and the legacy application's own
/// connections are unaffected. They note only while `write` runs (the flag
/// in `temp._cutover_capture`), so the dual store's applies, which run on
/// the same connection, are not mistaken for application writes.
pub(super) fn install_change_capture(c: &mut Connection, schema: &Schema) -> Result<()> {
    let mut sql = String::from(
        "CREATE TEMP TABLE IF NOT EXISTS _cutover_capture (active INTEGER NOT NULL);
         INSERT INTO temp._cutover_capture SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM temp._cutover_capture);
         CREATE TEMP TABLE IF NOT EXISTS _cutover_changes (seq INTEGER PRIMARY KEY, table_name TEXT NOT NULL, row_key ANY);",
    );
    for t in schema.tables {
        for (event, row) in [("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")] {
            sql.push_str(&format!(
                "CREATE TEMP TRIGGER IF NOT EXISTS _cutover_{table}_{ev} AFTER {event} ON main.{table}
                 WHEN (SELECT active FROM temp._cutover_capture)
                 BEGIN INSERT INTO _cutover_changes (table_name, row_key) VALUES ('{table}', {row}.{pk}); END;",
                table = t.name,
                ev = event.to_lowercase(),
                pk = t.primary_key,
            ));
        }
    }
    c.execute_batch(&sql)?;
    Ok(())
}

/// The changes noted during this write, in statement order (parents
/// inserted before their children come first; children deleted first stay
/// first), and stops noting.
fn take_changes(tx: &Connection, schema: &Schema) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached("SELECT table_name, row_key FROM temp._cutover_changes ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let table: String = r.get(0)?;
            if let Some(t) = schema.by_name(&table) {
                out.push(Change::new(
                    t.name,
                    crate::row::key_text(r.get_ref(1)?.into()),
                ));
            }
        }
    }
    tx.execute_batch(
        "DELETE FROM temp._cutover_changes; UPDATE temp._cutover_capture SET active = 0",
    )?;
    Ok(out)
}
