//! Applies `migrations/postgres`: the plan's schema and the `cutover` schema.
//!
//! Only `cutover schema` (or an embedder that opts in with
//! `CutoverConfig::migrate`) changes the schema; everything else checks it
//! is current with [`require_current`] and names the command when it is not,
//! so the application's role needs no DDL rights.

use sqlx::PgPool;

use crate::error::{Backend, DbErrorKind, Error, Result};

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// What `migrate` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SchemaReport {
    /// Migrations applied by this run (version, description), in order.
    pub applied: Vec<(i64, String)>,
    /// The schema's version now.
    pub version: i64,
    /// Tables whose change-capture trigger this run created or replaced
    /// (generated from the declared schema).
    pub capture_installed: Vec<String>,
}

/// Where a database's schema stands against the migrations this build has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// No migration was ever applied.
    Missing,
    /// Some known migrations are not applied yet.
    Behind {
        /// Highest applied version.
        at: i64,
        /// Highest version this build knows.
        latest: i64,
    },
    /// Every known migration is applied.
    Current(i64),
}

fn latest() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

async fn applied(pool: &PgPool) -> Result<Option<Vec<i64>>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    let v: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(Some(v))
}

/// Reads where the schema stands (no change made).
pub async fn state(pool: &PgPool) -> Result<SchemaState> {
    let Some(done) = applied(pool).await? else {
        return Ok(SchemaState::Missing);
    };
    let at = done.iter().copied().max().unwrap_or(0);
    let behind = MIGRATOR.iter().any(|m| !done.contains(&m.version));
    Ok(if done.is_empty() {
        SchemaState::Missing
    } else if behind {
        SchemaState::Behind {
            at,
            latest: latest(),
        }
    } else {
        SchemaState::Current(at)
    })
}

/// Fails, naming `cutover schema`, unless every migration is applied and
/// every declared table has its capture trigger as the schema gives it.
pub async fn require_current(pool: &PgPool) -> Result<()> {
    match state(pool).await? {
        SchemaState::Current(_) => {
            let stale = super::capture::stale(pool, &crate::tables::TWITTER).await?;
            if stale.is_empty() {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "the change capture of {} is not installed as this build declares it: run `cutover schema`",
                    stale.join(", ")
                )))
            }
        }
        SchemaState::Missing => Err(Error::Config(
            "PostgreSQL has no cutover schema yet: run `cutover schema` first".into(),
        )),
        SchemaState::Behind { at, latest } => Err(Error::Config(format!(
            "PostgreSQL's schema is at version {at}, this build needs {latest}: run `cutover schema` to upgrade it"
        ))),
    }
}

/// Fails, naming the tables, unless each of `schema`'s tables has its
/// capture trigger as the schema gives it (`PgStore::install_capture`).
pub async fn require_capture(pool: &PgPool, schema: &crate::tables::Schema) -> Result<()> {
    let stale = super::capture::stale(pool, schema).await?;
    if stale.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the change capture of {} is not installed as the application's schema declares it: install it with PgStore::install_capture (or CutoverConfig::migrate)",
        stale.join(", ")
    )))
}

/// Creates or upgrades the schema; a second run changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<SchemaReport> {
    let before = applied(pool).await?.unwrap_or_default();
    MIGRATOR.run(pool).await.map_err(|e| Error::Database {
        backend: Backend::Postgres,
        kind: DbErrorKind::Other,
        message: format!("applying migrations/postgres: {e}"),
    })?;
    let triggers = super::capture::install(pool, &crate::tables::TWITTER).await?;
    Ok(SchemaReport {
        applied: MIGRATOR
            .iter()
            .filter(|m| !before.contains(&m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect(),
        version: latest(),
        capture_installed: triggers.iter().map(|t| t.to_string()).collect(),
    })
}
