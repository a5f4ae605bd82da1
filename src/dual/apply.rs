//! Copying a changed row to the other side as its current image.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::changes::{Captured, Carried, Change};
use crate::error::{Backend, Error, Result};
use crate::image::{self, Key};
use crate::metrics as m;
use crate::outbox;
use crate::tables;

use super::routing::Routing;
use super::{DualStore, Inner, KEY_LOCKS};

impl DualStore {
    /// Writes a PostgreSQL image (version `version`, read at `read_at`) to
    /// SQLite in one transaction, unless SQLite holds a newer one: its own
    /// pending change (during a fallback SQLite was authoritative; that entry
    /// copies it to PostgreSQL) or a higher recorded version. False when the
    /// image is too old to trust (nothing written).
    pub(super) async fn sqlite_apply(
        &self,
        c: &Change,
        key: &Key,
        version: i64,
        img: Option<image::Image>,
        read_at: Instant,
    ) -> Result<bool> {
        let table = self.schema().by_name(c.table).expect("checked by apply");
        let (k, cc) = (key.clone(), c.clone());
        // A flip or a return (holding the lock) applies PostgreSQL's
        // entries whatever the authority row says mid-way.
        let flipping = crate::sqlite::lock::is_held() && self.inner.flipping.load(Ordering::SeqCst);
        self.inner
            .sqlite
            .locked(move |tx| -> Result<bool> {
                // Checked under SQLite's write lock: no newer version can be
                // recorded and pruned before this commits.
                if read_at.elapsed() >= outbox::APPLY_WINDOW {
                    return Ok(false);
                }
                if !flipping {
                    pg_images_may_land(tx)?;
                }
                land_image(tx, &cc, table, &k, version, img.as_ref())?;
                Ok(true)
            })
            .await
    }

    /// Lands PostgreSQL writes' committed images in SQLite in one
    /// transaction made in one call on SQLite's thread, each change judged
    /// as `sqlite_apply` judges it (a pending SQLite change or a higher
    /// recorded version keeps an older image out) inside a savepoint of its
    /// own. A change that lands (or is superseded) has its PostgreSQL entry
    /// queued for clearing; one that fails stays in the outbox for the
    /// replayer, counted as a secondary failure.
    pub(super) async fn land_carried(&self, items: Vec<(&'static str, Change, Carried)>) {
        if items.is_empty() {
            return;
        }
        crate::failpoint::pause("dual.before_copy_to_sqlite").await;
        let mut work = Vec::with_capacity(items.len());
        for (_, c, cv) in &items {
            work.push((c.clone(), cv.outbox_id, cv.image.clone(), cv.read_at));
        }
        let schema = self.schema();
        let landed = self
            .inner
            .sqlite
            .transact(move |tx| -> Result<Vec<Result<()>>> {
                pg_images_may_land(tx)?;
                let out = work
                    .into_iter()
                    .map(|(c, version, img, read_at)| {
                        tx.prepare_cached("SAVEPOINT cutover_land")?.execute([])?;
                        let r = land_fresh(tx, schema, &c, version, img.as_ref(), read_at);
                        if r.is_err() {
                            tx.prepare_cached("ROLLBACK TO cutover_land")?.execute([])?;
                        }
                        tx.prepare_cached("RELEASE cutover_land")?.execute([])?;
                        Ok(r)
                    })
                    .collect::<Result<Vec<_>>>()?;
                crate::failpoint::hit("dual.after_sqlite_apply");
                Ok(out)
            })
            .await;
        let results: Vec<std::result::Result<(), String>> = match landed {
            Ok(r) => r
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
            Err(e) => {
                tracing::warn!(writes = items.len(), error = %e, "SQLite did not take PostgreSQL's images; kept in the outbox");
                items.iter().map(|_| Err(e.to_string())).collect()
            }
        };
        for ((op, c, cv), r) in items.into_iter().zip(results) {
            match r {
                Ok(()) => self.queue_clear(&c, cv.outbox_id),
                Err(e) => self.secondary_failed(op, &c, None, &e),
            }
        }
    }

    pub(super) fn key_lock(&self, c: &Change) -> &tokio::sync::Mutex<()> {
        &self.inner.key_locks[key_slot(c)]
    }

    /// Copies one changed row from `from` to the other side as its current
    /// image, then clears its outbox entries up to what was seen. A copy to
    /// PostgreSQL made outside the lock is fenced by the epoch this process
    /// follows (see `authority::pg_fence`).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) async fn apply(&self, c: &Change, from: Backend) -> Result<()> {
        let fence = (!crate::sqlite::lock::is_held()).then(|| self.routing().epoch);
        self.apply_carried(c, from, None, fence).await
    }

