//! `cutover status`: the whole migration at a glance, read from both
//! databases without changing either.
//!
//! Stage and epoch (PostgreSQL's authority row and SQLite's), the processes
//! that heartbeat into `cutover.processes` (see [`Heartbeat`]), both outbox
//! depths, backfill progress per table with an ETA, the last verify, rejects
//! by reason, and what blocks the next stage. [`Status::attention`] lists
//! what an operator must look at; it is empty when all is well.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::Result;
use crate::stage::Stage;

/// A process is listed as live when its last heartbeat is this recent.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// A table's backfill counts as running while its last batch is this recent.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// A process that heartbeats after the authority moved this long ago and
/// still runs the old epoch is behind (a follower re-reads within a poll).
pub const FOLLOW_GRACE: Duration = Duration::from_secs(3);

/// One process that embeds the dual store.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i32,
    /// cutover version it runs.
    pub version: String,
    /// Who it says it is (`CutoverConfig::actor`).
    pub actor: Option<String>,
    /// Stage it runs.
    pub stage: String,
    /// Authority epoch it follows.
    pub epoch: i64,
    /// Whether it has fallen back to SQLite.
    pub fallback: bool,
    /// Its view of both outboxes.
    pub outbox_pending: Option<i64>,
    /// Seconds since its last heartbeat.
    pub seen_secs_ago: f64,
    /// Whether it stopped cleanly (`Cutover::shutdown`).
    pub stopped: bool,
}

/// Backfill progress of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableProgress {
    /// Table.
    pub table: String,
    /// Rows in the legacy file now (None: not readable).
    pub source_rows: Option<i64>,
    /// Rows copied so far (all runs).
    pub copied: i64,
    /// Rows rejected so far (all runs).
    pub rejected: i64,
    /// The checkpoint says the table is done.
    pub completed: bool,
    /// A batch of it committed within the last minute (a backfill runs).
    pub running: bool,
    /// Rows per second over the runs so far.
    pub rows_per_sec: Option<f64>,
    /// Seconds to go at that rate.
    pub eta_secs: Option<f64>,
}

/// The last `cutover verify`.
#[derive(Debug, Clone, Serialize)]
pub struct LastVerify {
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Seconds since.
    pub age_secs: f64,
    /// No divergence found.
    pub clean: bool,
    /// It covered every table.
    pub all_tables: bool,
    /// Divergent rows found.
    pub divergent_rows: i64,
}

/// Everything `cutover status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Stage recorded on PostgreSQL.
    pub stage: String,
    /// Authority epoch on PostgreSQL.
    pub epoch: i64,
    /// Whether the authority says the store fell back to SQLite.
    pub fallback: bool,
    /// Epoch recorded in the SQLite file (None: not readable or not yet written).
    pub sqlite_epoch: Option<i64>,
    /// The SQLite file's authority row says PostgreSQL was unreachable and
    /// SQLite stands in (the row every write reads; PostgreSQL's says so
    /// only once the return starts).
    pub sqlite_fallback: Option<bool>,
    /// Seconds since the authority last moved (a flip, a fallback, a return).
    pub authority_age_secs: f64,
    /// Pause of the last stage change, milliseconds.
    pub last_flip_pause_ms: Option<f64>,
    /// Processes seen within `LIVE_WITHIN`, and those that went quiet
    /// without stopping (within the last 10 minutes).
    pub processes: Vec<Process>,
    /// Entries in PostgreSQL's outbox.
    pub outbox_postgres: i64,
    /// Entries in SQLite's outbox (None: not readable).
    pub outbox_sqlite: Option<i64>,
    /// Backfill progress per table.
    pub backfill: Vec<TableProgress>,
    /// The last verify (None: never ran).
    pub last_verify: Option<LastVerify>,
    /// Rejected legacy rows or values by reason.
    pub rejects: Vec<(String, i64)>,
    /// The stage after this one (None at `complete`).
    pub next_stage: Option<String>,
    /// What blocks the move to the next stage (empty: nothing).
    pub blockers: Vec<String>,
    /// What needs the operator's attention (empty: healthy).
    pub attention: Vec<String>,
}

impl Status {
    /// Nothing needs attention.
    pub fn healthy(&self) -> bool {
        self.attention.is_empty()
    }
}

/// What the status reads from the legacy file: its authority epoch, its
/// outbox depth and each table's row count.
type SqliteSide = (
    Option<crate::authority::Authority>,
    Option<i64>,
    Vec<(String, Option<i64>)>,
);

