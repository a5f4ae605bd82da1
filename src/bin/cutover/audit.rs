//! `cutover audit`: what the legacy data holds and what the backfill would
//! copy or reject under each policy. Reads only.
//!
//! Exit 1 when the file holds tables or columns the schema does not describe
//! that `--ignore-unknown` does not name (the backfill would refuse it);
//! predicted rejects are information, not a failed check (exit 0).

use cutover::audit;

use crate::{Cli, Outcome};

/// Flags of `cutover audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Tables and columns of the legacy file the schema does not describe,
    /// acknowledged as left behind (`notes,users.nickname`), as given to
    /// `cutover backfill`; any other makes the exit code 1.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub ignore_unknown: Vec<String>,
}

/// Runs `cutover audit`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let path = settings.require_sqlite()?.to_path_buf();
    let report = tokio::task::spawn_blocking(move || audit::audit(&path)).await??;
    let left = report.unacknowledged(&args.ignore_unknown)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    if left.is_empty() {
        return Ok(Outcome::Ok);
    }
    // On stderr in both forms: stdout stays the report (one JSON object with --json).
    eprintln!(
        "audit: the backfill would refuse: {}",
        audit::refusal(&left)
    );
    Ok(Outcome::CheckFailed)
}
