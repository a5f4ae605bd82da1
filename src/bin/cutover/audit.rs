//! `cutover audit`.

use crate::{Cli, Outcome};

/// Flags of `cutover audit`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover audit`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover audit is not available in this build yet")
}
