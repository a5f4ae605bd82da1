//! What keeps a backfill from running: the stage (it belongs in
//! `dualwrite` and `shadow`) and a second run (an advisory lock held for
//! the length of a run).

use sqlx::{Connection, PgConnection};

use super::BackfillOptions;
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::settings::PgSettings;
use crate::stage::Stage;

/// The advisory-lock key that keeps a second backfill out ("cutover" in ASCII).
pub const LOCK_KEY: i64 = 0x0063_7574_6f76_6572;

/// Why the backfill must not run in `stage`; `None` in `dualwrite` and
/// `shadow`, the stages it belongs in.
///
/// Before them nothing copies the application's writes to PostgreSQL, so
/// every write made after a row was copied would be missing there; from
/// `live` on PostgreSQL holds the truth, and a legacy row it deleted since
/// would come back.
pub fn stage_refusal(stage: Stage) -> Option<String> {
    match stage {
        Stage::DualWrite | Stage::Shadow => None,
        Stage::Off => Some(
            "the stage is `off`: nothing copies the application's writes to PostgreSQL yet, \
             so PostgreSQL would miss the writes made meanwhile (during and after the copy)"
                .to_string(),
        ),
        Stage::Live | Stage::Rampdown | Stage::Complete => Some(format!(
            "the stage is `{stage}`: PostgreSQL is authoritative, so the backfill could \
             re-insert legacy rows deleted there since"
        )),
    }
}

/// Reads the persisted stage and refuses outside `dualwrite`/`shadow`
/// unless `force`; returns the stage when `force` overrode the refusal.
pub(super) async fn check_stage(opts: &BackfillOptions) -> Result<Option<Stage>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.postgres.connect_options())
        .await?;
    if let Err(e) = crate::pg::require_current(&pool).await {
        pool.close().await;
        return Err(e);
    }
    let state = crate::stage::get(&pool).await;
    pool.close().await;
    let stage = state?.stage;
    let Some(why) = stage_refusal(stage) else {
        return Ok(None);
    };
    if opts.force {
        tracing::warn!(stage = %stage, "backfill FORCED outside dualwrite/shadow: {why}");
        return Ok(Some(stage));
    }
    let fix = match stage {
        Stage::Off => "run `cutover stage set dualwrite` first, or pass --force",
        _ => "pass --force only if that is what you want",
    };
    Err(Error::InvalidArgument(format!(
        "the backfill runs in dualwrite or shadow; {why} — {fix}"
    )))
}

/// Holds the advisory lock for the length of a run, on a connection of its own.
pub(super) struct RunLock {
    conn: PgConnection,
}

impl RunLock {
    pub(super) async fn take(settings: &PgSettings) -> Result<Self> {
        let mut conn = PgConnection::connect_with(&settings.connect_options()).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            return Err(Error::Database {
                backend: Backend::Postgres,
                kind: DbErrorKind::Busy,
                message: format!(
                    "another backfill is running (advisory lock {LOCK_KEY} is held on {}); \
                     wait for it to finish",
                    settings.redacted()
                ),
            });
        }
        Ok(Self { conn })
    }

    pub(super) async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
