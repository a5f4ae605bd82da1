//! `DualStore`: the application's store during the move.
//!
//! Reads are routed by the routing this process follows, held in an
//! `ArcSwap`; in `shadow` and `live` a sample is also read from the other
//! side off the caller's path and compared. Writes take SQLite's write lock
//! and route by the authority read inside it (DESIGN §3): the authoritative
//! side first; the rows it changed (reported by the store, and recorded in
//! its outbox in the same transaction) are then copied to the other side as
//! their current image, inside the lock when PostgreSQL is authoritative,
//! after SQLite's commit (fenced by the epoch) when SQLite is. A failure
//! there never fails the caller: it is counted, logged and left in the
//! outbox for the replayer.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::authority::Authority;
use crate::changes::{capture, Captured, Carried, Change};
use crate::error::{Backend, Error, Result};
use crate::image::{self, Key};
use crate::metrics as m;
use crate::model::*;
use crate::outbox;
use crate::pg::PgStore;
use crate::shadow::{self, Ledger, Mismatch, Policy};
use crate::sqlite::SqliteStore;
use crate::stage::{self, Stage};
use crate::store::Store;
use crate::tables;

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

/// Tunables of the dual store.
#[derive(Debug, Clone)]
pub struct DualConfig {
    /// Fraction of reads compared in `shadow` / `live` (0 to 1).
    pub shadow_sample_rate: f64,
    /// A shadow read slower than this is abandoned (counted as `error`).
    pub shadow_timeout: Duration,
    /// Before a mismatch counts, the rows concerned get this long to leave
    /// the outbox and hold still (see `shadow_compare`).
    pub lag_recheck: Duration,
    /// Panic on a real mismatch (tests).
    pub raise_on_mismatch: bool,
    /// Fall back to SQLite when PostgreSQL is authoritative and unreachable.
    pub fallback: bool,
    /// Mismatches kept for inspection.
    pub ledger_size: usize,
    /// How long a fresh connection attempt may take before PostgreSQL
    /// counts as unreachable (the fallback decision).
    pub connect_probe_timeout: Duration,
}

