//! `cutover stage [get | set STAGE [--force]]`.

use crate::{Cli, Outcome};
use cutover::stage::{self, Stage};

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
    cutover::pg::require_current(pg.pool()).await?;
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
            // A flip is made under SQLite's write lock, like an embedding
            // process's: the CLI needs the file too.
            let path = settings.sqlite_path.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "changing the stage takes SQLite's write lock: pass --sqlite PATH or set SQLITE_PATH"
                )
            })?;
            if !path.exists() {
                anyhow::bail!("the SQLite file {} does not exist", path.display());
            }
            let sqlite = cutover::SqliteStore::open(path).await?;
            let pool = pg.pool().clone();
            let dual =
                cutover::dual::DualStore::open(sqlite, pg, cutover::dual::DualConfig::default())
                    .await?;
            let by = format!(
                "cli ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            );
            let pause = dual.set_stage(*to, *force, &by).await?;
            let st = stage::get(&pool).await?;
            if st.forced {
                eprintln!("warning: the go-live gates were overridden with --force");
            }
            eprintln!(
                "writers paused {:.1} ms; authority epoch {}",
                pause.as_secs_f64() * 1000.0,
                dual.routing().epoch
            );
            println!("{}", st.stage);
        }
    }
    Ok(Outcome::Ok)
}
