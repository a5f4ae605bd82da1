//! `cutover stage [get | set STAGE [--force]]`.

use crate::{Cli, Outcome};
use cutover::stage::{self, Change, Stage};

/// Flags of `cutover stage`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Print the current stage (the default).
    Get {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change the stage for every running process.
    Set {
        /// off, dualwrite, shadow, live, rampdown or complete.
        stage: Stage,
        /// Move into live even if the backfill, outbox or verify gates fail.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `cutover stage`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let pg = cutover::PgStore::connect(settings.require_postgres()?).await?;
    cutover::pg::migrate(pg.pool()).await?;
    match args.action.as_ref().unwrap_or(&Action::Get { json: false }) {
        Action::Get { json } => {
            let st = stage::get(pg.pool()).await?;
            if *json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!("{}", st.stage);
            }
        }
        Action::Set { stage: to, force } => {
            // The SQLite side's outbox counts against the go-live gate too.
            let extra_pending = match &settings.sqlite_path {
                Some(p) if p.exists() => {
                    let conn = rusqlite::Connection::open_with_flags(
                        p,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )?;
                    cutover::outbox::sqlite_pending(&conn)?
                }
                _ => 0,
            };
            let by = format!(
                "cli ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            );
            let st = stage::set(
                pg.pool(),
                &Change {
                    to: *to,
                    force: *force,
                    by,
                    extra_pending,
                },
            )
            .await?;
            if st.forced {
                eprintln!("warning: the go-live gates were overridden with --force");
            }
            println!("{}", st.stage);
        }
    }
    Ok(Outcome::Ok)
}
