//! `cutover audit`: what the legacy data holds and what the backfill would
//! copy or reject under each policy. Reads only.

use cutover::audit;

use crate::{Cli, Outcome};

/// Flags of `cutover audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cutover audit`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let path = settings.require_sqlite()?.to_path_buf();
    let report = tokio::task::spawn_blocking(move || audit::audit(&path)).await??;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(Outcome::Ok)
}
