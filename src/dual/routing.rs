//! What this process routes by: the authority it follows (docs/DESIGN.md §3),
//! read by every write under the lock that keeps it still: SQLite's write
//! lock when SQLite is authoritative, the order lock (shared) when
//! PostgreSQL is.

use std::sync::Arc;

use crate::authority::Authority;
use crate::error::{Backend, Error, Result};
use crate::metrics as m;
use crate::stage::Stage;

use super::DualStore;

/// Where calls go right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    /// The stage.
    pub stage: Stage,
    /// PostgreSQL is unreachable and SQLite stands in as authoritative.
    pub fallback: bool,
    /// The authority epoch this routing was read under.
    pub epoch: i64,
}

impl From<Authority> for Routing {
    fn from(a: Authority) -> Self {
        Routing {
            stage: a.stage,
            fallback: a.fallback,
            epoch: a.epoch,
        }
    }
}

impl Routing {
    /// The side whose answer the caller gets.
    pub fn authoritative(&self) -> Backend {
        Authority::from(*self).authoritative()
    }

    /// The side writes are copied to.
    pub fn secondary(&self) -> Option<Backend> {
        Authority::from(*self).secondary()
    }
}

impl From<Routing> for Authority {
    fn from(r: Routing) -> Self {
        Authority {
            epoch: r.epoch,
            stage: r.stage,
            fallback: r.fallback,
        }
    }
}

impl DualStore {
    pub(super) fn set_outbox_flags(&self, r: &Routing) {
        let sec = r.secondary();
        self.inner
            .sqlite
            .set_outbox(r.authoritative() == Backend::Sqlite && sec.is_some());
        self.inner
            .pg
            .set_outbox(r.authoritative() == Backend::Postgres && sec.is_some());
    }

    pub(super) fn side(&self, b: Backend) -> super::queries::Side<'_> {
        match b {
            Backend::Sqlite => super::queries::Side::Sqlite(&self.inner.sqlite),
            Backend::Postgres => super::queries::Side::Postgres(&self.inner.pg),
        }
    }

    /// Takes SQLite's write lock and reads the authority inside it; this
    /// process follows it before anything is written.
    pub(crate) async fn enter(&self) -> Result<(crate::sqlite::Locked, Authority)> {
        // The authority is read in the same call as BEGIN IMMEDIATE.
        let (held, auth) = self
            .inner
            .sqlite
            .lock_then(|c| {
                crate::authority::sqlite_read(c)?.ok_or_else(|| {
                    Error::InvalidArgument(
                        "the SQLite file has no _cutover_authority row; open the dual store first"
                            .into(),
                    )
                })
            })
            .await?;
        self.follow(auth);
        Ok((held, auth))
    }

    /// The order lock exclusively, then SQLite's write lock with the
    /// authority read inside it: what moving the authority needs (no write
    /// with PostgreSQL authoritative is in flight, in any process).
    pub(crate) async fn enter_exclusive(
        &self,
    ) -> Result<(
        crate::sqlite::order::OrderGuard,
        crate::sqlite::Locked,
        Authority,
    )> {
        let order = self.inner.sqlite.order_exclusive().await?;
        let (held, auth) = self.enter().await?;
        Ok((order, held, auth))
    }

    /// The order lock shared, and the authority under it, followed: what
    /// this process read last when the authority generation has not moved
    /// since (`order.rs`), else SQLite's row (from a read connection: only
    /// an exclusive holder moves it). A write with PostgreSQL authoritative
    /// runs under this.
    ///
    /// When a flip (or a fallback, or the return) made in this process
    /// holds or waits for the lock, `release` is emptied before waiting: a
    /// write lets go of the pooled connection it took ahead, which that
    /// flip needs from the same pool.
    pub(crate) async fn enter_shared<T>(
        &self,
        release: &mut Option<T>,
    ) -> Result<(crate::sqlite::order::OrderGuard, Authority)> {
        let order = self.inner.sqlite.order_shared(|| *release = None).await?;
        let generation = self.inner.sqlite.order_generation()?;
        let cached = *self.inner.authority_seen.lock().expect("authority cache");
        let auth = match (generation, cached) {
            (Some(g), Some((seen, a))) if g == seen => a,
            _ => {
                let a = self
                    .inner
                    .sqlite
                    .read(crate::authority::sqlite_read)
                    .await?
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "the SQLite file has no _cutover_authority row; open the dual store first"
                                .into(),
                        )
                    })?;
                if let Some(g) = generation {
                    *self.inner.authority_seen.lock().expect("authority cache") = Some((g, a));
                }
                a
            }
        };
        self.follow(auth);
        Ok((order, auth))
    }

    /// Reads the authority from a read connection and follows it (the
    /// stage watcher's way: no lock, no wait behind writers).
    pub async fn refresh(&self) -> Result<Routing> {
        if let Some(a) = self
            .inner
            .sqlite
            .read(crate::authority::sqlite_read)
            .await?
        {
            self.follow(a);
        }
        Ok(self.routing())
    }

    /// Routes by `a` from now on, when it is newer than what this process
    /// follows.
    pub(super) fn follow(&self, a: Authority) {
        let cur = self.routing();
        if cur.epoch == a.epoch && cur.stage == a.stage && cur.fallback == a.fallback {
            return;
        }
        if a.epoch < cur.epoch {
            return;
        }
        let next = Routing::from(a);
        self.set_outbox_flags(&next);
        self.inner.routing.store(Arc::new(next));
        self.inner.followed.lock().expect("followed lock").push((
            a.epoch,
            a.stage,
            a.fallback,
            std::time::SystemTime::now(),
        ));
        metrics::gauge!(m::STAGE).set(a.stage.index() as f64);
        metrics::gauge!(m::FALLBACK_ACTIVE).set(if a.fallback { 1.0 } else { 0.0 });
        metrics::gauge!(m::AUTHORITY_EPOCH).set(a.epoch as f64);
        tracing::info!(epoch = a.epoch, stage = %a.stage, fallback = a.fallback, "following the authority");
        if a.fallback {
            self.start_return_probe();
        }
    }

    /// The authorities this process followed, with when it did: (epoch,
    /// stage, fallback, time).
    pub fn followed(&self) -> Vec<(i64, Stage, bool, std::time::SystemTime)> {
        self.inner.followed.lock().expect("followed lock").clone()
    }
}

pub(super) fn other_side_of(b: Backend) -> Backend {
    match b {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }
}
