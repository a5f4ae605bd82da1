//! What a backfill run takes (`BackfillOptions`) and what it reports
//! (`TableSummary`, `BackfillSummary`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::Unknown;
use crate::convert::RejectReason;
use crate::error::Result;
use crate::row::Policy;
use crate::settings::PgSettings;
use crate::stage::Stage;
use crate::tables::{self, Table};

/// How a backfill runs.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The legacy SQLite file.
    pub sqlite_path: PathBuf,
    /// The PostgreSQL target.
    pub postgres: PgSettings,
    /// Rows per batch.
    pub batch_size: usize,
    /// The application's tables (the Twitter application's by default).
    pub schema: &'static tables::Schema,
    /// Only these tables (in the schema's order); all when `None`.
    pub tables: Option<Vec<String>>,
    /// What to do with a bad value (`--on-bad-value`).
    pub policy: Policy,
    /// Throttle: at most this many source rows per second.
    pub max_rows_per_sec: Option<u64>,
    /// Drop each table's secondary B-tree indexes for its copy and build
    /// them again as soon as it is copied (default; see `indexes.rs` for the
    /// locks a build takes). False keeps them in place, maintained row by row.
    pub defer_indexes: bool,
    /// With `defer_indexes`, drop and build the GIN (full-text) indexes too.
    /// Off by default: a GIN index left in place takes the rows in its
    /// pending list, computed by the loading connections side by side and
    /// merged by a connection of its own while the copy goes on, which on
    /// the plan's tweets beats one single-threaded build at the end.
    pub defer_full_text: bool,
    /// With `defer_indexes`, a table's indexes are dropped only when at
    /// least this many of its rows are left to copy, and at least half as
    /// many as PostgreSQL holds already (a re-run that picks up a few new
    /// rows keeps them in place).
    pub defer_min_rows: u64,
    /// `statement_timeout` of the PostgreSQL side of a batch.
    pub statement_timeout: Duration,
    /// SQLite's busy timeout on the backfill's connection (its reads do
    /// not wait for writers in WAL mode; a rollback-journal file may make
    /// them wait for a writer's commit).
    pub busy_timeout: Duration,
    /// Where progress goes (bars, logs); `None`: progress is logged.
    pub progress: Option<Arc<dyn crate::progress::Progress>>,
    /// After each round of batches, pause for this fraction of the time the
    /// round took, leaving CPU and disk to the application; 0 (the default)
    /// copies flat out. (Batches hold no SQLite lock: writers never wait
    /// for them either way.)
    pub writer_share: f64,
    /// After a round during which the application committed to SQLite,
    /// pause for this share of the round's time as well (default 1: while
    /// the application writes, the copy takes at most half the time).
    pub busy_share: f64,
    /// Batches loaded side by side while the application writes (default
    /// 1): fewer loading connections, less CPU taken from its calls.
    pub busy_jobs: usize,
    /// Batches of one round loaded side by side, each on its own
    /// PostgreSQL connection, for tables whose only unique value is their
    /// key; they commit in order. 1 loads one batch at a time.
    pub jobs: usize,
    /// Run whatever the stage (`--force`). Outside `dualwrite`/`shadow`
    /// PostgreSQL misses the writes made meanwhile (`off`) or may get back
    /// rows it deleted (`live` on); see [`stage_refusal`].
    pub force: bool,
    /// How long a run that lost PostgreSQL mid-way waits for it to answer
    /// again before it gives up; it then resumes from the checkpoints
    /// (`--wait-for-postgres`, 60 s).
    pub postgres_wait: Duration,
    /// Tables and columns of the legacy file the schema does not describe,
    /// named by the operator to go on without them (`--ignore-unknown`):
    /// `notes` for a table, `users.nickname` for a column. The run refuses
    /// while the file holds one not named here, and a name that is none of
    /// them (see `crate::audit::unacknowledged`).
    pub ignore_unknown: Vec<String>,
}

