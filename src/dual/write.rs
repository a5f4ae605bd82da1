//! The write path: one order for every process (DESIGN §3).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Backend, Error, Result};
use crate::metrics as m;

use super::DualStore;

impl DualStore {
    pub(super) fn observe(&self, op: &'static str, backend: Backend, started: Instant) {
        metrics::histogram!(m::OP_DURATION, "op" => op, "backend" => backend.as_str())
            .record(started.elapsed().as_secs_f64());
    }

    pub(super) fn count<T>(&self, r: &Result<T>) {
        self.inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.inner
                .counters
                .failed_calls
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The error a caller gets when PostgreSQL's COMMIT outcome is
    /// unknown: its outbox entry, if it committed, is applied when
    /// PostgreSQL answers again (or recorded as a conflict when SQLite
    /// changed the row meanwhile).
    pub(super) fn unknown_commit(&self, op: &'static str, e: Error) -> Error {
        self.inner
            .counters
            .unknown_commits
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(op, error = %e, "connection lost during COMMIT: the write's outcome is unknown");
        Error::OutcomeUnknown {
            op,
            detail: e.to_string(),
        }
    }

    /// Counts and logs a write the database aborted as busy, then waits a
    /// little (more each attempt, jittered) before it runs again.
    pub(super) async fn busy_retry(
        &self,
        op: &'static str,
        side: Backend,
        attempt: u32,
        e: &Error,
    ) {
        self.inner
            .counters
            .busy_retries
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::BUSY_RETRIES, "op" => op, "backend" => side.as_str()).increment(1);
        tracing::info!(op, backend = %side, attempt, error = %e, "write aborted by the database as busy; running it again");
        let ms = 5 * u64::from(attempt) + rand::random::<u64>() % 10;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Runs `f` holding SQLite's write lock: the caller's when it holds it,
    /// else taken here and committed when `f` succeeds.
    pub(super) async fn under_lock<T, F>(&self, f: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        if crate::sqlite::lock::is_held() {
            return f.await;
        }
        let held = self.inner.sqlite.lock().await?;
        match crate::sqlite::lock::within(f).await {
            Ok(v) => {
                self.commit_held(held).await?;
                Ok(v)
            }
            Err(e) => {
                self.rollback_held(held).await;
                Err(e)
            }
        }
    }

    /// Commits the held transaction, then queues the PostgreSQL clears of
    /// what it applied.
    pub(super) async fn commit_held(&self, held: crate::sqlite::Locked) -> Result<()> {
        let r = held.commit().await;
        let done = std::mem::take(&mut *self.inner.held_clears.lock().expect("clears lock"));
        if r.is_ok() {
            for (c, upto) in done {
                self.queue_clear(&c, upto);
            }
        }
        r
    }

    /// Rolls the held transaction back; its PostgreSQL entries stay.
    pub(super) async fn rollback_held(&self, held: crate::sqlite::Locked) {
        held.rollback().await;
        self.inner.held_clears.lock().expect("clears lock").clear();
    }

    /// Runs `f` on SQLite: on the write connection (seeing the held
    /// transaction) inside the lock, else on a read connection.
    pub(super) async fn sqlite_rw<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        if crate::sqlite::lock::is_held() {
            Ok(self.inner.sqlite.connection().call(move |c| f(c)).await?)
        } else {
            self.inner.sqlite.read(f).await
        }
    }
}

/// Times an authoritative write aborted as busy runs again.
pub(super) const BUSY_RETRIES: u32 = 4;

/// Whether a write that failed with `e` on `side` after `attempt` retries
/// runs again: a transaction PostgreSQL chose to abort (deadlock victim,
/// serialization failure, lock timeout) committed nothing. SQLite's busy
/// means its busy timeout ran out already.
pub(super) fn runs_again(side: Backend, attempt: u32, e: &Error) -> bool {
    side == Backend::Postgres
        && attempt < BUSY_RETRIES
        && e.db_kind() == Some(crate::DbErrorKind::Busy)
}