    /// As `apply`; `carried` is the image the write committed, copied as is
    /// unless SQLite holds a newer version of the key (see `sqlite_apply`);
    /// `fence` the epoch a copy to PostgreSQL must still find there.
    pub(super) async fn apply_carried(
        &self,
        c: &Change,
        from: Backend,
        carried: Option<&Carried>,
        fence: Option<i64>,
    ) -> Result<()> {
        match self.apply_image(c, from, carried, fence).await {
            Err(e)
                if from == Backend::Sqlite
                    && is_data_error(&e)
                    && !self.parent_pending(c, &e).await =>
            {
                // Judged again under SQLite's lock, where no write can
                // change the row: only a row that still cannot be copied
                // is rejected, and only its entries up to then are cleared.
                let (c, me) = (c.clone(), self.clone());
                self.under_lock(async move {
                    match me.apply_image(&c, from, None, None).await {
                        Err(e) if is_data_error(&e) && !me.parent_pending(&c, &e).await => {
                            me.reject_change(&c, &e).await
                        }
                        other => other,
                    }
                })
                .await
            }
            other => other,
        }
    }

    pub(super) async fn apply_image(
        &self,
        c: &Change,
        from: Backend,
        carried: Option<&Carried>,
        fence: Option<i64>,
    ) -> Result<()> {
        let table = self.schema().by_name(c.table).ok_or_else(|| {
            Error::InvalidArgument(format!("outbox names unknown table {:?}", c.table))
        })?;
        let key = Key::parse(table, &c.key)?;
        match from {
            Backend::Sqlite => {
                // Copies of one key from this process, one at a time. Only
                // this direction takes it: a copy to SQLite runs under
                // SQLite's write lock, which orders it already (and taking
                // this lock there too would invert the two locks' order).
                tracing::trace!(table = c.table, key = %c.key, "copy: waiting for the key lock");
                let _slot = self.key_lock(c).lock().await;
                tracing::trace!(table = c.table, key = %c.key, "copy: key lock taken");
                // Another process may copy the same key at the same moment,
                // and its newer image may reach PostgreSQL before this older
                // one. So after writing, SQLite is read again: the entry is
                // cleared only if the row still is what was copied, else the
                // newer image is copied too (until the row holds still).
                // Copies of one key, from every process, one after the
                // other: each reads SQLite only once it holds the key's
                // advisory lock, so the last copy to commit read the newest
                // image, and the entries it clears (up to what it read)
                // are all in what it wrote. (Without this, a slower copy
                // could land an older image after a newer copy cleared
                // both entries: nothing would be left to repair it.)
                let mut tx = self.inner.pg.pool().begin().await?;
                // A copy made after its write's commit (fenced) does not
                // wait long for a table or row PostgreSQL has locked (an
                // index build, a backfill batch): the row stays in the
                // outbox for the replayer. A flip's drain (under SQLite's
                // lock) waits.
                let lock_timeout = fence.map(|_| self.inner.config.copy_lock_timeout);
                image::pg_lock_copy(&mut *tx, c.table, &c.key, lock_timeout).await?;
                let (cc, k) = (c.clone(), key.clone());
                let (hw, img) = self
                    .sqlite_rw(move |conn| -> Result<_> {
                        // The high water first: the image read after it
                        // holds every change up to it.
                        let hw = outbox::sqlite_high_water(conn, &cc)?;
                        Ok((hw, image::sqlite_read(conn, table, &k)?))
                    })
                    .await?;
                crate::failpoint::pause("dual.before_copy_to_postgres").await;
                let written = match (&img, fence) {
                    (Some(img), Some(epoch)) => {
                        image::pg_upsert_fenced(&mut *tx, table, img, epoch).await?
                    }
                    (None, Some(epoch)) => {
                        image::pg_delete_fenced(&mut *tx, table, &key, epoch).await?
                    }
                    (Some(img), None) => {
                        image::pg_upsert(&mut *tx, table, img).await?;
                        true
                    }
                    (None, None) => {
                        image::pg_delete(&mut *tx, table, &key).await?;
                        true
                    }
                };
                tx.commit().await?;
                if !written {
                    // A flip or fallback moved the epoch: its drain copies
                    // this row (a flip has; a return will).
                    tracing::debug!(table = c.table, key = %c.key, "copy of an older epoch dropped");
                    return Ok(());
                }
                if let Some(hw) = hw {
                    if crate::sqlite::lock::is_held() {
                        let cc = c.clone();
                        self.inner
                            .sqlite
                            .locked(move |conn| outbox::sqlite_clear(conn, &cc, hw))
                            .await?;
                    } else {
                        self.queue_sqlite_clear(c, hw);
                    }
                }
                return Ok(());
            }
            Backend::Postgres => {
                // The image the write committed is copied as is: SQLite's
                // recorded version keeps an older one from landing over a
                // newer one. Otherwise (replayer, or an image too old to
                // trust) PostgreSQL's current image is read back.
                if let Some(cv) = carried.filter(|cv| cv.read_at.elapsed() < outbox::APPLY_WINDOW) {
                    crate::failpoint::pause("dual.before_copy_to_sqlite").await;
                    let applied = self
                        .sqlite_apply(c, &key, cv.outbox_id, cv.image.clone(), cv.read_at)
                        .await?;
                    if applied {
                        self.queue_clear(c, cv.outbox_id);
                        return Ok(());
                    }
                }
                let pool = self.inner.pg.pool();
                let read_at = Instant::now();
                let Some(hw) = outbox::pg_high_water(pool, c).await? else {
                    // No entry left: a later apply already copied the row.
                    return Ok(());
                };
                let img = image::pg_read(pool, table, &key).await?;
                if !self.sqlite_apply(c, &key, hw, img, read_at).await? {
                    return Err(Error::InvalidArgument(format!(
                        "{} {}: the image read from PostgreSQL took over {:?} to reach SQLite; left in the outbox",
                        c.table, c.key, outbox::APPLY_WINDOW
                    )));
                }
                self.queue_clear(c, hw);
            }
        }
        Ok(())
    }

