//! The write path: one order for every process (docs/DESIGN.md §3).

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
        let ms = 5 * u64::from(attempt) + super::counters::random_u64() % 10;
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

    /// Lands a committed PostgreSQL write's images in SQLite on a task of
    /// its own, which holds the write's order lock until they are in: the
    /// caller has its answer once PostgreSQL committed (the write and its
    /// outbox entry are there, docs/DESIGN.md §3), while no flip, fallback or return
    /// can start before SQLite has the images. One such landing per process
    /// at a time: when one runs, the order lock and images come back and the
    /// caller lands them itself before its answer, so under load writers
    /// wait for SQLite as before and the landings in flight stay few (a flip
    /// waits for all of them). `settle` waits for it.
    pub(super) fn land_after(
        &self,
        order: crate::sqlite::order::OrderGuard,
        op: &'static str,
        routing: super::Routing,
        captured: crate::changes::Captured,
    ) -> Option<(crate::sqlite::order::OrderGuard, crate::changes::Captured)> {
        if self
            .inner
            .landing_after
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Some((order, captured));
        }
        let (me, counted) = (self.clone(), self.applying());
        tokio::spawn(async move {
            me.apply_held(op, &routing, captured).await;
            me.inner.landing_after.store(false, Ordering::SeqCst);
            drop(order);
            drop(counted);
        });
        None
    }

    /// Lands a PostgreSQL write's images in SQLite, under SQLite's write
    /// lock; what does not land stays in PostgreSQL's outbox for the
    /// replayer (the write committed: nothing fails the caller).
    ///
    /// Writes of this process land together: each queues its images and
    /// waits for the landing turn; whoever gets it takes SQLite's write
    /// lock once and lands every queued write (its own and those queued
    /// while the previous landing ran) in one transaction. Every write
    /// waiting holds the order lock until its images are in, so the order
    /// of docs/DESIGN.md §3 is unchanged; one transaction serves many writes.
    pub(super) async fn apply_held(
        &self,
        op: &'static str,
        r: &super::Routing,
        captured: crate::changes::Captured,
    ) {
        let (done, mut landed) = tokio::sync::oneshot::channel();
        self.inner
            .landing_queue
            .lock()
            .expect("landing queue")
            .push(Landing {
                op,
                routing: *r,
                captured,
                done,
            });
        let _turn = self.inner.landing_turn.lock().await;
        if !matches!(
            landed.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ) {
            // An earlier turn landed it (or gave up: it stays in the outbox).
            return;
        }
        let batch = std::mem::take(&mut *self.inner.landing_queue.lock().expect("landing queue"));
        // The short way: every change carries the image its write committed
        // (the usual case), so the whole batch lands in one call.
        if batch.iter().all(|l| l.fresh()) {
            let mut items = Vec::new();
            let mut waiting = Vec::with_capacity(batch.len());
            for l in batch {
                let mut seen = std::collections::HashSet::new();
                let mut carried = l.captured.carried;
                for c in l.captured.changes {
                    if seen.insert(c.clone()) {
                        let cv = carried.remove(&c).expect("checked by fresh");
                        items.push((l.op, c, cv));
                    }
                }
                waiting.push(l.done);
            }
            self.land_carried(items).await;
            for d in waiting {
                let _ = d.send(());
            }
            return;
        }
        let held = match self.inner.sqlite.lock().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(op, writes = batch.len(), error = %e, "SQLite's write lock not taken for the copy; kept in the outbox");
                return;
            }
        };
        let mut waiting = Vec::with_capacity(batch.len());
        crate::sqlite::lock::within(async {
            for l in batch {
                self.apply_changes(l.op, &l.routing, l.captured).await;
                waiting.push(l.done);
            }
        })
        .await;
        crate::failpoint::hit("dual.after_sqlite_apply");
        if let Err(e) = self.commit_held(held).await {
            tracing::warn!(op, writes = waiting.len(), error = %e, "SQLite commit of the copy failed; kept in the outbox");
        }
        for d in waiting {
            let _ = d.send(());
        }
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

/// A PostgreSQL write's images queued to land in SQLite.
pub(crate) struct Landing {
    op: &'static str,
    routing: super::Routing,
    captured: crate::changes::Captured,
    done: tokio::sync::oneshot::Sender<()>,
}

