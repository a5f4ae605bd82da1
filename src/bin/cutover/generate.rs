//! `cutover generate`.

use crate::{Cli, Outcome};

/// Flags of `cutover generate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover generate`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover generate is not available in this build yet")
}
