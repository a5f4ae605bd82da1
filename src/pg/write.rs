//! The write transaction: begun and committed by plain statements on a
//! pooled connection (the one taken ahead of the order lock when there is
//! one), the change capture switched on with the BEGIN, and the capture
//! triggers' notes read in the COMMIT's own round trip.

use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use super::store::PgStore;
use super::warm::Conn;
use crate::changes::{self, Change};
use crate::error::Result;
use crate::tables::Schema;

impl PgStore {
    pub(super) async fn begin(&self) -> Result<WriteTx> {
        let begun = std::time::Instant::now();
        let ready = READY.try_with(|r| r.borrow_mut().take()).ok().flatten();
        let mut conn = match ready {
            Some(c) => c,
            None => self.conn().await?,
        };
        // One round trip: the capture switch travels with the BEGIN.
        let begin = if self.outbox_enabled() {
            "BEGIN; SET LOCAL cutover.capture = 'on'"
        } else {
            "BEGIN"
        };
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        Ok(WriteTx {
            conn: Some(conn),
            begun,
        })
    }

    /// Runs an application's write (`dual::WriteQuery`) in a write
    /// transaction: its changes captured, committed when it succeeds.
    pub(crate) async fn run_write<W: crate::dual::WriteQuery>(&self, w: &W) -> Result<W::Output> {
        let mut tx = self.begin().await?;
        let out = w.postgres(&mut tx).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    /// Runs an application's read (`dual::ReadQuery`) on a pooled connection.
    pub(crate) async fn run_read<R: crate::dual::ReadQuery>(&self, r: &R) -> Result<R::Output> {
        let mut c = self.conn().await?;
        let out = r.postgres(&mut c).await?;
        c.finished();
        Ok(out)
    }

    /// A read-only transaction (no change capture).
    pub(super) async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| self.limits.map(e))
    }

    /// Commits; when the outbox is on, the same round trip first reads the
    /// capture triggers' notes of the rows this transaction changed (keys,
    /// outbox ids, images) and reports them (`noted_changes`).
    pub(super) async fn commit(&self, mut tx: WriteTx) -> Result<()> {
        crate::failpoint::hit("pg.before_commit");
        changes::commit_sent();
        if !self.outbox_enabled() {
            sqlx::raw_sql("COMMIT").execute(&mut *tx).await?;
            tx.committed();
            return Ok(());
        }
        // The committed images travel with the keys, so the secondary apply
        // does not depend on reaching PostgreSQL again after the commit. The
        // capture triggers note each change in `cutover.changed` (migration
        // 0006); reading it goes with the COMMIT as one simple-protocol
        // message. The images were taken during the transaction: their age
        // counts from its BEGIN.
        let read_at = tx.begun;
        let rows = sqlx::raw_sql(
            "SELECT current_setting('cutover.changed', true), \
             current_setting('cutover.overflow', true); COMMIT",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.committed();
        crate::failpoint::pause("pg.after_commit").await;
        if crate::failpoint::cut("pg.after_commit") {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection cut after COMMIT (failpoint)",
            ))
            .into());
        }
        // Committed: from here on nothing fails the caller. What cannot be
        // read stays in the outbox for the replayer.
        let text = |i: usize| -> String {
            rows.first()
                .and_then(|r| r.try_get::<Option<String>, _>(i).ok().flatten())
                .unwrap_or_default()
        };
        let mut reported = noted_changes(&text(0), read_at, self.schema);
        if let Ok(txid) = text(1).parse::<i64>() {
            // Past the notes' limit: the outbox lists every key the
            // transaction changed, with its last entry; a noted image is
            // carried only when it is that last entry.
            let listed: std::result::Result<Vec<(i64, String, String)>, _> = sqlx::query_as(
                "SELECT max(id), table_name, row_key FROM cutover.outbox WHERE txid = $1 \
                 GROUP BY table_name, row_key ORDER BY min(id)",
            )
            .bind(txid)
            .fetch_all(&self.pool)
            .await;
            let mut noted: std::collections::HashMap<Change, changes::Carried> = reported
                .drain(..)
                .filter_map(|(c, carried)| carried.map(|cv| (c, cv)))
                .collect();
            for (id, t, k) in listed.unwrap_or_default() {
                let Some(table) = self.schema.by_name(&t) else {
                    continue;
                };
                let c = Change::new(table.name, k);
                let carried = noted.remove(&c).filter(|cv| cv.outbox_id == id);
                reported.push((c, carried));
            }
        }
        changes::report_carried(reported);
        Ok(())
    }
}
tokio::task_local! {
    static READY: std::cell::RefCell<Option<Conn>>;
}

/// Runs `f` with `conn` as the connection its first write transaction
/// uses: the dual store takes it before the order lock, so a write's wait
/// for the pool does not hold that lock (a flip would wait for it too).
pub(crate) async fn with_ready<F: std::future::Future>(conn: Option<Conn>, f: F) -> F::Output {
    READY.scope(std::cell::RefCell::new(conn), f).await
}

