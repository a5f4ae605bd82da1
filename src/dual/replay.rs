//! Outbox drains (the replayer's and a flip's) and the batched clears of
//! entries already copied.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::changes::Change;
use crate::error::{Backend, Result};
use crate::metrics as m;
use crate::outbox;

use super::{DualStore, Inner};

impl DualStore {
    /// Clears applied PostgreSQL outbox entries every few milliseconds and
    /// forgets old SQLite apply versions, while the store lives.
    pub(super) async fn clearer(inner: std::sync::Weak<Inner>) {
        let mut pruned = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let d = DualStore { inner };
            if let Err(e) = d.flush_clears().await {
                tracing::debug!(error = %e, "outbox clear deferred");
            }
            if let Err(e) = d.flush_sqlite_clears().await {
                tracing::debug!(error = %e, "SQLite outbox clear deferred");
            }
            if pruned.elapsed() > Duration::from_secs(30) {
                pruned = Instant::now();
                let r = d.inner.sqlite.locked(outbox::sqlite_prune_applied).await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "apply versions not pruned");
                }
            }
        }
    }

    pub(super) fn queue_clear(&self, c: &Change, upto: i64) {
        if crate::sqlite::lock::is_held() {
            // Cleared only once the held SQLite transaction commits.
            self.inner
                .held_clears
                .lock()
                .expect("clears lock")
                .push((c.clone(), upto));
            return;
        }
        let mut q = self.inner.clears.lock().expect("clears lock");
        let e = q.entry(c.clone()).or_insert(upto);
        *e = (*e).max(upto);
    }

    pub(super) fn queue_sqlite_clear(&self, c: &Change, upto: i64) {
        let mut q = self.inner.sqlite_clears.lock().expect("clears lock");
        let e = q.entry(c.clone()).or_insert(upto);
        *e = (*e).max(upto);
    }

    /// Clears the SQLite outbox entries copied so far, in one locked
    /// transaction (kept for the next try when it fails).
    pub(crate) async fn flush_sqlite_clears(&self) -> Result<()> {
        let batch: Vec<(Change, i64)> = {
            let mut q = self.inner.sqlite_clears.lock().expect("clears lock");
            if q.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *q).into_iter().collect()
        };
        let b = batch.clone();
        let r = self
            .inner
            .sqlite
            .locked(move |conn| -> Result<()> {
                for (c, upto) in &b {
                    outbox::sqlite_clear(conn, c, *upto)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            for (c, upto) in batch {
                self.queue_sqlite_clear(&c, upto);
            }
            return Err(e);
        }
        Ok(())
    }

    /// As `flush_clears`, unless a flush is running already (then what it
    /// leaves is cleared by the next one).
    pub(super) async fn flush_clears_if_idle(&self) {
        if self.inner.flushing.try_lock().is_ok() {
            let _ = self.flush_clears().await;
        }
    }

    /// Clears the PostgreSQL outbox entries applied so far (kept for the
    /// next try when PostgreSQL does not answer).
    pub(crate) async fn flush_clears(&self) -> Result<()> {
        // One flush at a time: concurrent deletes of one key's entries
        // would only wait on each other's row locks.
        let _one = self.inner.flushing.lock().await;
        let batch: Vec<(Change, i64)> = {
            let mut q = self.inner.clears.lock().expect("clears lock");
            if q.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *q).into_iter().collect()
        };
        if let Err(e) = outbox::pg_clear_many(self.inner.pg.pool(), &batch).await {
            for (c, upto) in batch {
                self.queue_clear(&c, upto);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Applies the outbox entries of `side` pending when it starts (each
    /// once; or until an apply fails, which is returned). Returns how many
    /// were applied. Outside the lock only the authoritative side's outbox
    /// is applied, fenced by the epoch; a flip drains both inside it.
    pub(crate) async fn drain(&self, side: Backend, batch: i64) -> Result<u64> {
        let applied = self.drain_pending(side, batch).await?;
        // The last batch's clears too: what was applied is not left
        // counted as pending (a flip's are committed with its lock).
        if !crate::sqlite::lock::is_held() {
            match side {
                Backend::Postgres => self.flush_clears().await?,
                Backend::Sqlite => self.flush_sqlite_clears().await?,
            }
        }
        Ok(applied)
    }

    async fn drain_pending(&self, side: Backend, batch: i64) -> Result<u64> {
        let held = crate::sqlite::lock::is_held();
        let routing = self.routing();
        if !held && routing.authoritative() != side {
            return Ok(0);
        }
        // Every copy of this drain is fenced by the epoch it started under:
        // after a flip, SQLite's rows (read outside the lock) may trail
        // PostgreSQL's, and must not land there.
        let fence = (!held).then_some(routing.epoch);
        // What is pending now, and no more: under load new entries keep
        // coming (outside the lock), and their own copies handle them.
        let upto = match side {
            Backend::Sqlite => self.sqlite_rw(outbox::sqlite_max_id).await?,
            Backend::Postgres => outbox::pg_max_id(self.inner.pg.pool()).await?,
        };
        let mut applied = 0;
        let mut after = 0i64;
        loop {
            if !held {
                match side {
                    Backend::Postgres => self.flush_clears().await?,
                    Backend::Sqlite => self.flush_sqlite_clears().await?,
                }
            }
            let entries = match side {
                Backend::Sqlite => {
                    let schema = self.schema();
                    self.sqlite_rw(move |conn| outbox::sqlite_fetch(conn, schema, after, batch))
                        .await?
                }
                Backend::Postgres => {
                    outbox::pg_fetch(self.inner.pg.pool(), self.schema(), after, batch).await?
                }
            };
            if entries.is_empty() {
                return Ok(applied);
            }
            let mut failed = None;
            // Entries come in id order: one past `upto` ends the drain.
            let past_upto = entries.last().is_some_and(|e| e.id > upto);
            let entries: Vec<outbox::Entry> =
                entries.into_iter().filter(|e| e.id <= upto).collect();
            if held && side == Backend::Sqlite && self.copy_batch_held(&entries).await? {
                let n = entries.len() as u64;
                after = entries
                    .iter()
                    .map(|e| e.id)
                    .max()
                    .unwrap_or(after)
                    .max(after);
                applied += n;
                self.inner.counters.replayed.fetch_add(n, Ordering::Relaxed);
                metrics::counter!(m::OUTBOX_REPLAYED, "side" => side.as_str()).increment(n);
                if past_upto || after >= upto {
                    return Ok(applied);
                }
                continue;
            }
            // Inside a flip, PostgreSQL's entries whose image SQLite holds
            // already (landed by their write, only the clear still queued in
            // its process) are not read again: cleared once the held
            // transaction commits.
            let entries = if held && side == Backend::Postgres {
                let (landed, rest) = self.split_landed(entries).await?;
                for (c, id) in landed {
                    after = after.max(id);
                    self.queue_clear(&c, id);
                }
                rest
            } else {
                entries
            };
            for e in entries {
                after = after.max(e.id);
                if let Err(err) = self.apply_carried(&e.change, e.side, None, fence).await {
                    // Unavailable: the rest would fail too.
                    if err.is_unavailable() {
                        return Err(err);
                    }
                    tracing::debug!(table = e.change.table, key = %e.change.key, error = %err, "outbox entry not applied; kept");
                    failed = Some(err);
                    continue;
                }
                applied += 1;
                self.inner.counters.replayed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::OUTBOX_REPLAYED, "side" => side.as_str()).increment(1);
            }
            if let Some(err) = failed {
                return Err(err);
            }
            if past_upto || after >= upto {
                return Ok(applied);
            }
        }
    }

    /// Splits PostgreSQL outbox entries into those whose image (or a newer
    /// one) SQLite holds already, by its recorded versions, as (key, id)
    /// to clear, and the rest.
    async fn split_landed(
        &self,
        entries: Vec<outbox::Entry>,
    ) -> Result<(Vec<(Change, i64)>, Vec<outbox::Entry>)> {
        self.sqlite_rw(move |conn| {
            let mut landed = Vec::new();
            let mut rest = Vec::new();
            for e in entries {
                if outbox::sqlite_applied(conn, &e.change)?.is_some_and(|v| v >= e.id) {
                    landed.push((e.change, e.id));
                } else {
                    rest.push(e);
                }
            }
            Ok((landed, rest))
        })
        .await
    }

    /// Inside a flip or a return (SQLite's lock held; every copy made
    /// outside it is fenced out by the epoch already moved on PostgreSQL):
    /// copies SQLite's `entries` to PostgreSQL in one transaction, each
    /// key's current image once (keys in the order they were first
    /// changed, so parents land before their children), and clears them.
    /// False, with nothing written, when PostgreSQL refused one: the caller
    /// then copies one entry at a time (which rejects or waits per row).
    async fn copy_batch_held(&self, entries: &[outbox::Entry]) -> Result<bool> {
        let mut order: Vec<Change> = Vec::new();
        let mut upto: std::collections::HashMap<Change, i64> = std::collections::HashMap::new();
        for e in entries {
            let u = upto.entry(e.change.clone()).or_insert_with(|| {
                order.push(e.change.clone());
                e.id
            });
            *u = (*u).max(e.id);
        }
        if order.is_empty() {
            return Ok(true);
        }
        let mut keys = Vec::with_capacity(order.len());
        for c in &order {
            let Some(table) = self.schema().by_name(c.table) else {
                return Ok(false);
            };
            let Ok(key) = crate::image::Key::parse(table, &c.key) else {
                return Ok(false);
            };
            keys.push((table, key));
        }
        let k = keys.clone();
        let images = self
            .sqlite_rw(move |conn| -> Result<Vec<Option<crate::image::Image>>> {
                k.iter()
                    .map(|(t, key)| crate::image::sqlite_read(conn, t, key))
                    .collect()
            })
            .await?;
        let mut tx = self.inner.pg.pool().begin().await?;
        for ((table, key), img) in keys.iter().zip(&images) {
            let r = match img {
                Some(img) => crate::image::pg_upsert(&mut *tx, table, img).await,
                None => crate::image::pg_delete(&mut *tx, table, key)
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = r {
                if e.is_unavailable() {
                    return Err(e);
                }
                tracing::debug!(table = table.name, error = %e, "batched copy refused; copying one entry at a time");
                let _ = tx.rollback().await;
                return Ok(false);
            }
        }
        tx.commit().await?;
        let clears: Vec<(Change, i64)> = order.iter().map(|c| (c.clone(), upto[c])).collect();
        self.inner
            .sqlite
            .locked(move |conn| -> Result<()> {
                for (c, u) in &clears {
                    outbox::sqlite_clear(conn, c, *u)?;
                }
                Ok(())
            })
            .await?;
        Ok(true)
    }

    /// Entries pending in both outboxes (PostgreSQL's counted only when reachable).
    pub async fn outbox_pending(&self) -> Result<i64> {
        self.flush_clears_if_idle().await;
        let s = self.inner.sqlite.read(outbox::sqlite_pending).await?;
        let p = outbox::pg_pending(self.inner.pg.pool()).await.unwrap_or(0);
        metrics::gauge!(m::OUTBOX_PENDING).set((s + p) as f64);
        Ok(s + p)
    }

    /// Whether anything waits in either outbox.
    pub(super) async fn anything_pending(&self) -> bool {
        self.outbox_pending().await.map(|n| n > 0).unwrap_or(true)
    }
}
