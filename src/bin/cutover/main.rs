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
mod metrics_flags;
mod schema;
mod stage;
mod status;
mod verify;
mod view;

/// Move a live application from SQLite to PostgreSQL with zero downtime and a way back.
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about)]
pub struct Cli {
    /// The legacy SQLite file (else SQLITE_PATH, else .env.migration).
    #[arg(long, global = true, value_name = "PATH", help_heading = "Connection")]
    pub sqlite: Option<PathBuf>,
    /// PostgreSQL URL, postgres://… (else DATABASE_URL or PG_HOST/PG_PORT/PG_USER/PG_PASSWORD/PG_DATABASE).
    #[arg(long, global = true, value_name = "URL", help_heading = "Connection")]
    pub postgres: Option<String>,
    /// Settings file read after the environment [default: .env.migration,
    /// when present]; a file named here must exist.
    #[arg(long, global = true, value_name = "PATH", help_heading = "Connection")]
    pub env_file: Option<PathBuf>,
    /// Log as JSON lines instead of text (RUST_LOG sets the filter).
    #[arg(long, global = true, help_heading = "Logging")]
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
    /// The whole migration at a glance: stage, processes, outboxes,
    /// backfill, last verify, rejects, what blocks the next stage.
    Status(status::Args),
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
        if let Some(f) = &self.env_file {
            if !f.exists() {
                anyhow::bail!(
                    "--env-file {}: no such file (without --env-file, {} is read when present)",
                    f.display(),
                    cutover::settings::ENV_FILE
                );
            }
        }
        Ok(cutover::Settings::resolve(&cutover::settings::Overrides {
            sqlite: self.sqlite.clone(),
            postgres: self.postgres.clone(),
            env_file: self.env_file.clone(),
        })?)
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
        Command::Status(a) => status::run(&cli, a).await,
        Command::Demo(a) => demo::run(&cli, a).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    view::init_logging(cli.log_json);
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