impl BackfillOptions {
    /// Defaults: batches of 5000, four loaded side by side, reject-row, no
    /// throttle, 30 s statement timeout, B-tree indexes dropped for the copy.
    pub fn new(sqlite_path: impl Into<PathBuf>, postgres: PgSettings) -> Self {
        Self {
            sqlite_path: sqlite_path.into(),
            postgres,
            batch_size: 5000,
            schema: &tables::TWITTER,
            tables: None,
            policy: Policy::RejectRow,
            max_rows_per_sec: None,
            defer_indexes: true,
            defer_full_text: false,
            defer_min_rows: 10_000,
            statement_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(10),
            progress: None,
            writer_share: 0.0,
            busy_share: 1.0,
            busy_jobs: 1,
            jobs: 4,
            force: false,
            postgres_wait: Duration::from_secs(60),
            ignore_unknown: Vec::new(),
        }
    }

    /// The tables to copy, in copy order; an unknown name is an error.
    pub fn selected_tables(&self) -> Result<Vec<&'static Table>> {
        self.schema.select(self.tables.as_deref())
    }
}

/// What the run did to one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSummary {
    /// Table name.
    pub table: &'static str,
    /// Rows in the SQLite table, up to the last rowid the copy read, when it
    /// reached its end (rows written after that are copied by their own
    /// dual writes); `None` when the run stopped before that.
    pub source_rows: Option<u64>,
    /// Rows copied by this run (written, or found already present).
    pub copied: u64,
    /// Of `copied`, rows a live write had already put in PostgreSQL.
    pub already_present: u64,
    /// Rows the application deleted after their batch read them: no longer
    /// counted as copied, and removed from PostgreSQL where the batch
    /// brought them back.
    pub deleted_meanwhile: u64,
    /// Rounds during which the application committed to SQLite: after
    /// each the copy made room for it (`busy_share`, `busy_jobs`).
    pub busy_rounds: u64,
    /// Of `seconds`, paused after those rounds to make room for the
    /// application's writes (`busy_share` of each round's time).
    pub room_seconds: f64,
    /// Rows rejected by this run, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Values nulled (and recorded) under `null-and-record` in copied rows.
    pub nulled_values: u64,
    /// Rows copied over every run (the checkpoint's total).
    pub total_copied: u64,
    /// Rows rejected over every run (the checkpoint's total).
    pub total_rejected: u64,
    /// Wall-clock seconds spent on the table.
    pub seconds: f64,
    /// Of `seconds`, reading and converting in SQLite.
    pub sqlite_seconds: f64,
    /// Of `seconds`, the PostgreSQL side of batches.
    pub postgres_seconds: f64,
}

impl TableSummary {
    /// Rows rejected by this run.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Source rows handled per second by this run.
    pub fn rows_per_sec(&self) -> f64 {
        let n = (self.copied + self.rejected_total()) as f64;
        if self.seconds > 0.0 {
            n / self.seconds
        } else {
            0.0
        }
    }

    /// Source rows = copied + rejected, over every run (`None` when the table
    /// was not read to its end).
    pub fn reconciled(&self) -> Option<bool> {
        self.source_rows
            .map(|n| n == self.total_copied + self.total_rejected)
    }
}

/// What a whole run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillSummary {
    /// One entry per table handled, in copy order.
    pub tables: Vec<TableSummary>,
    /// True when the shutdown signal stopped the run early.
    pub interrupted: bool,
    /// Serial tables' sequences, set past the highest id: (table, value).
    pub sequences: Vec<(&'static str, i64)>,
    /// Secondary indexes dropped for the copy and built again.
    pub indexes_rebuilt: Vec<String>,
    /// Wall-clock seconds spent building them.
    pub index_seconds: f64,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// The stage the run was forced to run in (`force`, outside
    /// `dualwrite`/`shadow`); `None` when it ran where it belongs.
    pub forced_stage: Option<Stage>,
    /// Tables and columns of the legacy file the schema does not describe,
    /// left behind as `ignore_unknown` acknowledged (and recorded in
    /// `cutover.acknowledged_drift`), with the counts this run saw.
    pub acknowledged_drift: Vec<Unknown>,
}

impl BackfillSummary {
    /// True when every table read to its end reconciles and none was left unread.
    pub fn reconciled(&self) -> bool {
        !self.interrupted && self.tables.iter().all(|t| t.reconciled() == Some(true))
    }
}
