//! The migration stage: what it means, where it is kept, how it changes.
//!
//! The stage is one row in `cutover.state`. Changing it is one transaction
//! that bumps a version, appends to `cutover.stage_history` and sends
//! `NOTIFY cutover_stage`. The change itself is made under SQLite's write
//! lock by `DualStore::set_stage` (see `authority`): every process's writes
//! follow at their next write; reads follow when the watcher hears the
//! NOTIFY (or polls). A move forward into `live` (or
//! past it) is refused unless the backfill is complete, the outbox is empty
//! and the last verify was clean; `force` overrides and is recorded.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::{Backend, Error, Result};

/// The six stages of docs/DESIGN.md §2, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// SQLite only.
    Off,
    /// SQLite authoritative; writes copied to PostgreSQL.
    DualWrite,
    /// As `DualWrite`, and reads compared against PostgreSQL.
    Shadow,
    /// PostgreSQL authoritative; writes copied to SQLite; reads compared against SQLite.
    Live,
    /// PostgreSQL authoritative; writes still copied to SQLite.
    Rampdown,
    /// PostgreSQL only.
    Complete,
}

impl Stage {
    /// All stages in order.
    pub const ALL: [Stage; 6] = [
        Stage::Off,
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::Rampdown,
        Stage::Complete,
    ];

    /// The name used by the CLI and stored in `cutover.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Off => "off",
            Stage::DualWrite => "dualwrite",
            Stage::Shadow => "shadow",
            Stage::Live => "live",
            Stage::Rampdown => "rampdown",
            Stage::Complete => "complete",
        }
    }

    /// Parses a stage name.
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Position in the order (also the value of the `cutover_stage` gauge).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The side that holds the truth: its write comes first and its result is the caller's.
    pub fn authoritative(self) -> Backend {
        if self >= Stage::Live {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The side reads are served from (always the authoritative one).
    pub fn read_side(self) -> Backend {
        self.authoritative()
    }

    /// The side writes are copied to, if any.
    pub fn secondary(self) -> Option<Backend> {
        match self {
            Stage::Off | Stage::Complete => None,
            Stage::DualWrite | Stage::Shadow => Some(Backend::Postgres),
            Stage::Live | Stage::Rampdown => Some(Backend::Sqlite),
        }
    }

    /// Whether reads are also run on the other side and compared.
    pub fn shadows_reads(self) -> bool {
        matches!(self, Stage::Shadow | Stage::Live)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Stage> {
        Stage::parse(s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown stage {s:?}; expected one of off, dualwrite, shadow, live, rampdown, complete"
            ))
        })
    }
}

/// The stage row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageState {
    /// Current stage.
    pub stage: Stage,
    /// Bumped on every change; watchers compare it.
    pub version: i64,
    /// Who made the last change.
    pub changed_by: Option<String>,
    /// Whether the last change overrode the gates.
    pub forced: bool,
}

/// The NOTIFY channel stage changes are announced on.
pub const CHANNEL: &str = "cutover_stage";

/// Reads the current stage.
pub async fn get(pool: &PgPool) -> Result<StageState> {
    let row: (String, i64, Option<String>, bool) =
        sqlx::query_as("SELECT stage, version, changed_by, forced FROM cutover.state")
            .fetch_one(pool)
            .await?;
    Ok(StageState {
        stage: Stage::parse(&row.0).ok_or_else(|| {
            Error::InvalidArgument(format!("cutover.state holds an unknown stage {:?}", row.0))
        })?,
        version: row.1,
        changed_by: row.2,
        forced: row.3,
    })
}

/// What the gates into `live` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoLive {
    /// Every table's backfill checkpoint is complete.
    pub backfill_complete: bool,
    /// Entries waiting in the outboxes (both sides, where known).
    pub outbox_pending: i64,
    /// The last `cutover verify` found no divergence (None: never ran).
    pub last_verify_clean: Option<bool>,
    /// The last verify covered every table.
    pub last_verify_all_tables: bool,
    /// The last verify started after dual writes began (the latest move
    /// out of `off`): a SQLite write made before could have escaped it.
    pub last_verify_after_dual_writes: bool,
}

