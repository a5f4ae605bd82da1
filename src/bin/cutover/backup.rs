//! `cutover backup`.

use crate::{Cli, Outcome};

/// Flags of `cutover backup`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover backup`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover backup is not available in this build yet")
}