/// The changes a transaction's capture triggers noted (migration 0006), one
/// JSON array per line: outbox id, table, key, and the row as `to_jsonb`
/// rendered it (null when deleted). Each key once, in the order first
/// changed, with its last entry: the highest id and the row as committed. A
/// row whose rendering does not decode is reported without its image: the
/// apply reads it back. A line that does not read is left to the replayer
/// (its outbox entry stays until applied).
fn noted_changes(
    noted: &str,
    read_at: std::time::Instant,
    schema: &Schema,
) -> Vec<(Change, Option<changes::Carried>)> {
    let mut order: Vec<Change> = Vec::new();
    let mut last: std::collections::HashMap<Change, (i64, Value, Vec<String>)> =
        std::collections::HashMap::new();
    for line in noted.lines().filter(|l| !l.is_empty()) {
        // [id, table, key, image, the JSON columns holding SQL NULL]
        let parsed = serde_json::from_str::<(i64, String, String, Value, Vec<String>)>(line)
            .or_else(|_| {
                serde_json::from_str::<(i64, String, String, Value)>(line)
                    .map(|(a, b, c, d)| (a, b, c, d, Vec::new()))
            });
        let Ok((id, t, k, img, sql_nulls)) = parsed else {
            tracing::warn!(note = line, "unreadable change note; left to the replayer");
            continue;
        };
        let Some(table) = schema.by_name(&t) else {
            continue;
        };
        let c = Change::new(table.name, k);
        match last.get_mut(&c) {
            Some(e) => {
                if id > e.0 {
                    *e = (id, img, sql_nulls);
                }
            }
            None => {
                order.push(c.clone());
                last.insert(c, (id, img, sql_nulls));
            }
        }
    }
    order
        .into_iter()
        .map(|c| {
            let (id, img, sql_nulls) = last.remove(&c).expect("noted above");
            let table = schema.by_name(c.table).expect("checked above");
            let image = match img {
                Value::Null => Some(None),
                json => crate::image::image_from_jsonb(table, &json, &sql_nulls).map(Some),
            };
            let carried = image.map(|image| changes::Carried {
                outbox_id: id,
                image,
                read_at,
            });
            (c, carried)
        })
        .collect()
}

/// A write transaction on a pooled connection, begun and ended by plain
/// statements (so the commit can read the capture notes in its round
/// trip). Dropped before it commits, it rolls back on a task of its own
/// before the connection returns to the pool; a connection that could not be
/// rolled back is closed.
pub(super) struct WriteTx {
    conn: Option<Conn>,
    begun: std::time::Instant,
}

impl WriteTx {
    /// The COMMIT went through: the connection waits warm for the next
    /// call.
    fn committed(&mut self) {
        if let Some(c) = self.conn.take() {
            c.finished();
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("transaction still open")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("transaction still open")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut pending = Unfinished(Some(conn.into_pooled()));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(c) = pending.0.as_mut() {
                    if sqlx::raw_sql("ROLLBACK").execute(&mut **c).await.is_ok() {
                        // Rolled back: the connection returns to the pool.
                        pending.0.take();
                    }
                }
            });
        }
    }
}

/// A connection whose transaction may still be open: closed when dropped,
/// never returned to the pool as it is (also when the task meant to roll it
/// back never runs).
struct Unfinished(Option<PoolConnection<Postgres>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::noted_changes;

    #[test]
    fn noted_changes_keep_each_key_once_with_its_last_image() {
        let user = |name: &str| {
            format!(
                r#"{{"id": "u1", "username": "{name}", "created_at": "2026-12-01T07:17:31.457775+00:00", "last_scraped": null, "profile_data": {{"a": 1}}, "profile_picture_url": null}}"#
            )
        };
        let noted = [
            format!(r#"[7, "users", "u1", {}]"#, user("first")),
            r#"[8, "tweets", "t1", null]"#.to_string(),
            format!(r#"[9, "users", "u1", {}]"#, user("second")),
            r#"[10, "tweets", "t2", {"id": "t2"}]"#.to_string(),
            r#"[11, "nowhere", "x", null]"#.to_string(),
            "not json".to_string(),
            r#"[12, "users", "u2", {"id": "u2"}]"#.to_string(),
        ]
        .join("\n")
            + "\n";
        let at = std::time::Instant::now();
        let got = noted_changes(&noted, at, &crate::tables::TWITTER);
        let keys: Vec<_> = got.iter().map(|(c, _)| (c.table, c.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("users", "u1"),
                ("tweets", "t1"),
                ("tweets", "t2"),
                ("users", "u2")
            ]
        );
        let u1 = got[0].1.as_ref().expect("carried");
        assert_eq!(u1.outbox_id, 9);
        let img = u1.image.as_ref().expect("not deleted");
        assert!(img.contains(&crate::row::Cell::Text("second".to_string())));
        let t1 = got[1].1.as_ref().expect("carried");
        assert_eq!((t1.outbox_id, t1.image.is_none()), (8, true), "deleted");
        assert!(got[2].1.is_none(), "not noted: read back by the apply");
        assert!(
            got[3].1.is_none(),
            "a rendering that does not decode is read back"
        );
        assert!(noted_changes("", at, &crate::tables::TWITTER).is_empty());
    }
}