impl Landing {
    /// Whether every change carries its committed image, young enough to
    /// land as is.
    fn fresh(&self) -> bool {
        self.captured.changes.iter().all(|c| {
            self.captured
                .carried
                .get(c)
                .is_some_and(|cv| cv.read_at.elapsed() < crate::outbox::APPLY_WINDOW)
        })
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

/// A write, in the one order of docs/DESIGN.md §3. With PostgreSQL authoritative
/// (as the authority says under the order lock, shared) the write commits
/// there side by side with other such writes, and its images then land in
/// SQLite under SQLite's write lock before the order lock is released (the
/// answer may come before, once PostgreSQL committed: `land_after`); a
/// write PostgreSQL aborted as busy runs again. Its pooled connection is
/// taken before the order lock (let go of when a flip made in this process
/// holds or waits for it). With SQLite authoritative
/// SQLite's write lock is taken first and the authority read inside it; the
/// lock is released at SQLite's commit (the outbox entry is in) and the copy
/// to PostgreSQL follows, fenced by the epoch. When PostgreSQL is
/// unreachable (a fresh connection fails too) the authority moves to SQLite
/// for every process under the order lock, exclusive, and the write runs
/// there, unless PostgreSQL may have committed it already.
macro_rules! routed_write {
    ($self:ident, $op:expr, |$s:ident| $call:expr) => {{
        let out = async {
            let mut attempt = 0;
            loop {
                if $self.routing().authoritative() == Backend::Postgres {
                    // The pool's wait comes before the order lock.
                    let mut ready = $self.inner.pg.ready().await;
                    let (order, auth) = $self.enter_shared(&mut ready).await?;
                    let routing = Routing::from(auth);
                    if routing.authoritative() == Backend::Postgres {
                        let started = Instant::now();
                        let (r, captured) = capture(crate::pg::with_ready(ready, async {
                            let $s = Side::Postgres(&$self.inner.pg);
                            $call.await
                        }))
                        .await;
                        $self.observe($op, Backend::Postgres, started);
                        match r {
                            Err(e) if runs_again(Backend::Postgres, attempt, &e) => {
                                drop(order);
                                attempt += 1;
                                $self.busy_retry($op, Backend::Postgres, attempt, &e).await;
                            }
                            Err(e) if $self.should_fall_back(&routing, &e) => {
                                drop(order);
                                let unknown = captured.commit_sent;
                                match $self.fall_back_exclusive(auth, &e).await {
                                    // PostgreSQL may hold it: never run again on SQLite.
                                    _ if unknown => break Err($self.unknown_commit($op, e)),
                                    // SQLite stands in: the write runs there.
                                    Ok(true) => {}
                                    // PostgreSQL answers a fresh connection: the
                                    // connection this write used was cut before
                                    // its COMMIT (nothing committed), so it runs
                                    // again.
                                    Ok(false) if attempt < BUSY_RETRIES => {
                                        attempt += 1;
                                        $self.busy_retry($op, Backend::Postgres, attempt, &e).await;
                                    }
                                    _ => break Err(e),
                                }
                            }
                            Err(e) => break Err(e),
                            Ok(v) => {
                                if !captured.changes.is_empty() {
                                    crate::failpoint::hit("dual.after_authoritative_commit");
                                    if routing.secondary().is_some() {
                                        match $self.land_after(order, $op, routing, captured) {
                                            // Landed after the answer, still
                                            // under the order lock.
                                            None => {}
                                            // A landing after its answer is
                                            // running already: this one waits.
                                            Some((order, captured)) => {
                                                $self.apply_held($op, &routing, captured).await;
                                                drop(order);
                                            }
                                        }
                                        break Ok(v);
                                    }
                                }
                                drop(order);

                                break Ok(v);
                            }
                        }
                        continue;
                    }
                    drop(order);
                }
                let (held, auth) = $self.enter().await?;
                let routing = Routing::from(auth);
                if routing.authoritative() == Backend::Postgres {
                    // A flip made PostgreSQL authoritative meanwhile.
                    $self.rollback_held(held).await;
                    continue;
                }
                let started = Instant::now();
                let (r, captured) = crate::sqlite::lock::within(async {
                    let $s = Side::Sqlite(&$self.inner.sqlite);
                    capture($call).await
                })
                .await;
                $self.observe($op, Backend::Sqlite, started);
                match r {
                    Err(e) => {
                        $self.rollback_held(held).await;
                        break Err(e);
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

pub(super) use routed_write;

/// A `Store` operation's write (`routed_write`, the side as a `Store`).
macro_rules! write_op {
    ($self:ident, $op:literal, |$s:ident| $call:expr) => {{
        debug_assert!(
            crate::metrics::WRITE_OPS.contains(&$op),
            "{} is missing from metrics::WRITE_OPS",
            $op
        );
        routed_write!($self, $op, |side| {
            let $s: &dyn Store = side.store();
            $call
        })
    }};
}

pub(super) use write_op;
