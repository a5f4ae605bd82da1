//! `cutover demo`: the whole cutover under simulated live traffic.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{Cli, Outcome};
use cutover::demo::{self, DemoOptions, DemoReport};

/// Flags of `cutover demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of simulated traffic across all stages.
    #[arg(long, default_value_t = 40)]
    duration: u64,
    /// Users in the generated legacy database.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// Tweets in the generated legacy database.
    #[arg(long, default_value_t = 20_000)]
    tweets: u64,
    /// Fraction of generated rows holding a messy legacy value.
    #[arg(long, default_value_t = 0.01)]
    dirty: f64,
    /// Concurrent application workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Serve Prometheus metrics here while the demo runs.
    #[arg(long, value_name = "ADDR", default_value = cutover::metrics::DEFAULT_ADDR)]
    metrics_addr: SocketAddr,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Seed of the generator and the traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn print_report(r: &DemoReport) {
    println!(
        "cutover demo: {}",
        if r.ok {
            "OK — every guarantee held"
        } else {
            "FAILED"
        }
    );
    for b in &r.broken {
        println!("  broken: {b}");
    }
    println!("  stages          {}", r.stages.join(" → "));
    println!(
        "  calls           {} made, {} failed, {} cut by an outage during COMMIT (outcome unknown)",
        r.ops, r.failed_ops, r.outcome_unknown_ops
    );
    for f in &r.failures {
        println!("    failed: {f}");
    }
    println!("  latency         (per stage, one call = one app round of 1-12 queries)");
    for l in &r.latency {
        println!(
            "    {:<10} {:>7} calls  p50 {:>7.2} ms  p99 {:>7.2} ms",
            l.stage, l.ops, l.p50_ms, l.p99_ms
        );
    }
    println!(
        "  flips           max pause {:.1} ms over {} flips",
        r.max_flip_pause_ms,
        r.flip_pauses_ms.len()
    );
    for (t, p) in r.flip_transitions.iter().zip(&r.flip_pauses_ms) {
        println!("    {t:<24} {p:>7.1} ms");
    }
    println!(
        "  shadow reads    {} compared, {} real mismatches, {} lag resolved, {} still changing at the deadline, {} on rejected legacy rows",
        r.shadow_comparisons,
        r.shadow_mismatches_real,
        r.shadow_mismatches_lag_resolved,
        r.shadow_mismatches_unsettled,
        r.shadow_mismatches_rejected
    );
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "  outages         {}, {}, {} (behind their parent's copy, in dualwrite) and {} through the outbox, {} replayed",
        plural(u64::from(r.postgres_restarts), "PostgreSQL restart", "PostgreSQL restarts"),
        plural(r.fallbacks, "fallback", "fallbacks"),
        plural(r.secondary_writes_deferred, "copy deferred", "copies deferred"),
        plural(r.secondary_write_failures, "failed copy", "failed copies"),
        r.outbox_replayed
    );
    println!(
        "  backfill        {} copied, {} rejected (kept in cutover.rejects), reconciled: {}",
        r.backfill_copied, r.rejected_rows, r.backfill_reconciled
    );
    println!("  outbox at end   {}", r.outbox_pending_end);
    println!(
        "  final verify    {} divergent rows",
        r.verify_divergent_rows
    );
    println!("  wall time       {:.1} s", r.seconds);
}

/// Runs `cutover demo`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let _metrics = cutover::metrics::install_exporter(args.metrics_addr)?;
    eprintln!("metrics on http://{}/metrics", args.metrics_addr);
    let opts = DemoOptions {
        duration: Duration::from_secs(args.duration),
        users: args.users,
        tweets: args.tweets,
        dirty: args.dirty,
        postgres: settings.postgres.clone(),
        metrics_addr: Some(args.metrics_addr),
        workers: args.workers,
        live_view: (crate::view::drawn() && !args.json).then(|| crate::view::multi().clone()),
        seed: args.seed,
    };
    match &opts.postgres {
        Some(pg) => eprintln!(
            "PostgreSQL: {} (a database of the demo's own is created there and dropped at the end; restarts are skipped)",
            pg.redacted()
        ),
        None => eprintln!("PostgreSQL: a throwaway server from the local binaries"),
    }
    let report = demo::run(opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
