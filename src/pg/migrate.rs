//! Applies `migrations/postgres`: the plan's schema and the `cutover` schema.

use sqlx::PgPool;

use crate::error::{Backend, DbErrorKind, Error, Result};

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Creates or upgrades the schema; a second run changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| Error::Database {
        backend: Backend::Postgres,
        kind: DbErrorKind::Other,
        message: format!("applying migrations/postgres: {e}"),
    })
}
