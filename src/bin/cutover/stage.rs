//! `cutover stage`.

use crate::{Cli, Outcome};

/// Flags of `cutover stage`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `cutover stage`.
pub async fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("cutover stage is not available in this build yet")
}
