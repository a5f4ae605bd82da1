//! `cutover export`.

use crate::{Cli, Outcome};

/// Flags of `cutover export`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover export`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover export is not available in this build yet")
}