    /// Copies a write's rows to the other side, fenced by the epoch the
    /// write was made under (outside the lock) or inside it. After
    /// SQLite's commit, rows of a table PostgreSQL has locked wait in the
    /// outbox, and several rows go in one transaction (`copy_together`),
    /// one by one when that fails.
    pub(super) async fn apply_changes(&self, op: &'static str, r: &Routing, captured: Captured) {
        if r.secondary().is_none() || captured.changes.is_empty() {
            return;
        }
        let _applying = self.applying();
        let from = r.authoritative();
        let fence = (!crate::sqlite::lock::is_held()).then_some(r.epoch);
        let to_pg_after_commit = from == Backend::Sqlite && fence.is_some();
        let mut seen = std::collections::HashSet::new();
        let mut changes: Vec<Change> = captured
            .changes
            .into_iter()
            .filter(|c| seen.insert(c.clone()))
            .collect();
        if to_pg_after_commit {
            changes.retain(|c| !self.left_for_busy_table(op, c));
            if let (true, Some(epoch)) = (changes.len() > 1, fence) {
                let counters = &self.inner.counters;
                match self.copy_together(&changes, epoch).await {
                    Ok(()) => {
                        counters.copies_together.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // PostgreSQL is out of reach: each row would fail the
                    // same way; they wait in the outbox for the replayer.
                    Err(e) if e.is_unavailable() => {
                        for c in &changes {
                            self.secondary_failed(op, c, e.db_kind(), &e);
                        }
                        return;
                    }
                    Err(e) => {
                        counters.copies_one_by_one.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(op, rows = changes.len(), error = %e, "the write's rows did not copy to PostgreSQL together; copying them one by one");
                    }
                }
            }
        }
        for c in changes {
            // A copy made one by one may have found its table locked.
            if to_pg_after_commit && self.left_for_busy_table(op, &c) {
                continue;
            }
            if let Err(e) = self
                .apply_carried(&c, from, captured.carried.get(&c), fence)
                .await
            {
                if to_pg_after_commit && e.db_kind() == Some(crate::error::DbErrorKind::Busy) {
                    self.mark_table_busy(c.table);
                }
                self.secondary_failed(op, &c, e.db_kind(), &e);
            }
        }
    }

    /// Copies a write's changed rows (more than one) from SQLite to
    /// PostgreSQL in one transaction, after the write's commit, fenced by
    /// `epoch`: one commit, where copying them one by one made one each.
    /// Each key is copied as `apply_image` copies it, under the same locks:
    /// this process's key locks (in slot order) and every key's copy lock
    /// in PostgreSQL (in one statement, in the order `settle_gone` takes
    /// them), then SQLite read once for every key (high water, then image),
    /// then the images written. Waits for a PostgreSQL lock end after the
    /// copy lock timeout. Any error rolls the whole copy back (nothing is
    /// written) and the caller copies the rows one by one, where a row's
    /// own trouble (a parent not there yet, a bad value, a lock) is judged
    /// for that row alone.
    async fn copy_together(&self, changes: &[Change], epoch: i64) -> Result<()> {
        let schema = self.schema();
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            let table = schema.by_name(c.table).ok_or_else(|| {
                Error::InvalidArgument(format!("outbox names unknown table {:?}", c.table))
            })?;
            rows.push((c.clone(), table, Key::parse(table, &c.key)?));
        }
        let mut slots: Vec<usize> = changes.iter().map(key_slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut held = Vec::with_capacity(slots.len());
        for s in slots {
            held.push(self.inner.key_locks[s].lock().await);
        }
        let mut tx = self.inner.pg.pool().begin().await?;
        image::pg_lock_copies(
            &mut *tx,
            changes.iter().map(|c| (c.table, c.key.as_str())),
            self.inner.config.copy_lock_timeout,
        )
        .await?;
        let wanted = rows.clone();
        let read = self
            .sqlite_rw(move |conn| -> Result<Vec<_>> {
                wanted
                    .iter()
                    .map(|(c, table, key)| {
                        // The high water first: the image read after it
                        // holds every change up to it.
                        let hw = outbox::sqlite_high_water(conn, c)?;
                        Ok((hw, image::sqlite_read(conn, table, key)?))
                    })
                    .collect()
            })
            .await?;
        crate::failpoint::pause("dual.before_copy_to_postgres").await;
        for ((_, table, key), (_, img)) in rows.iter().zip(&read) {
            let written = match img {
                Some(img) => image::pg_upsert_fenced(&mut *tx, table, img, epoch).await,
                None => image::pg_delete_fenced(&mut *tx, table, key, epoch).await,
            }
            .inspect_err(|e| {
                // The table (or a row of it) is locked past the copy lock
                // timeout, as by an index build: its rows go straight to
                // the outbox, where copying them one by one would wait
                // out the timeout again.
                if e.db_kind() == Some(crate::error::DbErrorKind::Busy) {
                    self.mark_table_busy(table.name);
                }
            })?;
            if !written {
                // The first statement found another epoch (it holds the
                // authority row otherwise): nothing was written. A flip or
                // fallback moved it; its drain copies these rows.
                tracing::debug!(rows = rows.len(), "copy of an older epoch dropped");
                return Ok(());
            }
        }
        tx.commit().await?;
        drop(held);
        for ((c, _, _), (hw, _)) in rows.iter().zip(read) {
            if let Some(hw) = hw {
                self.queue_sqlite_clear(c, hw);
            }
        }
        Ok(())
    }

    /// True when `c`'s table is locked in PostgreSQL (`table_busy`): its
    /// copy is counted as deferred and left in the outbox.
    fn left_for_busy_table(&self, op: &'static str, c: &Change) -> bool {
        let busy = self.table_busy(c.table);
        if busy {
            self.secondary_failed(
                op,
                c,
                Some(crate::error::DbErrorKind::Busy),
                &"the table is locked in PostgreSQL; the copy waits in the outbox",
            );
        }
        busy
    }

    /// Whether copies to `table` go straight to the outbox for now (a copy
    /// found it locked a moment ago).
    fn table_busy(&self, table: &str) -> bool {
        let busy = self.inner.busy_tables.lock().expect("busy tables");
        busy.get(table).is_some_and(|until| Instant::now() < *until)
    }

    fn mark_table_busy(&self, table: &str) {
        if let Some(t) = self.schema().by_name(table) {
            let until = Instant::now() + self.inner.config.copy_busy_pause;
            self.inner
                .busy_tables
                .lock()
                .expect("busy tables")
                .insert(t.name, until);
            tracing::info!(table = t.name, pause_ms = self.inner.config.copy_busy_pause.as_millis() as u64, "PostgreSQL has the table locked (an index build or a backfill batch): its copies wait in the outbox for now");
        }
    }

    /// Counts and logs a copy to the other side that did not land (its
    /// entry stays in the outbox for the replayer). In `dualwrite` a row
    /// whose parent the backfill has not copied yet is refused by
    /// PostgreSQL's foreign key: that is designed, counted as deferred and
    /// logged at INFO; anything else is a failure.
    fn secondary_failed(
        &self,
        op: &'static str,
        c: &Change,
        kind: Option<crate::error::DbErrorKind>,
        e: &dyn std::fmt::Display,
    ) {
        use crate::error::DbErrorKind;
        let stage = self.routing().stage;
        let deferred = (stage == crate::stage::Stage::DualWrite
            && kind == Some(DbErrorKind::ForeignKeyViolation))
            || (matches!(
                stage,
                crate::stage::Stage::DualWrite | crate::stage::Stage::Shadow
            ) && kind == Some(DbErrorKind::Busy));
        if deferred {
            self.inner
                .counters
                .secondary_deferred
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::SECONDARY_WRITES_DEFERRED, "op" => op, "table" => c.table)
                .increment(1);
            if kind == Some(DbErrorKind::ForeignKeyViolation) {
                tracing::info!(op, table = c.table, key = %c.key, "copy to PostgreSQL deferred: its parent row is not in PostgreSQL yet; its copy waits in the outbox ahead of this one");
            } else {
                tracing::debug!(op, table = c.table, key = %c.key, "copy to PostgreSQL deferred: the table or row is locked in PostgreSQL (an index build or a backfill batch); the replayer copies it");
            }
            return;
        }
        self.inner
            .counters
            .secondary_failures
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SECONDARY_WRITE_FAILURES, "op" => op, "table" => c.table).increment(1);
        tracing::debug!(op, table = c.table, key = %c.key, error = %e, "secondary write failed; kept in the outbox");
    }

    /// Counts a copy in flight until the guard drops (`settle` waits for
    /// none to be left).
    pub(super) fn applying(&self) -> Applying {
        self.inner.applying.fetch_add(1, Ordering::SeqCst);
        Applying(self.inner.clone())
    }

    /// Waits until the copies made after their write was acknowledged (to
    /// PostgreSQL after SQLite's commit, to SQLite after PostgreSQL's) are
    /// done, and flushes the clears queued so far.
    pub async fn settle(&self) {
        loop {
            let done = self.inner.applied.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.inner.applying.load(Ordering::SeqCst) == 0 {
                break;
            }
            done.await;
        }
        let _ = self.flush_sqlite_clears().await;
        let _ = self.flush_clears().await;
    }
}