/// A write, in the one order of DESIGN §3: SQLite's write lock is taken
/// first and the authority read inside it; the authoritative side writes
/// (a write PostgreSQL aborted as busy runs again); with PostgreSQL
/// authoritative its committed images land in SQLite inside the same lock,
/// with SQLite authoritative the lock is released at its commit (the outbox
/// entry is in) and the copy to PostgreSQL follows, fenced by the epoch.
/// When PostgreSQL is unreachable (a fresh connection fails too) the
/// authority moves to SQLite for every process inside the same lock and the
/// write runs there, unless PostgreSQL may have committed it already.
macro_rules! write_op {
    ($self:ident, $op:literal, |$s:ident| $call:expr) => {{
        let out = async {
            let mut attempt = 0;
            loop {
                let (held, auth) = $self.enter().await?;
                let routing = Routing::from(auth);
                let side = routing.authoritative();
                let started = Instant::now();
                let (r, captured) = crate::sqlite::lock::within(async {
                    let $s: &dyn Store = $self.side(side);
                    capture($call).await
                })
                .await;
                $self.observe($op, side, started);
                match r {
                    Err(e) if runs_again(side, attempt, &e) => {
                        $self.rollback_held(held).await;
                        attempt += 1;
                        $self.busy_retry($op, side, attempt, &e).await;
                    }
                    Err(e) if $self.should_fall_back(&routing, &e) => {
                        let unknown = captured.commit_sent;
                        match $self.fall_back_held(&held, auth, &e).await {
                            Ok(Some(_)) if !unknown => {
                                // PostgreSQL took nothing: SQLite takes the
                                // write inside the same lock.
                                let started = Instant::now();
                                let (r, _) = crate::sqlite::lock::within(async {
                                    let $s: &dyn Store = &$self.inner.sqlite;
                                    capture($call).await
                                })
                                .await;
                                $self.observe($op, Backend::Sqlite, started);
                                $self.commit_held(held).await?;
                                break r;
                            }
                            Ok(Some(_)) => {
                                $self.commit_held(held).await?;
                                break Err($self.unknown_commit($op, e));
                            }
                            Ok(None) if unknown => {
                                $self.rollback_held(held).await;
                                break Err($self.unknown_commit($op, e));
                            }
                            Ok(None) if attempt < BUSY_RETRIES => {
                                // PostgreSQL answers a fresh connection: the
                                // connection this write used was cut before
                                // its COMMIT (nothing committed), so it runs
                                // again.
                                $self.rollback_held(held).await;
                                attempt += 1;
                                $self.busy_retry($op, side, attempt, &e).await;
                            }
                            _ => {
                                $self.rollback_held(held).await;
                                break Err(e);
                            }
                        }
                    }
                    Err(e) => {
                        $self.rollback_held(held).await;
                        break Err(e);
                    }
                    Ok(v) if side == Backend::Postgres => {
                        if !captured.changes.is_empty() {
                            crate::failpoint::hit("dual.after_authoritative_commit");
                        }
                        if routing.secondary().is_some() {
                            crate::sqlite::lock::within($self.apply_changes($op, &routing, captured)).await;
                            crate::failpoint::hit("dual.after_sqlite_apply");
                        }
                        // Committed on PostgreSQL: what SQLite misses stays
                        // in PostgreSQL's outbox for the replayer.
                        if let Err(e) = $self.commit_held(held).await {
                            tracing::warn!(op = $op, error = %e, "SQLite commit of the copy failed; kept in the outbox");
                        }
                        break Ok(v);
                    }
                    Ok(v) => {
                        $self.commit_held(held).await?;
                        if !captured.changes.is_empty() {
                            crate::failpoint::hit("dual.after_authoritative_commit");
                        }
                        if !routing.fallback {
                            $self.apply_changes($op, &routing, captured).await;
                        }
                        break Ok(v);
                    }
                }
            }
        }
        .await;
        $self.count(&out);
        out
    }};
}

pub(super) use write_op;
