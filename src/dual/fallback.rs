//! PostgreSQL unreachable: every process falls back to SQLite, and one
//! process makes the return for all (docs/DESIGN.md §3).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::authority::Authority;
use crate::changes::Change;
use crate::error::{Backend, Error, Result};
use crate::image::{self, Key};
use crate::metrics as m;
use crate::outbox;
use crate::stage;

use super::routing::Routing;
use super::DualStore;

impl DualStore {
    pub(super) fn should_fall_back(&self, r: &Routing, e: &Error) -> bool {
        self.inner.config.fallback
            && !r.fallback
            && r.authoritative() == Backend::Postgres
            && r.stage.secondary().is_some()
            && e.is_unavailable()
    }

    /// Whether PostgreSQL answers a fresh connection (not the pool: a busy
    /// pool is not an outage).
    pub(super) async fn pg_reachable(&self) -> bool {
        use sqlx::Connection;
        let opts = self.inner.pg.pool().connect_options();
        let attempt = async move {
            let mut c = sqlx::PgConnection::connect_with(&opts).await.ok()?;
            let ok = sqlx::query("SELECT 1").execute(&mut c).await.is_ok();
            let _ = c.close().await;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(self.inner.config.connect_probe_timeout, attempt).await,
            Ok(Some(true))
        )
    }