impl GoLive {
    /// Reasons the move is refused; empty when it may go ahead.
    pub fn blockers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.backfill_complete {
            v.push("the backfill is not complete (run `cutover backfill`)".to_string());
        }
        if self.outbox_pending > 0 {
            v.push(format!(
                "{} outbox entries are still pending (wait for the replayer)",
                self.outbox_pending
            ));
        }
        match self.last_verify_clean {
            None => v.push("no verify has run (run `cutover verify`)".to_string()),
            Some(false) => v.push(
                "the last verify found divergence (run `cutover verify --repair`)".to_string(),
            ),
            Some(true) => {
                if !self.last_verify_all_tables {
                    v.push(
                        "the last verify covered only some tables (run `cutover verify` without --tables)"
                            .to_string(),
                    );
                }
                if !self.last_verify_after_dual_writes {
                    v.push(
                        "the last verify started before dual writes began: SQLite writes made before could have escaped it (run `cutover verify` again)"
                            .to_string(),
                    );
                }
            }
        }
        v
    }
}

/// Checks the gates into `live` on PostgreSQL for the Twitter
/// application's tables; `extra_pending` adds outbox entries kept elsewhere
/// (the SQLite side's outbox).
pub async fn go_live_check(pool: &PgPool, extra_pending: i64) -> Result<GoLive> {
    go_live_check_for(pool, extra_pending, &crate::tables::TWITTER).await
}

/// [`go_live_check`] for `schema`'s tables: the backfill is complete when
/// each of them finished.
pub async fn go_live_check_for(
    pool: &PgPool,
    extra_pending: i64,
    schema: &crate::tables::Schema,
) -> Result<GoLive> {
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name).collect();
    let tables = names.len() as i64;
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cutover.checkpoints WHERE completed AND table_name = ANY($1)",
    )
    .bind(&names)
    .fetch_one(pool)
    .await?;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.outbox")
        .fetch_one(pool)
        .await?;
    let last: Option<(bool, bool, bool)> = sqlx::query_as(
        "SELECT v.clean, v.all_tables,
                v.started_at > coalesce((SELECT max(changed_at) FROM cutover.stage_history
                                         WHERE from_stage = 'off' AND to_stage <> 'off'), '-infinity')
         FROM cutover.verify_runs v WHERE v.finished_at IS NOT NULL ORDER BY v.id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(GoLive {
        backfill_complete: done >= tables,
        outbox_pending: pending + extra_pending,
        last_verify_clean: last.map(|l| l.0),
        last_verify_all_tables: last.is_some_and(|l| l.1),
        last_verify_after_dual_writes: last.is_some_and(|l| l.2),
    })
}

/// A requested stage change.
#[derive(Debug, Clone)]
pub struct Change {
    /// Target stage.
    pub to: Stage,
    /// Override the gates into `live`.
    pub force: bool,
    /// Who asks (recorded).
    pub by: String,
    /// Outbox entries kept outside PostgreSQL (SQLite side), counted by the gate.
    pub extra_pending: i64,
}

/// Changes the stage, checking the gates (for the Twitter application's
/// tables); returns the new state. Rolling back to any earlier stage is
/// always allowed.
pub async fn set(pool: &PgPool, change: &Change) -> Result<StageState> {
    set_for(pool, change, &crate::tables::TWITTER).await
}

