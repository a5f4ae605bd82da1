//! `cutover generate`: a legacy database for tests, benches and the demo.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cutover::generate::{self, GenerateOptions};

use crate::{Cli, Outcome};

/// Flags of `cutover generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of users.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Number of tweets.
    #[arg(long, default_value_t = 20_000)]
    pub tweets: u64,
    /// Fraction (0..=1) of rows that carry one messy legacy value.
    #[arg(long, default_value_t = 0.0)]
    pub dirty: f64,
    /// Random seed; the same seed writes the same rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The SQLite file to create.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cutover generate`.
pub async fn run(_cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    if !(0.0..=1.0).contains(&args.dirty) {
        anyhow::bail!("--dirty {} is outside 0..=1", args.dirty);
    }
    if args.out.exists() {
        if !args.force {
            anyhow::bail!(
                "{} already exists; pass --force to replace it",
                args.out.display()
            );
        }
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = args.out.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    let options = GenerateOptions {
        users: args.users,
        tweets: args.tweets,
        dirty: args.dirty,
        seed: args.seed,
    };
    let out = args.out.clone();
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || generate::generate(&out, &options)).await??;
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(Outcome::Ok);
    }
    println!(
        "wrote {} in {:.2} s (seed {})",
        args.out.display(),
        elapsed.as_secs_f64(),
        args.seed
    );
    for (table, n) in &report.rows {
        println!("  {table:<22} {n:>10} rows");
    }
    if !report.planted.is_empty() {
        println!("messy values planted:");
        for p in &report.planted {
            println!(
                "  {:<22} {:<22} {:<22} {:>8}",
                p.table,
                p.column,
                p.kind.as_str(),
                p.count
            );
        }
    }
    Ok(Outcome::Ok)
}