    /// Inside the lock (`held`, under `auth`): when a fresh connection to
    /// PostgreSQL fails too, sets the authority to SQLite in fallback (the
    /// next epoch) for every process and returns it; None when PostgreSQL
    /// answers (the caller's error stands: a busy pool or a timeout is not
    /// an outage).
    pub(super) async fn fall_back_held(
        &self,
        held: &crate::sqlite::Locked,
        auth: Authority,
        reason: &Error,
    ) -> Result<Option<Authority>> {
        if self.pg_reachable().await {
            return Ok(None);
        }
        let next = Authority {
            epoch: auth.epoch + 1,
            fallback: true,
            ..auth
        };
        // The write that found PostgreSQL gone may have committed there
        // with ids SQLite never saw: SQLite's generators skip a gap, so the
        // ids it hands out meanwhile cannot collide with them.
        let schema = self.schema();
        held.call(move |c| {
            crate::authority::sqlite_write(c, &next)?;
            crate::sequences::sqlite_skip(c, schema, crate::sequences::FALLBACK_ID_GAP)
        })
        .await?;
        self.inner
            .counters
            .fallbacks
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %reason, stage = %auth.stage, epoch = next.epoch, "PostgreSQL unreachable: every process falls back to SQLite as authoritative");
        self.follow(next);
        Ok(Some(next))
    }

    /// A write under `auth` (PostgreSQL authoritative) found PostgreSQL
    /// unavailable: under the order lock, exclusive, and SQLite's write
    /// lock, falls back for every process when a fresh connection fails
    /// too. True when SQLite is authoritative now (by this call or another
    /// process's); false when PostgreSQL answers or the authority moved on.
    pub(super) async fn fall_back_exclusive(
        &self,
        auth: Authority,
        reason: &Error,
    ) -> Result<bool> {
        let (_order, held, now) = self.enter_exclusive().await?;
        if now.authoritative() == Backend::Sqlite {
            self.rollback_held(held).await;
            return Ok(true);
        }
        if now.epoch != auth.epoch {
            self.rollback_held(held).await;
            return Ok(false);
        }
        match self.fall_back_held(&held, now, reason).await {
            Ok(Some(_)) => {
                self.commit_held(held).await?;
                Ok(true)
            }
            Ok(None) => {
                self.rollback_held(held).await;
                Ok(false)
            }
            Err(e) => {
                self.rollback_held(held).await;
                Err(e)
            }
        }
    }

    /// A read that found PostgreSQL unavailable: falls back for every
    /// process when a fresh connection fails too (under the lock).
    pub(super) async fn fall_back_for_read(&self, reason: &Error) -> bool {
        let Ok((_order, held, auth)) = self.enter_exclusive().await else {
            return false;
        };
        let r = Routing::from(auth);
        if r.fallback {
            self.rollback_held(held).await;
            return true;
        }
        if !self.should_fall_back(&r, reason) {
            self.rollback_held(held).await;
            return false;
        }
        match self.fall_back_held(&held, auth, reason).await {
            Ok(Some(_)) => held.commit().await.is_ok(),
            _ => {
                self.rollback_held(held).await;
                false
            }
        }
    }

    pub(super) fn start_return_probe(&self) {
        if !self.inner.fallback_probe.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            tokio::spawn(async move { me.probe_until_back().await });
        }
    }

    /// While the authority says fallback: waits for PostgreSQL, then makes
    /// the return under the lock (any process may; the first one does it).
    pub(super) async fn probe_until_back(&self) {
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::time::sleep(wait).await;
            if self.refresh().await.is_ok_and(|r| !r.fallback) {
                break;
            }
            if !self.pg_reachable().await {
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
            match self.return_from_fallback().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::info!(error = %e, "return from the fallback deferred");
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.inner.fallback_probe.store(false, Ordering::SeqCst);
    }

    /// The return from a fallback, under the lock: PostgreSQL's row moves
    /// first (fencing copies of the fallback's epoch), keys both sides
    /// changed are recorded as conflicts, SQLite's outbox drains into
    /// PostgreSQL and PostgreSQL's leftovers into SQLite, the id generators
    /// are aligned, and both rows say PostgreSQL again (epoch + 1).
    pub(crate) async fn return_from_fallback(&self) -> Result<()> {
        let (_order, held, auth) = self.enter_exclusive().await?;
        if !auth.fallback {
            self.rollback_held(held).await;
            return Ok(());
        }
        self.inner.flipping.store(true, Ordering::SeqCst);
        let r = crate::sqlite::lock::within(async {
            let next = Authority {
                epoch: auth.epoch + 1,
                fallback: false,
                ..auth
            };
            let fenced = Authority {
                fallback: true,
                ..next
            };
            crate::authority::pg_write(self.inner.pg.pool(), &fenced).await?;
            self.record_conflicts().await?;
            self.drain(Backend::Sqlite, 1000).await?;
            self.drain(Backend::Postgres, 1000).await?;
            self.align_sequences().await?;
            crate::authority::pg_write(self.inner.pg.pool(), &next).await?;
            held.call(move |c| crate::authority::sqlite_write(c, &next))
                .await?;
            Ok::<_, Error>(next)
        })
        .await;
        self.inner.flipping.store(false, Ordering::SeqCst);
        match r {
            Ok(next) => {
                held.commit().await?;
                self.follow(next);
                let _ = stage::announce(self.inner.pg.pool(), &next).await;
                tracing::info!(stage = %next.stage, epoch = next.epoch, "PostgreSQL is back: fallback ended for every process");
                Ok(())
            }
            Err(e) => {
                self.rollback_held(held).await;
                Err(e)
            }
        }
    }

    /// PostgreSQL outbox entries (writes PostgreSQL committed whose copy had
    /// not reached SQLite, or whose COMMIT outcome was unknown) for keys
    /// SQLite changed during the fallback: both sides changed the row. The
    /// PostgreSQL image is recorded in `cutover.conflicts` with SQLite's,
    /// counted, logged; SQLite's wins (its entry copies it next).
    pub(super) async fn record_conflicts(&self) -> Result<()> {
        let pool = self.inner.pg.pool();
        for (t, k, upto) in outbox::pg_pending_keys(pool).await? {
            let Some(table) = self.schema().by_name(&t) else {
                continue;
            };
            let c = Change::new(table.name, k.clone());
            let cc = c.clone();
            let key = Key::parse(table, &k)?;
            let kk = key.clone();
            let (in_sqlite, simg) = self
                .inner
                .sqlite
                .locked(move |conn| -> Result<_> {
                    Ok((
                        outbox::sqlite_high_water(conn, &cc)?.is_some(),
                        image::sqlite_read(conn, table, &kk)?,
                    ))
                })
                .await?;
            if !in_sqlite {
                continue;
            }
            let pimg = image::pg_read(pool, table, &key).await?;
            if pimg == simg {
                outbox::pg_clear(pool, &c, upto).await?;
                continue;
            }
            let as_json = |i: &Option<image::Image>| i.as_ref().map(|i| image::to_json(table, i));
            crate::authority::record_conflict(
                pool,
                table.name,
                &k,
                as_json(&pimg),
                as_json(&simg),
                "PostgreSQL held a write SQLite had not taken when it stood in, and SQLite changed the row during the fallback; SQLite's image was kept",
            )
            .await?;
            outbox::pg_clear(pool, &c, upto).await?;
            self.inner
                .counters
                .conflicts
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::CONFLICTS, "table" => table.name).increment(1);
            tracing::error!(table = table.name, key = %k, "conflict: both sides changed the row across the fallback; recorded in cutover.conflicts");
        }
        Ok(())
    }
}
