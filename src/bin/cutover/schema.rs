//! `cutover schema`: create or upgrade the PostgreSQL schema.

use crate::{Cli, Outcome};

/// Flags of `cutover schema`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Applies `migrations/postgres`; a second run changes nothing. Says what
/// it applied on stdout.
pub async fn run(cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let target = settings.require_postgres()?;
    let pg = cutover::PgStore::connect(target).await?;
    let report = cutover::pg::migrate(pg.pool()).await?;
    if !report.capture_installed.is_empty() {
        println!(
            "change capture installed on {}",
            report.capture_installed.join(", ")
        );
    }
    if report.applied.is_empty() {
        println!(
            "schema of {} already at version {}: nothing to apply",
            target.redacted(),
            report.version
        );
    } else {
        for (v, d) in &report.applied {
            println!("applied {v:04} {d}");
        }
        println!(
            "schema of {} now at version {} ({} migrations applied)",
            target.redacted(),
            report.version,
            report.applied.len()
        );
    }
    Ok(Outcome::Ok)
}
