//! `cutover schema`: create or upgrade the PostgreSQL schema.

use crate::{Cli, Outcome};

/// Flags of `cutover schema`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Applies `migrations/postgres`; a second run changes nothing.
pub async fn run(cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let pg = cutover::PgStore::connect(settings.require_postgres()?).await?;
    cutover::pg::migrate(pg.pool()).await?;
    tracing::info!(target = %settings.require_postgres()?, "schema is up to date");
    Ok(Outcome::Ok)
}