impl Default for DualConfig {
    fn default() -> Self {
        Self {
            shadow_sample_rate: 1.0,
            shadow_timeout: Duration::from_secs(2),
            lag_recheck: Duration::from_secs(5),
            raise_on_mismatch: false,
            fallback: true,
            ledger_size: 256,
            connect_probe_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters kept for reports (the same figures go to metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls that returned an error to the caller.
    pub failed_calls: AtomicU64,
    /// Calls made.
    pub calls: AtomicU64,
    /// Applies to the secondary side that failed (left in the outbox).
    pub secondary_failures: AtomicU64,
    /// Outbox entries applied by the replayer.
    pub replayed: AtomicU64,
    /// Shadow comparisons made.
    pub comparisons: AtomicU64,
    /// Real mismatches (after the lag re-check).
    pub mismatches_real: AtomicU64,
    /// Mismatches that went away once the outbox applied.
    pub mismatches_lag_resolved: AtomicU64,
    /// Mismatches on rows that kept changing until the re-check deadline
    /// (neither resolved nor shown to persist).
    pub mismatches_unsettled: AtomicU64,
    /// Mismatches on legacy rows recorded in `cutover.rejects` (accounted
    /// for, like verify does: PostgreSQL never took them).
    pub mismatches_rejected: AtomicU64,
    /// Shadow reads that failed or timed out.
    pub shadow_errors: AtomicU64,
    /// Authoritative writes run again after the database aborted them as
    /// busy (deadlock, serialization failure, lock timeout).
    pub busy_retries: AtomicU64,
    /// Times the store fell back to SQLite.
    pub fallbacks: AtomicU64,
    /// Writes whose PostgreSQL COMMIT outcome was unknown (connection lost
    /// during the COMMIT): the caller got an error.
    pub unknown_commits: AtomicU64,
    /// Keys both sides changed across a fallback, recorded in
    /// `cutover.conflicts`.
    pub conflicts: AtomicU64,
}

/// A snapshot of `Counters`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error.
    pub failed_calls: u64,
    /// Failed secondary applies.
    pub secondary_failures: u64,
    /// Entries applied by the replayer.
    pub replayed: u64,
    /// Shadow comparisons.
    pub comparisons: u64,
    /// Real mismatches.
    pub mismatches_real: u64,
    /// Lag mismatches resolved.
    pub mismatches_lag_resolved: u64,
    /// Mismatches on rows still changing at the re-check deadline.
    pub mismatches_unsettled: u64,
    /// Mismatches on rejected legacy rows (accounted for).
    pub mismatches_rejected: u64,
    /// Shadow read errors.
    pub shadow_errors: u64,
    /// Writes run again after a busy abort.
    pub busy_retries: u64,
    /// Fallbacks.
    pub fallbacks: u64,
    /// Writes whose COMMIT outcome was unknown.
    pub unknown_commits: u64,
    /// Conflicts recorded after a fallback.
    pub conflicts: u64,
}

pub(crate) struct Inner {
    pub(crate) sqlite: SqliteStore,
    pub(crate) pg: PgStore,
    pub(crate) routing: ArcSwap<Routing>,
    // Epochs this process followed, with when (for reports and tests).
    followed: std::sync::Mutex<Vec<(i64, Stage, bool, std::time::SystemTime)>>,
    // Copies to PostgreSQL made after their SQLite commit, still running.
    applying: std::sync::atomic::AtomicUsize,
    applied: tokio::sync::Notify,
    // SQLite outbox entries copied to PostgreSQL and not cleared yet, with
    // the id to clear up to (cleared in one locked transaction per flush).
    sqlite_clears: std::sync::Mutex<HashMap<Change, i64>>,
    // PostgreSQL entries applied inside the held transaction: queued for
    // clearing once it commits, dropped if it rolls back.
    held_clears: std::sync::Mutex<Vec<(Change, i64)>>,
    // Per-key apply locks (hashed slots).
    key_locks: Vec<tokio::sync::Mutex<()>>,
    // PostgreSQL outbox entries applied to SQLite and not cleared yet, with
    // the id to clear up to: cleared in batches off the caller's path (an
    // entry left by a crash is applied again, which changes nothing).
    clears: std::sync::Mutex<HashMap<Change, i64>>,
    flushing: tokio::sync::Mutex<()>,
    pub(crate) config: DualConfig,
    pub(crate) ledger: Ledger,
    pub(crate) counters: Counters,
    fallback_probe: AtomicBool,
    // A flip or a return is running (inside the lock) in this process.
    flipping: AtomicBool,
}

/// The routing store. Cheap to clone.
#[derive(Clone)]
pub struct DualStore {
    pub(crate) inner: Arc<Inner>,
}

const KEY_LOCKS: usize = 1024;

/// Class of the PostgreSQL advisory locks that order copies of one key
/// (`pg_advisory_xact_lock(class, hashtext('table:key'))`).
const COPY_LOCK_CLASS: i32 = 0x6375;

impl DualStore {
    /// A dual store over both stores, moved to `stage` (a forced flip under
    /// the lock when the authority says otherwise). Tests and tools that
    /// own the whole setup use it; an application uses `open`.
    pub async fn new(
        sqlite: SqliteStore,
        pg: PgStore,
        stage: Stage,
        config: DualConfig,
    ) -> Result<Self> {
        let d = Self::open(sqlite, pg, config).await?;
        if d.stage() != stage || d.routing().fallback {
            d.switch(stage).await?;
        }
        Ok(d)
    }

    /// A dual store over both stores, following the authority as the
    /// SQLite file records it (created from PostgreSQL's on first use).
    pub async fn open(sqlite: SqliteStore, pg: PgStore, config: DualConfig) -> Result<Self> {
        sqlite.ensure_outbox().await?;
        let auth = crate::authority::init(&sqlite, &pg).await?;
        let ledger = Ledger::new(config.ledger_size);
        let store = Self {
            inner: Arc::new(Inner {
                sqlite,
                pg,
                routing: ArcSwap::from_pointee(Routing::from(auth)),
                followed: std::sync::Mutex::new(vec![(
                    auth.epoch,
                    auth.stage,
                    auth.fallback,
                    std::time::SystemTime::now(),
                )]),
                applying: std::sync::atomic::AtomicUsize::new(0),
                applied: tokio::sync::Notify::new(),
                sqlite_clears: std::sync::Mutex::new(HashMap::new()),
                held_clears: std::sync::Mutex::new(Vec::new()),
                key_locks: (0..KEY_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                clears: std::sync::Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
                config,
                ledger,
                counters: Counters::default(),
                fallback_probe: AtomicBool::new(false),
                flipping: AtomicBool::new(false),
            }),
        };
        store.set_outbox_flags(&Routing::from(auth));
        metrics::gauge!(m::STAGE).set(auth.stage.index() as f64);
        metrics::gauge!(m::FALLBACK_ACTIVE).set(if auth.fallback { 1.0 } else { 0.0 });
        metrics::gauge!(m::AUTHORITY_EPOCH).set(auth.epoch as f64);
        tokio::spawn(Self::clearer(Arc::downgrade(&store.inner)));
        if auth.fallback {
            store.start_return_probe();
        }
        Ok(store)
    }

    /// Clears applied PostgreSQL outbox entries every few milliseconds and
    /// forgets old SQLite apply versions, while the store lives.
    async fn clearer(inner: std::sync::Weak<Inner>) {
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

    fn queue_clear(&self, c: &Change, upto: i64) {
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

    fn queue_sqlite_clear(&self, c: &Change, upto: i64) {
        let mut q = self.inner.sqlite_clears.lock().expect("clears lock");
        let e = q.entry(c.clone()).or_insert(upto);
        *e = (*e).max(upto);
    }

    /// Clears the SQLite outbox entries copied so far, in one locked
    /// transaction (kept for the next try when it fails).
    pub async fn flush_sqlite_clears(&self) -> Result<()> {
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
    async fn flush_clears_if_idle(&self) {
        if self.inner.flushing.try_lock().is_ok() {
            let _ = self.flush_clears().await;
        }
    }

    /// Clears the PostgreSQL outbox entries applied so far (kept for the
    /// next try when PostgreSQL does not answer).
    pub async fn flush_clears(&self) -> Result<()> {
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

    /// Writes a PostgreSQL image (version `version`, read at `read_at`) to
    /// SQLite in one transaction, unless SQLite holds a newer one: its own
    /// pending change (during a fallback SQLite was authoritative; that entry
    /// copies it to PostgreSQL) or a higher recorded version. False when the
    /// image is too old to trust (nothing written).
    async fn sqlite_apply(
        &self,
        c: &Change,
        key: &Key,
        version: i64,
        img: Option<image::Image>,
        read_at: Instant,
    ) -> Result<bool> {
        let table = tables::by_name(c.table).expect("checked by apply");
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
                // PostgreSQL's images land only while it is authoritative:
                // during a fallback its pending entries wait for the return,
                // which judges them against what SQLite took meanwhile.
                let auth = crate::authority::sqlite_read(tx)?;
                if !flipping && auth.is_some_and(|a| a.authoritative() != Backend::Postgres) {
                    return Err(Error::InvalidArgument(format!(
                        "{} {}: SQLite is authoritative now; the PostgreSQL entry waits for the return",
                        cc.table, cc.key
                    )));
                }
                if outbox::sqlite_high_water(tx, &cc)?.is_some() {
                    tracing::debug!(table = cc.table, key = %cc.key, "PostgreSQL outbox entry superseded by a newer SQLite change");
                } else if outbox::sqlite_applied(tx, &cc)?.is_some_and(|v| v >= version) {
                    tracing::debug!(table = cc.table, key = %cc.key, version, "a newer image was applied already");
                } else {
                    match img {
                        Some(img) => image::sqlite_upsert(tx, table, &img)?,
                        None => {
                            image::sqlite_delete(tx, table, &k)?;
                        }
                    }
                    outbox::sqlite_mark_applied(tx, &cc, version)?;
                }
                Ok(true)
            })
            .await
    }

    /// Which of this process's locks are taken right now (for a report
    /// when a test or an operator sees calls stall).
    pub fn lock_report(&self) -> String {
        let keys = self
            .inner
            .key_locks
            .iter()
            .filter(|l| l.try_lock().is_err())
            .count();
        format!(
            "write slot taken: {}; key locks taken: {keys}; PostgreSQL clear flush running: {}; copies after commit running: {}; pool size {} idle {}",
            self.inner.sqlite.slot_taken(),
            self.inner.flushing.try_lock().is_err(),
            self.inner.applying.load(Ordering::SeqCst),
            self.inner.pg.pool().size(),
            self.inner.pg.pool().num_idle(),
        )
    }

    /// Current routing.
    pub fn routing(&self) -> Routing {
        **self.inner.routing.load()
    }

    /// Current stage.
    pub fn stage(&self) -> Stage {
        self.routing().stage
    }

    /// The SQLite store underneath.
    pub fn sqlite(&self) -> &SqliteStore {
        &self.inner.sqlite
    }

    /// The PostgreSQL store underneath.
    pub fn pg(&self) -> &PgStore {
        &self.inner.pg
    }

    /// The most recent mismatches.
    pub fn recent_mismatches(&self) -> Vec<Mismatch> {
        self.inner.ledger.recent()
    }

    /// Counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            calls: g(&c.calls),
            failed_calls: g(&c.failed_calls),
            secondary_failures: g(&c.secondary_failures),
            replayed: g(&c.replayed),
            comparisons: g(&c.comparisons),
            mismatches_real: g(&c.mismatches_real),
            mismatches_lag_resolved: g(&c.mismatches_lag_resolved),
            mismatches_unsettled: g(&c.mismatches_unsettled),
            mismatches_rejected: g(&c.mismatches_rejected),
            shadow_errors: g(&c.shadow_errors),
            busy_retries: g(&c.busy_retries),
            fallbacks: g(&c.fallbacks),
            unknown_commits: g(&c.unknown_commits),
            conflicts: g(&c.conflicts),
        }
    }

    fn set_outbox_flags(&self, r: &Routing) {
        let sec = r.secondary();
        self.inner
            .sqlite
            .set_outbox(r.authoritative() == Backend::Sqlite && sec.is_some());
        self.inner
            .pg
            .set_outbox(r.authoritative() == Backend::Postgres && sec.is_some());
    }

    fn side(&self, b: Backend) -> &dyn Store {
        match b {
            Backend::Sqlite => &self.inner.sqlite,
            Backend::Postgres => &self.inner.pg,
        }
    }

    fn observe(&self, op: &'static str, backend: Backend, started: Instant) {
        metrics::histogram!(m::OP_DURATION, "op" => op, "backend" => backend.as_str())
            .record(started.elapsed().as_secs_f64());
    }

    fn count<T>(&self, r: &Result<T>) {
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
    fn unknown_commit(&self, op: &'static str, e: Error) -> Error {
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
    async fn busy_retry(&self, op: &'static str, side: Backend, attempt: u32, e: &Error) {
        self.inner
            .counters
            .busy_retries
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::BUSY_RETRIES, "op" => op, "backend" => side.as_str()).increment(1);
        tracing::info!(op, backend = %side, attempt, error = %e, "write aborted by the database as busy; running it again");
        let ms = 5 * u64::from(attempt) + rand::random::<u64>() % 10;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn should_fall_back(&self, r: &Routing, e: &Error) -> bool {
        self.inner.config.fallback
            && !r.fallback
            && r.authoritative() == Backend::Postgres
            && r.stage.secondary().is_some()
            && e.is_unavailable()
    }

    /// Takes SQLite's write lock and reads the authority inside it; this
    /// process follows it before anything is written.
    pub(crate) async fn enter(&self) -> Result<(crate::sqlite::Locked, Authority)> {
        let held = self.inner.sqlite.lock().await?;
        let auth = match held.call(|c| crate::authority::sqlite_read(c)).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                self.rollback_held(held).await;
                return Err(Error::InvalidArgument(
                    "the SQLite file has no _cutover_authority row; open the dual store first"
                        .into(),
                ));
            }
            Err(e) => {
                self.rollback_held(held).await;
                return Err(e);
            }
        };
        self.follow(auth);
        Ok((held, auth))
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
    fn follow(&self, a: Authority) {
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

    /// Whether PostgreSQL answers a fresh connection (not the pool: a busy
    /// pool is not an outage).
    async fn pg_reachable(&self) -> bool {
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
    async fn fall_back_held(
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
        held.call(move |c| crate::authority::sqlite_write(c, &next))
            .await?;
        self.inner
            .counters
            .fallbacks
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %reason, stage = %auth.stage, epoch = next.epoch, "PostgreSQL unreachable: every process falls back to SQLite as authoritative");
        self.follow(next);
        Ok(Some(next))
    }

    /// A read that found PostgreSQL unavailable: falls back for every
    /// process when a fresh connection fails too (under the lock).
    async fn fall_back_for_read(&self, reason: &Error) -> bool {
        let Ok((held, auth)) = self.enter().await else {
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

    fn start_return_probe(&self) {
        if !self.inner.fallback_probe.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            tokio::spawn(async move { me.probe_until_back().await });
        }
    }

    /// While the authority says fallback: waits for PostgreSQL, then makes
    /// the return under the lock (any process may; the first one does it).
    async fn probe_until_back(&self) {
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
    pub async fn return_from_fallback(&self) -> Result<()> {
        let (held, auth) = self.enter().await?;
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
    async fn record_conflicts(&self) -> Result<()> {
        let pool = self.inner.pg.pool();
        let pending: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT table_name, row_key, max(id) FROM cutover.outbox GROUP BY table_name, row_key",
        )
        .fetch_all(pool)
        .await?;
        for (t, k, upto) in pending {
            let Some(table) = tables::by_name(&t) else {
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
            sqlx::query(
                "INSERT INTO cutover.conflicts (table_name, row_key, postgres_image, sqlite_image, detail)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(table.name)
            .bind(&k)
            .bind(as_json(&pimg))
            .bind(as_json(&simg))
            .bind("PostgreSQL held a write SQLite had not taken when it stood in, and SQLite changed the row during the fallback; SQLite's image was kept")
            .execute(pool)
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

    fn key_lock(&self, c: &Change) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        c.hash(&mut h);
        &self.inner.key_locks[(h.finish() as usize) % KEY_LOCKS]
    }

    /// Copies one changed row from `from` to the other side as its current
    /// image, then clears its outbox entries up to what was seen. A copy to
    /// PostgreSQL made outside the lock is fenced by the epoch this process
    /// follows (see `authority::pg_fence`).
    pub async fn apply(&self, c: &Change, from: Backend) -> Result<()> {
        let fence = (!crate::sqlite::lock::is_held()).then(|| self.routing().epoch);
        self.apply_carried(c, from, None, fence).await
    }

    /// As `apply`; `carried` is the image the write committed, copied as is
    /// unless SQLite holds a newer version of the key (see `sqlite_apply`);
    /// `fence` the epoch a copy to PostgreSQL must still find there.
    async fn apply_carried(
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

    /// Runs `f` holding SQLite's write lock: the caller's when it holds it,
    /// else taken here and committed when `f` succeeds.
    async fn under_lock<T, F>(&self, f: F) -> Result<T>
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
    async fn commit_held(&self, held: crate::sqlite::Locked) -> Result<()> {
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
    async fn rollback_held(&self, held: crate::sqlite::Locked) {
        held.rollback().await;
        self.inner.held_clears.lock().expect("clears lock").clear();
    }

    /// Runs `f` on SQLite: on the write connection (seeing the held
    /// transaction) inside the lock, else on a read connection.
    async fn sqlite_rw<R, F>(&self, f: F) -> Result<R>
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

    /// A foreign-key failure is only lag while a parent table still has
    /// entries waiting in the SQLite outbox: then the entry stays and is
    /// retried after them.
    async fn parent_pending(&self, c: &Change, e: &Error) -> bool {
        if e.db_kind() != Some(crate::DbErrorKind::ForeignKeyViolation) {
            return false;
        }
        let Some(table) = tables::by_name(c.table) else {
            return false;
        };
        let parents: Vec<&'static str> =
            table.foreign_keys.iter().map(|f| f.parent_table).collect();
        self.sqlite_rw(move |conn| -> Result<bool> {
            for p in &parents {
                let n: i64 = conn.query_row(
                    "SELECT count(*) FROM _cutover_outbox WHERE table_name = ?1",
                    [p],
                    |r| r.get(0),
                )?;
                if n > 0 {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
        .unwrap_or(true)
    }

    /// A legacy row the application changed that PostgreSQL cannot take
    /// (its value cannot be converted exactly, or its parent was rejected by
    /// the backfill): it is recorded in `cutover.rejects` like any backfill
    /// reject, with its original image, and its outbox entry is cleared, so
    /// one bad legacy row never blocks the outbox behind it.
    async fn reject_change(&self, c: &Change, e: &Error) -> Result<()> {
        let table = tables::by_name(c.table).expect("checked by apply");
        let key = Key::parse(table, &c.key)?;
        let (reason, column, detail) = match e {
            Error::InvalidValue {
                reason,
                column,
                detail,
                ..
            } => (*reason, column.to_string(), detail.clone()),
            Error::Database {
                kind: crate::DbErrorKind::ForeignKeyViolation,
                message,
                ..
            } => (
                crate::convert::RejectReason::Orphan,
                table
                    .foreign_keys
                    .first()
                    .map(|f| f.column)
                    .unwrap_or("")
                    .to_string(),
                message.clone(),
            ),
            Error::Database {
                kind: crate::DbErrorKind::CheckViolation,
                message,
                ..
            } => (
                crate::convert::RejectReason::CheckViolation,
                String::new(),
                message.clone(),
            ),
            other => (
                crate::convert::RejectReason::NotNull,
                String::new(),
                other.to_string(),
            ),
        };
        let (k, cc) = (key.clone(), c.clone());
        let (original, hw) = self
            .sqlite_rw(move |conn| -> Result<(serde_json::Value, Option<i64>)> {
                let sql = format!(
                    "SELECT {} FROM {} WHERE {} = ?1",
                    table.column_list(),
                    table.name,
                    table.primary_key
                );
                let key_value = match &k {
                    Key::Text(s) => rusqlite::types::Value::Text(s.clone()),
                    Key::Int(i) => rusqlite::types::Value::Integer(*i as i64),
                };
                let mut stmt = conn.prepare(&sql)?;
                let mut rows = stmt.query([key_value])?;
                let original = match rows.next()? {
                    Some(r) => {
                        let raws: Vec<crate::convert::Raw<'_>> = (0..table.columns.len())
                            .map(|i| r.get_ref(i).map(Into::into))
                            .collect::<rusqlite::Result<_>>()?;
                        crate::row::original_image(table, &raws)
                    }
                    None => serde_json::json!({}),
                };
                Ok((original, outbox::sqlite_high_water(conn, &cc)?))
            })
            .await?;
        let mut conn = self.inner.pg.pool().acquire().await?;
        crate::rejects::insert(
            &mut conn,
            &[crate::rejects::RejectRecord {
                table: table.name.to_string(),
                row_key: c.key.clone(),
                source_rowid: None,
                column,
                reason,
                detail: format!("changed by the application during the move: {detail}"),
                policy: crate::row::Policy::RejectRow,
                row_copied: false,
                original,
            }],
        )
        .await?;
        // Whatever older copy PostgreSQL holds is no longer the row's image.
        image::pg_delete(self.inner.pg.pool(), table, &key)
            .await
            .ok();
        if let Some(hw) = hw {
            let cc = c.clone();
            self.inner
                .sqlite
                .locked(move |conn| outbox::sqlite_clear(conn, &cc, hw))
                .await?;
        }
        tracing::warn!(table = c.table, key = %c.key, reason = %reason, "legacy row changed by the application cannot be copied; recorded in cutover.rejects");
        Ok(())
    }

    async fn apply_image(
        &self,
        c: &Change,
        from: Backend,
        carried: Option<&Carried>,
        fence: Option<i64>,
    ) -> Result<()> {
        let table = tables::by_name(c.table).ok_or_else(|| {
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
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(COPY_LOCK_CLASS)
                    .bind(format!("{}:{}", c.table, c.key))
                    .execute(&mut *tx)
                    .await?;
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

    /// Waits until the copies to PostgreSQL made after their SQLite commit
    /// are done, and flushes the clears queued so far.
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

    /// Copies a write's rows to the other side, fenced by the epoch the
    /// write was made under (outside the lock) or inside it.
    async fn apply_changes(&self, op: &'static str, r: &Routing, captured: Captured) {
        if r.secondary().is_none() || captured.changes.is_empty() {
            return;
        }
        struct Applying<'a>(&'a Inner);
        impl Drop for Applying<'_> {
            fn drop(&mut self) {
                if self.0.applying.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.0.applied.notify_waiters();
                }
            }
        }
        self.inner.applying.fetch_add(1, Ordering::SeqCst);
        let _applying = Applying(&self.inner);
        let from = r.authoritative();
        let fence = (!crate::sqlite::lock::is_held()).then_some(r.epoch);
        let mut seen = std::collections::HashSet::new();
        for c in captured.changes {
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Err(e) = self
                .apply_carried(&c, from, captured.carried.get(&c), fence)
                .await
            {
                self.inner
                    .counters
                    .secondary_failures
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::SECONDARY_WRITE_FAILURES, "op" => op, "table" => c.table)
                    .increment(1);
                tracing::debug!(op, table = c.table, key = %c.key, error = %e, "secondary write failed; kept in the outbox");
            }
        }
    }

    /// Applies the outbox entries of `side` pending when it starts (each
    /// once; or until an apply fails, which is returned). Returns how many
    /// were applied. Outside the lock only the authoritative side's outbox
    /// is applied, fenced by the epoch; a flip drains both inside it.
    pub async fn drain(&self, side: Backend, batch: i64) -> Result<u64> {
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
            Backend::Sqlite => {
                self.sqlite_rw(|conn| -> Result<i64> {
                    Ok(conn.query_row(
                        "SELECT coalesce(max(id), 0) FROM _cutover_outbox",
                        [],
                        |r| r.get(0),
                    )?)
                })
                .await?
            }
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
                    self.sqlite_rw(move |conn| outbox::sqlite_fetch(conn, after, batch))
                        .await?
                }
                Backend::Postgres => outbox::pg_fetch(self.inner.pg.pool(), after, batch).await?,
            };
            if entries.is_empty() {
                return Ok(applied);
            }
            let mut failed = None;
            // Entries come in id order: one past `upto` ends the drain.
            let past_upto = entries.last().is_some_and(|e| e.id > upto);
            for e in entries.into_iter().filter(|e| e.id <= upto) {
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

    /// Entries pending in both outboxes (PostgreSQL's counted only when reachable).
    pub async fn outbox_pending(&self) -> Result<i64> {
        self.flush_clears_if_idle().await;
        let s = self.inner.sqlite.read(outbox::sqlite_pending).await?;
        let p = outbox::pg_pending(self.inner.pg.pool()).await.unwrap_or(0);
        metrics::gauge!(m::OUTBOX_PENDING).set((s + p) as f64);
        Ok(s + p)
    }

    /// Whether anything waits in either outbox.
    async fn anything_pending(&self) -> bool {
        self.outbox_pending().await.map(|n| n > 0).unwrap_or(true)
    }

    /// Whether an outbox entry may explain these mismatches: one for a
    /// mismatched row's key (either side, its table), or, when a mismatch is
    /// not about one row's own column (a count, the order of a list, a job's
    /// chunks), any entry at all. An outbox that cannot be read counts as
    /// pending.
    async fn pending_for(&self, ms: &[Mismatch]) -> bool {
        let own_column = |m: &Mismatch| {
            !m.key.is_empty()
                && match &m.field {
                    None => true,
                    Some(f) => tables::by_name(m.table).is_some_and(|t| t.column(f).is_some()),
                }
        };
        if !ms.iter().all(own_column) {
            return self.anything_pending().await;
        }
        self.flush_clears_if_idle().await;
        let tables: Vec<String> = ms.iter().map(|m| m.table.to_string()).collect();
        let keys: Vec<String> = ms.iter().map(|m| m.key.clone()).collect();
        let (t, k) = (tables.clone(), keys.clone());
        let in_sqlite = self
            .inner
            .sqlite
            .read(move |conn| -> Result<bool> {
                let mut st = conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM _cutover_outbox WHERE table_name = ?1 AND row_key = ?2)",
                )?;
                for (t, k) in t.iter().zip(&k) {
                    if st.query_row((t, k), |r| r.get::<_, bool>(0))? {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await;
        if !matches!(in_sqlite, Ok(false)) {
            return true;
        }
        let in_pg: std::result::Result<bool, _> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
             JOIN cutover.outbox o ON o.table_name = u.t AND o.row_key = u.k)",
        )
        .bind(&tables)
        .bind(&keys)
        .fetch_one(self.inner.pg.pool())
        .await;
        !matches!(in_pg, Ok(false))
    }

    /// Moves both sides' id generators past the highest id either side holds,
    /// so whichever side becomes authoritative never hands out a used id.
    pub async fn align_sequences(&self) -> Result<()> {
        let serial: Vec<&'static tables::Table> =
            tables::ALL.iter().copied().filter(|t| t.serial).collect();
        // One call per side: this runs while writers are held.
        let names: Vec<(&'static str, &'static str)> =
            serial.iter().map(|t| (t.name, t.primary_key)).collect();
        let n2 = names.clone();
        let smax: Vec<i64> = self
            .inner
            .sqlite
            .locked(move |conn| -> Result<Vec<i64>> {
                let mut out = Vec::new();
                for (name, pk) in &n2 {
                    let a: i64 = conn.query_row(
                        &format!("SELECT coalesce(max({pk}), 0) FROM {name}"),
                        [],
                        |r| r.get(0),
                    )?;
                    let b: i64 = conn
                        .query_row(
                            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
                            [name],
                            |r| r.get(0),
                        )
                        .unwrap_or(0);
                    out.push(a.max(b));
                }
                Ok(out)
            })
            .await?;
        let pg_sql = names
            .iter()
            .map(|(name, pk)| {
                format!("greatest((SELECT coalesce(max({pk}), 0)::bigint FROM {name}), (SELECT last_value FROM {name}_{pk}_seq))")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {pg_sql}")))
            .fetch_one(self.inner.pg.pool())
            .await?;
        let mut tops = Vec::new();
        for (i, s) in smax.iter().enumerate() {
            let p: i64 = sqlx::Row::try_get(&row, i)?;
            tops.push((*s).max(p).max(1));
        }
        let setvals = names
            .iter()
            .zip(&tops)
            .map(|((name, pk), top)| {
                format!("setval(pg_get_serial_sequence('{name}', '{pk}'), {top})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {setvals}")))
            .execute(self.inner.pg.pool())
            .await?;
        let pairs: Vec<(&'static str, i64)> = names.iter().map(|(n, _)| *n).zip(tops).collect();
        self.inner
            .sqlite
            .locked(move |conn| -> Result<()> {
                for (name, top) in &pairs {
                    let n = conn.execute(
                        "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
                        (name, top),
                    )?;
                    if n == 0 {
                        conn.execute(
                            "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                            (name, top),
                        )?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Moves every process to `to`, bypassing the go-live gates (tests and
    /// tools that own the setup; an operator uses `set_stage`). Returns the
    /// pause writers saw.
    pub async fn switch(&self, to: Stage) -> Result<Duration> {
        self.set_stage(to, true, "switch").await
    }

    /// Whether moving to `to` changes which side is authoritative or copied to.
    pub fn flips(&self, to: Stage) -> bool {
        let cur = self.routing();
        cur.stage.authoritative() != to.authoritative() || cur.secondary() != to.secondary()
    }

    /// Moves every process to `to`, as DESIGN §3 orders it: under SQLite's
    /// write lock (every process's writes wait), PostgreSQL's authority row
    /// moves first (copies of the old epoch commit before it or not at
    /// all), both outboxes drain (finite: nothing new can enter), the gates
    /// are judged and the stage persisted (`stage::set`, which announces
    /// it), the id generators are aligned, and SQLite's row says the new
    /// epoch. Every process follows at its next write; reads within the
    /// stage watcher's poll. Returns the pause writers saw.
    pub async fn set_stage(&self, to: Stage, force: bool, by: &str) -> Result<Duration> {
        // Drain most of the backlog before taking the lock, so the pause is short.
        let pre = Instant::now();
        for side in [Backend::Sqlite, Backend::Postgres] {
            match self.drain(side, 1000).await {
                Err(e) => tracing::debug!(side = %side, error = %e, "pre-flip drain incomplete"),
                Ok(n) => {
                    tracing::info!(side = %side, applied = n, ms = pre.elapsed().as_millis() as u64, "pre-flip drain")
                }
            }
        }
        let started = Instant::now();
        let (held, auth) = self.enter().await?;
        let locked_at = started.elapsed();
        let pool = self.inner.pg.pool().clone();
        let by = by.to_string();
        self.inner.flipping.store(true, Ordering::SeqCst);
        let r = crate::sqlite::lock::within(async {
            let next = Authority {
                epoch: auth.epoch + 1,
                stage: to,
                fallback: false,
            };
            crate::authority::pg_write(
                &pool,
                &Authority {
                    epoch: next.epoch,
                    ..auth
                },
            )
            .await?;
            if auth.fallback {
                self.record_conflicts().await?;
            }
            self.drain(Backend::Sqlite, 1000).await?;
            self.drain(Backend::Postgres, 1000).await?;
            let drained = started.elapsed();
            let sqlite_pending = self
                .inner
                .sqlite
                .locked(crate::outbox::sqlite_pending)
                .await?;
            let state = stage::set(
                &pool,
                &stage::Change {
                    to,
                    force,
                    by,
                    extra_pending: sqlite_pending,
                },
            )
            .await?;
            if auth.authoritative() != next.authoritative() || auth.fallback {
                self.align_sequences().await?;
            }
            crate::authority::pg_write(&pool, &next).await?;
            held.call(move |c| crate::authority::sqlite_write(c, &next))
                .await?;
            Ok::<_, Error>((next, state, drained))
        })
        .await;
        self.inner.flipping.store(false, Ordering::SeqCst);
        let (next, state, drained) = match r {
            Ok(v) => v,
            Err(e) => {
                // PostgreSQL's row may have moved already: SQLite's follows
                // it (same stage), so copies are not fenced out for good.
                match crate::authority::pg_read(&pool).await {
                    Ok(pa) if pa.epoch > auth.epoch => {
                        let same = Authority {
                            epoch: pa.epoch,
                            ..auth
                        };
                        let w = held
                            .call(move |c| crate::authority::sqlite_write(c, &same))
                            .await;
                        if w.is_ok() && self.commit_held(held).await.is_ok() {
                            self.follow(same);
                        }
                    }
                    _ => self.rollback_held(held).await,
                }
                return Err(e);
            }
        };
        self.commit_held(held).await?;
        self.follow(next);
        let pause = started.elapsed();
        metrics::histogram!(m::FLIP_PAUSE).record(pause.as_secs_f64());
        let _ = sqlx::query("UPDATE cutover.stage_history SET pause_ms = $1 WHERE id = (SELECT max(id) FROM cutover.stage_history)")
            .bind(pause.as_secs_f64() * 1000.0)
            .execute(&pool)
            .await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            from = %auth.stage,
            to = %to,
            epoch = next.epoch,
            version = state.version,
            pause_ms = ms(pause),
            lock_wait_ms = ms(locked_at),
            drain_ms = ms(drained - locked_at),
            "stage flip done"
        );
        Ok(pause)
    }

    fn sampled(&self) -> bool {
        let rate = self.inner.config.shadow_sample_rate;
        rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
    }

    /// Compares `primary` (the authoritative answer) with what `other`
    /// answers, re-checking once after the outbox applies when the table has
    /// pending keys. Runs on a spawned task.
    async fn shadow_compare<T, F, Fut>(
        self,
        op: &'static str,
        table: &'static str,
        policy: Policy,
        primary: Value,
        other_side: Backend,
        read: F,
    ) where
        T: Serialize,
        F: Fn(DualStore, Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeout = self.inner.config.shadow_timeout;
        let c = &self.inner.counters;
        let outcome = |o: &'static str| {
            metrics::counter!(m::SHADOW_COMPARISONS, "op" => op, "outcome" => o).increment(1)
        };
        let other = match tokio::time::timeout(timeout, read(self.clone(), other_side)).await {
            Ok(Ok(v)) => serde_json::to_value(v).unwrap_or(Value::Null),
            _ => {
                c.shadow_errors.fetch_add(1, Ordering::Relaxed);
                outcome("error");
                return;
            }
        };
        c.comparisons.fetch_add(1, Ordering::Relaxed);
        let ms = shadow::compare(op, table, policy, &primary, &other);
        if ms.is_empty() {
            outcome("match");
            return;
        }
        // Lag, not divergence, when the rows were still on their way (in the
        // outbox) or changed between the two reads. A mismatch counts only
        // when it holds still: the authoritative side reads the same before
        // and after the other side is read, nothing for the rows concerned
        // waits in either outbox, and the next round sees the very same two
        // answers. Rows that keep changing until the deadline are counted
        // apart (`unsettled`): each write copies the whole row, so a key
        // rewritten that often is re-copied anyway, and verify checks the
        // rows once traffic lets it.
        let deadline = Instant::now() + self.inner.config.lag_recheck;
        let auth = other_side_of(other_side);
        let mut ms = ms;
        let mut seen: Option<(Value, Value)> = None;
        loop {
            while Instant::now() < deadline && self.pending_for(&ms).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let to_value = |r: Result<T>| {
                r.ok()
                    .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
            };
            let a1 = to_value(read(self.clone(), auth).await);
            let b = to_value(read(self.clone(), other_side).await);
            let a2 = to_value(read(self.clone(), auth).await);
            if let (Some(a1), Some(b), Some(a2)) = (a1, b, a2) {
                let still = shadow::compare(op, table, policy, &a2, &b);
                if still.is_empty() || shadow::compare(op, table, policy, &a1, &b).is_empty() {
                    c.mismatches_lag_resolved.fetch_add(1, Ordering::Relaxed);
                    outcome("lag_resolved");
                    return;
                }
                let held = shadow::compare(op, table, Policy::Exact, &a1, &a2).is_empty();
                if held && !self.pending_for(&still).await {
                    if seen.as_ref() == Some(&(a2.clone(), b.clone())) {
                        ms = still;
                        break;
                    }
                    seen = Some((a2, b));
                } else {
                    seen = None;
                }
                ms = still;
            }
            if Instant::now() >= deadline {
                c.mismatches_unsettled.fetch_add(1, Ordering::Relaxed);
                outcome("unsettled");
                tracing::debug!(op, table, mismatches = ?ms, "shadow mismatch on rows still changing");
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // Legacy rows the backfill (or a dual write) recorded as rejects are
        // accounted for: PostgreSQL never took them, by design.
        if self.all_rejected(&ms).await {
            c.mismatches_rejected.fetch_add(1, Ordering::Relaxed);
            outcome("rejected");
            return;
        }
        c.mismatches_real.fetch_add(1, Ordering::Relaxed);
        outcome("mismatch");
        for x in &ms {
            metrics::counter!(m::SHADOW_MISMATCHES, "op" => op, "table" => table, "kind" => x.kind.as_str()).increment(1);
        }
        tracing::warn!(op, table, mismatches = ?ms, "shadow read mismatch");
        self.inner.ledger.push(&ms);
        if self.inner.config.raise_on_mismatch {
            panic!("shadow mismatch in {op}: {ms:?}");
        }
    }

    /// Whether every mismatch is on a row recorded in `cutover.rejects`.
    async fn all_rejected(&self, ms: &[Mismatch]) -> bool {
        let keyed: Vec<&Mismatch> = ms.iter().filter(|m| !m.key.is_empty()).collect();
        if keyed.len() != ms.len() {
            return false;
        }
        let tables: Vec<&str> = keyed.iter().map(|m| m.table).collect();
        let keys: Vec<&str> = keyed.iter().map(|m| m.key.as_str()).collect();
        let found: std::result::Result<i64, _> = sqlx::query_scalar(
            "SELECT count(DISTINCT (u.t, u.k)) FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
             JOIN cutover.rejects r ON r.table_name = u.t AND r.row_key = u.k",
        )
        .bind(&tables)
        .bind(&keys)
        .fetch_one(self.inner.pg.pool())
        .await;
        let distinct: std::collections::HashSet<(&str, &str)> =
            tables.iter().copied().zip(keys.iter().copied()).collect();
        matches!(found, Ok(n) if n as usize == distinct.len())
    }
}

/// Failures that retrying cannot fix: the data, not the connection.
fn is_data_error(e: &Error) -> bool {
    matches!(e, Error::InvalidValue { .. })
        || matches!(
            e.db_kind(),
            Some(crate::DbErrorKind::ForeignKeyViolation)
                | Some(crate::DbErrorKind::CheckViolation)
                | Some(crate::DbErrorKind::NotNullViolation)
        )
}

fn other_side_of(b: Backend) -> Backend {
    match b {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }
}

/// Times an authoritative write aborted as busy runs again.
const BUSY_RETRIES: u32 = 4;

/// Whether a write that failed with `e` on `side` after `attempt` retries
/// runs again: a transaction PostgreSQL chose to abort (deadlock victim,
/// serialization failure, lock timeout) committed nothing. SQLite's busy
/// means its busy timeout ran out already.
fn runs_again(side: Backend, attempt: u32, e: &Error) -> bool {
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

/// A read: the authoritative side answers; in shadow stages a sample is
/// compared with the other side on a spawned task. `$owned` are owned copies
/// of the arguments the shadow read needs.
macro_rules! read_op {
    ($self:ident, $op:literal, $table:literal, $policy:expr, [$($v:ident : $t:ty = $init:expr),*], |$s:ident| $call:expr) => {{
        $(let $v: $t = $init;)*
        let routing = $self.routing();
        let side = routing.authoritative();
        let started = Instant::now();
        let res = {
            let $s: &dyn Store = $self.side(side);
            $call.await
        };
        $self.observe($op, side, started);
        let res = match res {
            Err(e) if $self.should_fall_back(&routing, &e) => {
                if $self.fall_back_for_read(&e).await {
                    let $s: &dyn Store = &$self.inner.sqlite;
                    $call.await
                } else {
                    // PostgreSQL answers a fresh connection: the one this
                    // read used was cut; a read runs again safely.
                    let $s: &dyn Store = $self.side(side);
                    $call.await
                }
            }
            other => other,
        };
        $self.count(&res);
        let value = res?;
        if routing.stage.shadows_reads() && !routing.fallback && $self.sampled() {
            if let Ok(primary) = serde_json::to_value(&value) {
                let me = $self.clone();
                let other = other_side_of(side);
                tokio::spawn(me.shadow_compare($op, $table, $policy, primary, other, move |d: DualStore, b: Backend| {
                    $(let $v = $v.clone();)*
                    async move {
                        let $s: &dyn Store = d.side(b);
                        $call.await
                    }
                }));
            }
        }
        Ok(value)
    }};
}

#[async_trait]
impl Store for DualStore {
    fn backend(&self) -> Backend {
        self.routing().authoritative()
    }

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        write_op!(self, "upsert_profile", |s| s.upsert_profile(profile))
    }
    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        read_op!(self, "get_user", "users", Policy::Exact, [id: String = id.to_string()], |s| s.get_user(&id))
    }
    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        read_op!(self, "get_user_by_username", "users", Policy::Exact, [u: String = username.to_string()], |s| s
            .get_user_by_username(&u))
    }
    async fn users_scraped_before(&self, before: Timestamp, limit: u32) -> Result<Vec<User>> {
        read_op!(
            self,
            "users_scraped_before",
            "users",
            Policy::Ordered("id"),
            [],
            |s| s.users_scraped_before(before, limit)
        )
    }
    async fn delete_user(&self, id: &str) -> Result<bool> {
        write_op!(self, "delete_user", |s| s.delete_user(id))
    }
    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        write_op!(self, "save_tweets", |s| s.save_tweets(user_id, tweets))
    }
    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        read_op!(self, "get_tweet", "tweets", Policy::Exact, [id: String = id.to_string()], |s| s.get_tweet(&id))
    }
    async fn timeline(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        read_op!(self, "timeline", "tweets", Policy::Ordered("id"),
            [u: String = user_id.to_string(), cur: Option<TimelineCursor> = cursor.cloned()],
            |s| s.timeline(&u, limit, cur.as_ref()))
    }
    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        read_op!(self, "count_tweets", "tweets", Policy::Exact, [u: String = user_id.to_string()], |s| s.count_tweets(&u))
    }
    async fn search_tweets(&self, query: &str, limit: u32) -> Result<Vec<Tweet>> {
        read_op!(self, "search_tweets", "tweets", Policy::Intersection("id"), [q: String = query.to_string()], |s| s
            .search_tweets(&q, limit))
    }
    async fn save_analysis(&self, analysis: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        write_op!(self, "save_analysis", |s| s.save_analysis(analysis))
    }
    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        read_op!(self, "latest_analysis", "personality_analysis", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .latest_analysis(&u))
    }
    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        read_op!(self, "funnel_progress", "funnel_progress", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .funnel_progress(&u))
    }
    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        write_op!(self, "complete_funnel_command", |s| s
            .complete_funnel_command(user_id, command, response))
    }
    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        write_op!(self, "mark_funnel_complete", |s| s
            .mark_funnel_complete(user_id, data))
    }
    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        read_op!(self, "funnel_completion", "funnel_completion", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .funnel_completion(&u))
    }
    async fn create_referral_code(&self, owner_user_id: &str, code: &str) -> Result<ReferralCode> {
        write_op!(self, "create_referral_code", |s| s
            .create_referral_code(owner_user_id, code))
    }
    async fn get_referral_code(&self, code: &str) -> Result<Option<ReferralCode>> {
        read_op!(self, "get_referral_code", "referral_codes", Policy::Exact, [c: String = code.to_string()], |s| s
            .get_referral_code(&c))
    }
    async fn redeem_referral(&self, code: &str, referred_user_id: &str) -> Result<Referral> {
        write_op!(self, "redeem_referral", |s| s
            .redeem_referral(code, referred_user_id))
    }
    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        read_op!(self, "referral_stats", "referral_codes", Policy::Exact, [o: String = owner_user_id.to_string()], |s| s
            .referral_stats(&o))
    }
    async fn referral_usage(&self, code: &str) -> Result<Vec<ReferralUsage>> {
        read_op!(self, "referral_usage", "referral_usage_log", Policy::Ordered("id"), [c: String = code.to_string()], |s| s
            .referral_usage(&c))
    }
    async fn enqueue_job(&self, job: &NewJob) -> Result<JobWithChunks> {
        write_op!(self, "enqueue_job", |s| s.enqueue_job(job))
    }
    async fn claim_next_job(&self) -> Result<Option<Job>> {
        write_op!(self, "claim_next_job", |s| s.claim_next_job())
    }
    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        read_op!(self, "get_job", "analysis_queue", Policy::Exact, [], |s| s
            .get_job(job_id))
    }
    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        write_op!(self, "start_chunk", |s| s.start_chunk(chunk_id))
    }
    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        write_op!(self, "complete_chunk", |s| s
            .complete_chunk(chunk_id, result))
    }
    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        write_op!(self, "fail_chunk", |s| s.fail_chunk(chunk_id, error))
    }
    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        write_op!(self, "complete_job", |s| s.complete_job(job_id))
    }
    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        write_op!(self, "fail_job", |s| s.fail_job(job_id, error))
    }
    async fn jobs_by_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>> {
        read_op!(
            self,
            "jobs_by_status",
            "analysis_queue",
            Policy::Ordered("job_id"),
            [],
            |s| s.jobs_by_status(status, limit)
        )
    }
    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        read_op!(self, "user_jobs", "analysis_queue", Policy::Ordered("job_id"), [u: String = user_id.to_string()], |s| s
            .user_jobs(&u))
    }
}
