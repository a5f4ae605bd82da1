//! `cutover status`: the whole migration at a glance. Exit 0 when healthy,
//! 1 when something needs attention (listed last), 2 on an error.

use crate::{Cli, Outcome};

/// Flags of `cutover status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the status as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// Runs `cutover status`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let pg = cutover::PgStore::connect(settings.require_postgres()?).await?;
    let st = cutover::status::read(pg.pool(), settings.sqlite_path.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&st)?);
    } else {
        println!(
            "stage {}  epoch {}{}{}",
            st.stage,
            st.epoch,
            if st.fallback {
                "  FALLBACK ACTIVE (SQLite authoritative)"
            } else {
                ""
            },
            st.sqlite_epoch
                .map(|e| format!("  (SQLite's copy: epoch {e})"))
                .unwrap_or_default()
        );
        if let Some(ms) = st.last_flip_pause_ms {
            println!(
                "authority moved {} ago; last stage change paused writers {ms:.1} ms",
                secs(st.authority_age_secs)
            );
        }
        println!(
            "outbox: postgres {}  sqlite {}",
            st.outbox_postgres,
            st.outbox_sqlite
                .map_or("? (SQLite file not given or not readable)".into(), |n| n
                    .to_string())
        );
        let live = st
            .processes
            .iter()
            .filter(|p| !p.stopped && p.seen_secs_ago <= cutover::status::LIVE_WITHIN.as_secs_f64())
            .count();
        println!("processes: {live} running");
        for p in &st.processes {
            println!(
                "  {}:{:<8} {:<10} epoch {:<4} {:<9} outbox {:>6}  seen {} ago  v{}{}",
                p.host,
                p.pid,
                p.stage,
                p.epoch,
                if p.fallback { "FALLBACK" } else { "" },
                p.outbox_pending.map_or("-".into(), |n| n.to_string()),
                secs(p.seen_secs_ago),
                p.version,
                if p.stopped { "  (stopped)" } else { "" }
            );
        }
        println!("backfill:");
        for t in &st.backfill {
            let state = if t.completed {
                "done".to_string()
            } else if t.copied + t.rejected == 0 {
                "not started".to_string()
            } else {
                let pct = t
                    .source_rows
                    .filter(|n| *n > 0)
                    .map(|n| (100.0 * (t.copied + t.rejected) as f64 / n as f64).min(100.0));
                match (pct, t.eta_secs, t.running) {
                    (Some(p), Some(eta), true) => format!("{p:.0} %  eta {}", secs(eta)),
                    (Some(p), _, false) => {
                        format!("{p:.0} %  not running (run `cutover backfill` to resume)")
                    }
                    (None, _, false) => {
                        "not running (run `cutover backfill` to resume)".to_string()
                    }
                    _ => "in progress".to_string(),
                }
            };
            println!(
                "  {:<22} source {:>9}  copied {:>9}  rejected {:>6}  {state}",
                t.table,
                t.source_rows.map_or("?".into(), |n| n.to_string()),
                t.copied,
                t.rejected
            );
        }
        match &st.last_verify {
            Some(v) => println!(
                "last verify: {} ago, {}{}",
                secs(v.age_secs),
                if v.clean {
                    "clean".to_string()
                } else {
                    format!("{} divergent rows", v.divergent_rows)
                },
                if v.all_tables {
                    ""
                } else {
                    ", some tables only"
                }
            ),
            None => println!("last verify: never"),
        }
        if st.rejects.is_empty() {
            println!("rejects: none");
        } else {
            let r: Vec<String> = st.rejects.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!("rejects: {}", r.join(" "));
        }
        match &st.next_stage {
            Some(n) if st.blockers.is_empty() => println!("next stage {n}: nothing blocks it"),
            Some(n) => {
                println!("next stage {n}: blocked by");
                for b in &st.blockers {
                    println!("  - {b}");
                }
            }
            None => println!("next stage: none (complete)"),
        }
        if st.attention.is_empty() {
            println!("healthy");
        } else {
            println!("needs attention:");
            for a in &st.attention {
                println!("  - {a}");
            }
        }
    }
    Ok(if st.healthy() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
