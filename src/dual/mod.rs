//! `DualStore`: the application's store during the move.
//!
//! Reads are routed by the routing this process follows, held in an
//! `ArcSwap`; in `shadow` and `live` a sample is also read from the other
//! side off the caller's path and compared. Writes route by the authority
//! read under a lock that keeps it still (docs/DESIGN.md §3): the order lock,
//! shared, when PostgreSQL is authoritative; SQLite's write lock when
//! SQLite is. The authoritative side writes first; the rows it changed
//! (reported by the store, and recorded in its outbox in the same
//! transaction) are then copied to the other side as their current image:
//! into SQLite under its write lock before the order lock is released when
//! PostgreSQL is authoritative, after SQLite's commit (fenced by the epoch)
//! when SQLite is. A failure there never fails the caller: it is counted,
//! logged and left in the outbox for the replayer.
//!
//! One concept per file: `routing` (what this process follows, and the
//! lock every write enters), `write` (the write path's transaction
//! handling), `apply` (copying a changed row to the other side), `reject`
//! (legacy rows PostgreSQL cannot take), `replay` (outbox drains and
//! clears), `fallback` (PostgreSQL unreachable, and the return), `flip`
//! (stage changes under the lock), `shadow` (sampled comparison of reads),
//! `routes` (the `Store` operations) and `queries` (any application's
//! operations, `WriteQuery`/`ReadQuery`, routed the same way). The
//! authority itself is
//! `crate::authority`.

mod apply;
mod counters;
mod fallback;
mod flip;
mod queries;
mod reject;
mod replay;
mod routes;
mod routing;
mod shadow;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::changes::Change;
use crate::error::Result;
use crate::metrics as m;
use crate::pg::PgStore;
use crate::shadow::{Ledger, Mismatch};
use crate::sqlite::SqliteStore;
use crate::stage::Stage;

pub use crate::shadow::Policy;
pub use counters::{CounterSnapshot, Counters};
pub use queries::{PgFuture, ReadQuery, WriteQuery};
pub use routing::Routing;

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
    /// How long a copy to PostgreSQL made after its write's SQLite commit
    /// waits for a PostgreSQL lock (a backfill building the table's indexes,
    /// or loading a batch holding the same key) before it leaves the row in
    /// the outbox for the replayer; copies to that table then go straight
    /// to the outbox for [`DualConfig::copy_busy_pause`].
    pub copy_lock_timeout: Duration,
    /// See `copy_lock_timeout`.
    pub copy_busy_pause: Duration,
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
            copy_lock_timeout: Duration::from_millis(200),
            copy_busy_pause: Duration::from_secs(1),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) sqlite: SqliteStore,
    pub(crate) pg: PgStore,
    pub(crate) routing: ArcSwap<Routing>,
    // Epochs this process followed, with when (for reports and tests).
    pub(super) followed: std::sync::Mutex<Vec<(i64, Stage, bool, std::time::SystemTime)>>,
    // Copies to PostgreSQL made after their SQLite commit, still running.
    pub(super) applying: std::sync::atomic::AtomicUsize,
    pub(super) applied: tokio::sync::Notify,
    // SQLite outbox entries copied to PostgreSQL and not cleared yet, with
    // the id to clear up to (cleared in one locked transaction per flush).
    pub(super) sqlite_clears: std::sync::Mutex<HashMap<Change, i64>>,
    // PostgreSQL entries applied inside the held transaction: queued for
    // clearing once it commits, dropped if it rolls back.
    pub(super) held_clears: std::sync::Mutex<Vec<(Change, i64)>>,
    // PostgreSQL writes whose images wait to land in SQLite, and the turn
    // to land them: whoever holds the turn lands every queued write in one
    // SQLite transaction (`write::apply_held`).
    pub(super) landing_queue: std::sync::Mutex<Vec<write::Landing>>,
    pub(super) landing_turn: tokio::sync::Mutex<()>,
    // A landing after its write's answer runs (`write::land_after`).
    pub(super) landing_after: AtomicBool,
    // The authority read last under the order lock, shared, with the
    // authority generation it was read under (`routing::enter_shared`).
    pub(super) authority_seen: std::sync::Mutex<Option<(u64, crate::authority::Authority)>>,
    // Per-key apply locks (hashed slots).
    pub(super) key_locks: Vec<tokio::sync::Mutex<()>>,
    // PostgreSQL outbox entries applied to SQLite and not cleared yet, with
    // the id to clear up to: cleared in batches off the caller's path (an
    // entry left by a crash is applied again, which changes nothing).
    pub(super) clears: std::sync::Mutex<HashMap<Change, i64>>,
    pub(super) flushing: tokio::sync::Mutex<()>,
    pub(crate) config: DualConfig,
    pub(crate) ledger: Ledger,
    pub(crate) counters: Counters,
    pub(super) fallback_probe: AtomicBool,
    // A flip or a return is running (inside the lock) in this process.
    pub(super) flipping: AtomicBool,
    // Tables whose copies to PostgreSQL go straight to the outbox until the
    // instant given: a copy found the table locked (`copy_lock_timeout`).
    pub(super) busy_tables: std::sync::Mutex<HashMap<&'static str, std::time::Instant>>,
}

/// The routing store. Cheap to clone.
#[derive(Clone)]
pub struct DualStore {
    pub(crate) inner: Arc<Inner>,
}

pub(super) const KEY_LOCKS: usize = 1024;

impl DualStore {
    /// A dual store over both stores, moved to `stage` (a forced flip under
    /// the lock when the authority says otherwise). Tests and tools that
    /// own the whole setup use it; an application uses `open`.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) async fn forced(
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
        let names = |s: &crate::tables::Schema| -> Vec<&'static str> {
            s.tables.iter().map(|t| t.name).collect()
        };
        if names(sqlite.schema()) != names(pg.schema()) {
            return Err(crate::error::Error::InvalidArgument(format!(
                "the SQLite store was opened for the tables {:?} and the PostgreSQL store for {:?}: both need the same schema",
                names(sqlite.schema()),
                names(pg.schema())
            )));
        }
        crate::metrics::zero_dual_store();
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
                landing_queue: std::sync::Mutex::new(Vec::new()),
                landing_turn: tokio::sync::Mutex::new(()),
                landing_after: AtomicBool::new(false),
                authority_seen: std::sync::Mutex::new(None),
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
                busy_tables: std::sync::Mutex::new(HashMap::new()),
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
            "write slot taken: {}; key locks taken: {keys}; PostgreSQL clear flush running: {}; copies after commit running: {}; pool size {} idle {} warm {}",
            self.inner.sqlite.slot_taken(),
            self.inner.flushing.try_lock().is_err(),
            self.inner.applying.load(Ordering::SeqCst),
            self.inner.pg.pool().size(),
            self.inner.pg.pool().num_idle(),
            self.inner.pg.warm_connections(),
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

    /// The application's tables this store moves (both stores were
    /// opened with them).
    pub fn schema(&self) -> &'static crate::tables::Schema {
        self.inner.sqlite.schema()
    }

    /// The SQLite store underneath.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) fn sqlite(&self) -> &SqliteStore {
        &self.inner.sqlite
    }

    /// The PostgreSQL store underneath.
    pub(crate) fn pg(&self) -> &PgStore {
        &self.inner.pg
    }

    /// The most recent mismatches.
    pub fn recent_mismatches(&self) -> Vec<Mismatch> {
        self.inner.ledger.recent()
    }
}
