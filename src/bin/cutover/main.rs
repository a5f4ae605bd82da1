//! The `cutover` command: parse, validate, call the library, map errors to
//! exit codes. Each subcommand lives in a file of its own beside this one.
//!
//! Exit codes: 0 success; 1 a check found a problem (verify divergence,
//! reconciliation mismatch, demo guarantee broken); 2 an error (bad settings,
//! database unreachable, bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod backfill;
mod backup;
mod demo;
mod export;
mod generate;
mod schema;
mod stage;
mod verify;

/// Move a live application from SQLite to PostgreSQL with zero downtime and a way back.
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about)]
pub struct Cli {
    /// The legacy SQLite file (else SQLITE_PATH, else .env.migration).
    #[arg(long, global = true, value_name = "PATH")]
    pub sqlite: Option<PathBuf>,
    /// PostgreSQL URL (else DATABASE_URL or PG_HOST/PG_PORT/PG_USER/PG_PASSWORD/PG_DATABASE).
    #[arg(long, global = true, value_name = "URL")]
    pub postgres: Option<String>,
    /// Settings file read after the environment.
    #[arg(long, global = true, value_name = "PATH", default_value = cutover::settings::ENV_FILE)]
    pub env_file: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or upgrade the PostgreSQL schema (the plan's tables and the `cutover` schema).
    Schema(schema::Args),
    /// Report what the legacy data holds and which rows each policy would reject.
    Audit(audit::Args),
    /// Copy the legacy rows into PostgreSQL (resumable, idempotent).
    Backfill(backfill::Args),
    /// Compare both databases table by table; optionally repair.
    Verify(verify::Args),
    /// Show or change the migration stage.
    Stage(stage::Args),
    /// Write PostgreSQL's data to a new SQLite file in the legacy schema.
    Export(export::Args),
    /// Take a consistent online copy of the live SQLite file.
    Backup(backup::Args),
    /// Generate a legacy database for tests, benches and the demo.
    Generate(generate::Args),
    /// Run the whole cutover under simulated live traffic.
    Demo(demo::Args),
}

/// What a subcommand concluded, when it ran to the end.
pub enum Outcome {
    /// Everything held.
    Ok,
    /// A check failed (exit 1).
    CheckFailed,
}

impl Cli {
    /// Settings from flags, environment and the settings file.
    pub fn settings(&self) -> anyhow::Result<cutover::Settings> {
        Ok(cutover::Settings::resolve(&cutover::settings::Overrides {
            sqlite: self.sqlite.clone(),
            postgres: self.postgres.clone(),
            env_file: Some(self.env_file.clone()),
        })?)
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Schema(a) => schema::run(&cli, a).await,
        Command::Audit(a) => audit::run(&cli, a).await,
        Command::Backfill(a) => backfill::run(&cli, a).await,
        Command::Verify(a) => verify::run(&cli, a).await,
        Command::Stage(a) => stage::run(&cli, a).await,
        Command::Export(a) => export::run(&cli, a).await,
        Command::Backup(a) => backup::run(&cli, a).await,
        Command::Generate(a) => generate::run(&cli, a).await,
        Command::Demo(a) => demo::run(&cli, a).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