fn sqlite_side(path: &Path) -> SqliteSide {
    use rusqlite::OpenFlags;
    let Ok(c) = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return (None, None, Vec::new());
    };
    let _ = c.busy_timeout(Duration::from_secs(2));
    let epoch = crate::authority::sqlite_read(&c).ok().flatten();
    let outbox = crate::outbox::sqlite_pending(&c).ok();
    let counts = crate::tables::ALL
        .iter()
        .map(|t| {
            let n = c
                .query_row(&format!("SELECT count(*) FROM \"{}\"", t.name), [], |r| {
                    r.get(0)
                })
                .ok();
            (t.name.to_string(), n)
        })
        .collect();
    (epoch, outbox, counts)
}

/// Reads the status; `sqlite` is the legacy file when known.
pub async fn read(pool: &PgPool, sqlite: Option<&Path>) -> Result<Status> {
    crate::pg::require_current(pool).await?;
    let auth = crate::authority::pg_read(pool).await?;
    let (sqlite_auth, outbox_sqlite, counts) = match sqlite {
        Some(p) if p.exists() => {
            let p = p.to_path_buf();
            tokio::task::spawn_blocking(move || sqlite_side(&p))
                .await
                .unwrap_or((None, None, Vec::new()))
        }
        _ => (None, None, Vec::new()),
    };

    #[allow(clippy::type_complexity)]
    let procs: Vec<(
        String,
        i32,
        String,
        Option<String>,
        String,
        i64,
        bool,
        Option<i64>,
        f64,
        bool,
    )> = sqlx::query_as(
        "SELECT host, pid, version, actor, stage, epoch, fallback, outbox_pending,
                    extract(epoch FROM now() - seen_at)::float8, stopped_at IS NOT NULL
             FROM cutover.processes
             WHERE seen_at > now() - interval '10 minutes'
             ORDER BY host, pid",
    )
    .fetch_all(pool)
    .await?;
    let processes: Vec<Process> = procs
        .into_iter()
        .filter(|p| !p.9 || p.8 < LIVE_WITHIN.as_secs_f64())
        .map(|p| Process {
            host: p.0,
            pid: p.1,
            version: p.2,
            actor: p.3,
            stage: p.4,
            epoch: p.5,
            fallback: p.6,
            outbox_pending: p.7,
            seen_secs_ago: p.8,
            stopped: p.9,
        })
        .collect();

    let authority_age_secs: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - changed_at)::float8 FROM cutover.authority",
    )
    .fetch_one(pool)
    .await?;
    let last_flip_pause_ms: Option<f64> = sqlx::query_scalar(
        "SELECT pause_ms FROM cutover.stage_history WHERE pause_ms IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .flatten();
    let outbox_postgres: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.outbox")
        .fetch_one(pool)
        .await?;

    let checkpoints: Vec<(String, i64, i64, bool, f64, f64)> = sqlx::query_as(
        "SELECT table_name, rows_copied, rows_rejected, completed,
                extract(epoch FROM updated_at - started_at)::float8,
                extract(epoch FROM now() - updated_at)::float8
         FROM cutover.checkpoints",
    )
    .fetch_all(pool)
    .await?;
    let backfill = crate::tables::ALL
        .iter()
        .map(|t| {
            let cp = checkpoints.iter().find(|c| c.0 == t.name);
            let source_rows = counts.iter().find(|c| c.0 == t.name).and_then(|c| c.1);
            let (copied, rejected, completed, secs, idle) =
                cp.map_or((0, 0, false, 0.0, f64::MAX), |c| (c.1, c.2, c.3, c.4, c.5));
            let running = !completed && idle < STALLED_AFTER.as_secs_f64();
            let rate =
                (secs > 0.0 && copied + rejected > 0).then(|| (copied + rejected) as f64 / secs);
            // An ETA only while batches keep coming: a stopped run has none.
            let eta_secs = match (completed, running, source_rows, rate) {
                (true, ..) => Some(0.0),
                (false, true, Some(n), Some(r)) => {
                    Some(((n - copied - rejected).max(0)) as f64 / r)
                }
                _ => None,
            };
            TableProgress {
                table: t.name.to_string(),
                source_rows,
                copied,
                rejected,
                completed,
                running,
                rows_per_sec: rate,
                eta_secs,
            }
        })
        .collect::<Vec<_>>();

    let last_verify: Option<LastVerify> = sqlx::query_as::<_, (DateTime<Utc>, f64, bool, bool, i64)>(
        "SELECT finished_at, extract(epoch FROM now() - finished_at)::float8, clean, all_tables, divergent_rows
         FROM cutover.verify_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|r| LastVerify {
        finished_at: r.0,
        age_secs: r.1,
        clean: r.2,
        all_tables: r.3,
        divergent_rows: r.4,
    });

    let rejects: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM cutover.rejects GROUP BY reason ORDER BY reason",
    )
    .fetch_all(pool)
    .await?;

    let stage = auth.stage;
    let next = Stage::ALL
        .iter()
        .copied()
        .find(|s| s.index() == stage.index() + 1);
    let blockers = match next {
        Some(n) if stage < Stage::Live && n >= Stage::Live => {
            let mut b = crate::stage::go_live_check(pool, outbox_sqlite.unwrap_or(0))
                .await?
                .blockers();
            if outbox_sqlite.is_none() {
                b.push("SQLite's outbox was not read (pass --sqlite or set SQLITE_PATH): it must be empty too".into());
            }
            b
        }
        Some(Stage::Shadow) if backfill.iter().any(|t| !t.completed) => {
            vec!["the backfill is not complete (run `cutover backfill`); shadow reads would count every row not copied yet".into()]
        }
        _ => Vec::new(),
    };

    let mut attention = Vec::new();
    let sqlite_fallback = sqlite_auth.map(|a| a.fallback);
    if auth.fallback
        || sqlite_fallback == Some(true)
        || processes.iter().any(|p| !p.stopped && p.fallback)
    {
        attention.push("fallback active: PostgreSQL was unreachable and SQLite serves as authoritative; the store returns by itself once PostgreSQL answers".into());
    }
    if let Some(e) = sqlite_auth.map(|a| a.epoch).filter(|e| *e != auth.epoch) {
        attention.push(format!(
            "SQLite's authority epoch {e} differs from PostgreSQL's {}",
            auth.epoch
        ));
    }
    for p in &processes {
        let who = format!("process {} on {}", p.pid, p.host);
        if p.stopped {
            continue;
        }
        if p.seen_secs_ago > LIVE_WITHIN.as_secs_f64() {
            attention.push(format!(
                "{who} has not reported for {:.0} s (stopped without shutdown, or cannot reach PostgreSQL)",
                p.seen_secs_ago
            ));
        } else if p.epoch < auth.epoch
            && p.seen_secs_ago + FOLLOW_GRACE.as_secs_f64() < authority_age_secs
        {
            // It reported well after the authority moved, still on the old
            // epoch.
            attention.push(format!(
                "{who} runs epoch {} ({}), the authority is at {} ({stage})",
                p.epoch, p.stage, auth.epoch
            ));
        }
    }
    if let Some(v) = &last_verify {
        if !v.clean {
            attention.push(if v.divergent_rows > 0 {
                format!(
                    "the last verify found {} divergent rows (run `cutover verify --repair`)",
                    v.divergent_rows
                )
            } else {
                "the last verify was not clean: its counts do not add up (see `cutover verify`)"
                    .into()
            });
        }
    }
    Ok(Status {
        stage: stage.to_string(),
        epoch: auth.epoch,
        fallback: auth.fallback || sqlite_fallback == Some(true),
        sqlite_epoch: sqlite_auth.map(|a| a.epoch),
        sqlite_fallback,
        authority_age_secs,
        last_flip_pause_ms,
        processes,
        outbox_postgres,
        outbox_sqlite,
        backfill,
        last_verify,
        rejects,
        next_stage: next.map(|s| s.to_string()),
        blockers,
        attention,
    })
}

