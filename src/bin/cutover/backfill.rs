//! `cutover backfill`.

use crate::{Cli, Outcome};

/// Flags of `cutover backfill`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover backfill`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover backfill is not available in this build yet")
}
