//! `cutover demo`.

use crate::{Cli, Outcome};

/// Flags of `cutover demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover demo`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover demo is not available in this build yet")
}