/// This host's name (for heartbeats).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One heartbeat's identity.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    id: String,
    host: String,
    actor: String,
}

impl Heartbeat {
    /// The identity of this process (host, pid, start time).
    pub fn new(actor: &str) -> Self {
        let host = host_name();
        let id = format!(
            "{host}/{}/{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        Self {
            id,
            host,
            actor: actor.to_string(),
        }
    }

    /// Records that this process runs `stage` at `epoch` now.
    pub async fn beat<'c, E>(
        &self,
        exec: E,
        stage: Stage,
        epoch: i64,
        fallback: bool,
        outbox_pending: Option<i64>,
    ) -> Result<()>
    where
        E: sqlx::Executor<'c, Database = sqlx::Postgres>,
    {
        sqlx::query(
            "INSERT INTO cutover.processes (id, host, pid, version, actor, stage, epoch, fallback, outbox_pending)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET stage = $6, epoch = $7, fallback = $8,
                 outbox_pending = $9, seen_at = now(), stopped_at = NULL",
        )
        .bind(&self.id)
        .bind(&self.host)
        .bind(std::process::id() as i32)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(&self.actor)
        .bind(stage.as_str())
        .bind(epoch)
        .bind(fallback)
        .bind(outbox_pending)
        .execute(exec)
        .await?;
        Ok(())
    }

    /// Records a clean stop.
    pub async fn stopped(&self, pool: &PgPool) -> Result<()> {
        sqlx::query(
            "UPDATE cutover.processes SET stopped_at = now(), seen_at = now() WHERE id = $1",
        )
        .bind(&self.id)
        .execute(pool)
        .await?;
        Ok(())
    }
}