/// A copy in flight (see `DualStore::applying`).
pub(super) struct Applying(std::sync::Arc<Inner>);

impl Drop for Applying {
    fn drop(&mut self) {
        if self.0.applying.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.applied.notify_waiters();
        }
    }
}

/// The slot of this process's key locks that `c` takes.
fn key_slot(c: &Change) -> usize {
    let mut h = DefaultHasher::new();
    c.hash(&mut h);
    (h.finish() as usize) % KEY_LOCKS
}

/// PostgreSQL's images land in SQLite only while it is authoritative:
/// during a fallback its pending entries wait for the return, which judges
/// them against what SQLite took meanwhile.
fn pg_images_may_land(tx: &rusqlite::Connection) -> Result<()> {
    if crate::authority::sqlite_read(tx)?.is_some_and(|a| a.authoritative() != Backend::Postgres) {
        return Err(Error::InvalidArgument(
            "SQLite is authoritative now; PostgreSQL's entries wait for the return".into(),
        ));
    }
    Ok(())
}

/// Writes PostgreSQL's image of `c` (version `version`; None: deleted) to
/// SQLite inside the caller's transaction, unless SQLite holds a newer one:
/// its own pending change or a higher recorded version.
fn land_image(
    tx: &rusqlite::Connection,
    c: &Change,
    table: &'static tables::Table,
    key: &Key,
    version: i64,
    img: Option<&image::Image>,
) -> Result<()> {
    if outbox::sqlite_high_water(tx, c)?.is_some() {
        tracing::debug!(table = c.table, key = %c.key, "PostgreSQL outbox entry superseded by a newer SQLite change");
    } else if outbox::sqlite_applied(tx, c)?.is_some_and(|v| v >= version) {
        tracing::debug!(table = c.table, key = %c.key, version, "a newer image was applied already");
    } else {
        match img {
            Some(img) => image::sqlite_upsert(tx, table, img)?,
            None => {
                image::sqlite_delete(tx, table, key)?;
            }
        }
        outbox::sqlite_mark_applied(tx, c, version)?;
    }
    Ok(())
}

