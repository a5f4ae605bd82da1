//! `cutover verify`.

use crate::{Cli, Outcome};

/// Flags of `cutover verify`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover verify`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover verify is not available in this build yet")
}