/// [`set`], the gates judged on `schema`'s tables.
pub async fn set_for(
    pool: &PgPool,
    change: &Change,
    schema: &crate::tables::Schema,
) -> Result<StageState> {
    let mut tx = pool.begin().await?;
    // Serialises concurrent changes.
    let (cur, version): (String, i64) =
        sqlx::query_as("SELECT stage, version FROM cutover.state FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let from = Stage::parse(&cur).unwrap_or(Stage::Off);
    let crosses_into_live = from < Stage::Live && change.to >= Stage::Live;
    let mut forced = false;
    // One stage at a time forward; `complete` is left only on purpose (the
    // SQLite file no longer receives writes there: going back needs one
    // that has every write, e.g. from `cutover export`).
    let mut order = Vec::new();
    if change.to.index() > from.index() + 1 {
        order.push(format!(
            "{from} → {} skips {}",
            change.to,
            Stage::ALL[from.index() + 1..change.to.index()]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if from == Stage::Complete && change.to != Stage::Complete {
        order.push(format!(
            "leaving complete for {}: the SQLite file has had no writes since complete began; go back only with a file that has every write (`cutover export`)",
            change.to
        ));
    }
    if !order.is_empty() {
        if change.force {
            forced = true;
            tracing::warn!(from = %from, to = %change.to, reasons = ?order, "stage change FORCED out of order");
        } else {
            return Err(Error::InvalidArgument(format!(
                "refusing to move from {from} to {}: {}; pass --force to override",
                change.to,
                order.join("; ")
            )));
        }
    }
    if crosses_into_live {
        let check = go_live_check_for(pool, change.extra_pending, schema).await?;
        let blockers = check.blockers();
        if !blockers.is_empty() {
            if change.force {
                forced = true;
                tracing::warn!(from = %from, to = %change.to, blockers = ?blockers, "stage change FORCED past the go-live gates");
            } else {
                return Err(Error::InvalidArgument(format!(
                    "refusing to move from {from} to {}: {}; pass --force to override",
                    change.to,
                    blockers.join("; ")
                )));
            }
        }
    }
    let new_version = version + 1;
    sqlx::query(
        "UPDATE cutover.state SET stage = $1, version = $2, changed_at = now(), changed_by = $3, forced = $4",
    )
    .bind(change.to.as_str())
    .bind(new_version)
    .bind(&change.by)
    .bind(forced)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO cutover.stage_history (from_stage, to_stage, forced, changed_by) VALUES ($1, $2, $3, $4)")
        .bind(from.as_str())
        .bind(change.to.as_str())
        .bind(forced)
        .bind(&change.by)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{}:{new_version}", change.to))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(from = %from, to = %change.to, forced, by = %change.by, "stage changed");
    Ok(StageState {
        stage: change.to,
        version: new_version,
        changed_by: Some(change.by.clone()),
        forced,
    })
}

/// Announces an authority change that is not a stage change (a fallback's
/// return) on the stage channel, so every process reads it at once.
pub async fn announce(pool: &PgPool, a: &crate::authority::Authority) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{}:epoch {}", a.stage, a.epoch))
        .execute(pool)
        .await?;
    Ok(())
}

/// Calls `on_tick` on every notification of the stage channel and every
/// `poll` (the fallback when LISTEN is not possible), until `shutdown`.
pub async fn watch_channel<F, Fut>(
    pool: PgPool,
    poll: Duration,
    mut on_tick: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    loop {
        if listener.is_none() {
            if let Ok(mut l) = sqlx::postgres::PgListener::connect_with(&pool).await {
                if l.listen(CHANNEL).await.is_ok() {
                    listener = Some(l);
                }
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.try_recv().await.map(|_| ()).map_err(|_| ()),
                None => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            r = notified => {
                if r.is_err() {
                    listener = None;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
        on_tick().await;
    }
}

/// Records the pause writers saw on the latest stage change.
pub async fn record_pause(pool: &PgPool, pause: std::time::Duration) -> Result<i64> {
    let id: i64 = sqlx::query_scalar("UPDATE cutover.stage_history SET pause_ms = $1 WHERE id = (SELECT max(id) FROM cutover.stage_history) RETURNING id")
        .bind(pause.as_secs_f64() * 1000.0)
        .fetch_one(pool)
        .await?;
    Ok(id)
}

/// The last recorded stage change's pause: (history id, milliseconds).
pub async fn last_pause<'c, E>(exec: E) -> Result<Option<(i64, f64)>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    Ok(sqlx::query_as(
        "SELECT id, pause_ms FROM cutover.stage_history WHERE pause_ms IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(exec)
    .await?)
}