/// A write's committed image into SQLite inside the landing transaction
/// (`land_image`), unless it is older than `APPLY_WINDOW`.
fn land_fresh(
    tx: &rusqlite::Connection,
    schema: &crate::tables::Schema,
    c: &Change,
    version: i64,
    img: Option<&image::Image>,
    read_at: Instant,
) -> Result<()> {
    if read_at.elapsed() >= outbox::APPLY_WINDOW {
        return Err(Error::InvalidArgument(format!(
            "{} {}: the committed image took over {:?} to reach SQLite; left in the outbox",
            c.table,
            c.key,
            outbox::APPLY_WINDOW
        )));
    }
    let table = schema.by_name(c.table).ok_or_else(|| {
        Error::InvalidArgument(format!("outbox names unknown table {:?}", c.table))
    })?;
    land_image(tx, c, table, &Key::parse(table, &c.key)?, version, img)
}

/// Failures that retrying cannot fix: the data, not the connection.
pub(super) fn is_data_error(e: &Error) -> bool {
    matches!(e, Error::InvalidValue { .. })
        || matches!(
            e.db_kind(),
            Some(crate::DbErrorKind::ForeignKeyViolation)
                | Some(crate::DbErrorKind::CheckViolation)
                | Some(crate::DbErrorKind::NotNullViolation)
                | Some(crate::DbErrorKind::InvalidData)
        )
}
