//! Backfill end to end against `psql \copy`, on `cutover generate` files.
//!
//! `DATABASE_URL=postgres://... cargo bench --bench backfill`, with
//! `BENCH_TWEETS` (default 100000; BENCHMARKS.md quotes 1000000),
//! `BENCH_RUNS` (3; 0 measures only the application load), `BENCH_DIRTY`
//! (0.02), `BENCH_LOAD_SECS` (20; 0 skips the load phase). Needs `psql`.
//!
//! Each run starts from the plan's schema with every index in place and:
//! - runs `cutover backfill` (this build's binary, as a child process) on
//!   the clean file: wall time end to end, every index present and valid
//!   when it reports done, and its peak RSS;
//! - the same on the dirty file (`BENCH_DIRTY` of its rows hold a messy
//!   value): source rows per second, rejects included;
//! - `psql \copy` of the very rows the backfill wrote (exported as CSV once)
//!   into the same schema, indexes in place, table by table in the same
//!   order.
//!
//! Then the load phase, on the clean file: the demo's scraper and funnel
//! writes (8 workers: a profile, five tweets, a funnel step, each call
//! timed) for `BENCH_LOAD_SECS` in `off`, the same in `dualwrite`, then in
//! `dualwrite` while a backfill runs (`BENCH_LOAD_BACKFILL_ARGS` adds
//! options to that backfill, e.g. `--busy-share 3`); the p99 of the calls
//! in each. Medians of the runs; ratios from the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover::settings::PgSettings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Ratios to two decimals, for the per-run lists.
fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|r| (r * 100.0).round() / 100.0).collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// One timed call of the load.
#[derive(Clone)]
struct Call {
    /// 0 a profile, 1 five tweets, 2 a funnel step.
    kind: usize,
    /// When it ended.
    at: chrono::DateTime<chrono::Utc>,
    ms: f64,
}

/// The calls' times in ms, whatever their kind.
fn ms(calls: &[Call]) -> Vec<f64> {
    calls.iter().map(|c| c.ms).collect()
}

/// With `BENCH_TIMELINE=1`: the calls' p99 and maximum second by second,
/// to lay beside the backfill's log (`BENCH_CLI_LOG`).
fn timeline(calls: &[Call]) {
    let mut by_second: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for c in calls {
        by_second.entry(c.at.timestamp()).or_default().push(c.ms);
    }
    for (second, mut v) in by_second {
        let at = chrono::DateTime::from_timestamp(second, 0).unwrap();
        println!(
            "    {} {:>5} calls, p99 {:>6.1}, max {:>6.1} ms, over 20 ms {}",
            at.format("%H:%M:%S"),
            v.len(),
            percentile(&mut v, 0.99),
            v.last().copied().unwrap_or(0.0),
            v.iter().filter(|m| **m > 20.0).count()
        );
    }
}

/// p50, p90, p99, p99.9 and the maximum of every call, then the p99 of
/// each kind of call.
fn spread(calls: &[Call]) -> String {
    let mut all = ms(calls);
    let mut out = format!(
        "p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ms",
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.9),
        percentile(&mut all, 0.99),
        percentile(&mut all, 0.999),
        all.last().copied().unwrap_or(0.0)
    );
    for (kind, name) in ["profile", "five tweets", "funnel step"].iter().enumerate() {
        let mut v: Vec<f64> = calls
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.ms)
            .collect();
        out.push_str(&format!("; {name} p99 {:.1}", percentile(&mut v, 0.99)));
    }
    out
}

/// This build's `cutover`, or `BENCH_CUTOVER_BIN` (another build, to
/// compare two backfills under the same application load).
fn bin() -> String {
    std::env::var("BENCH_CUTOVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cutover").into())
}

/// Runs the CLI; returns (wall seconds, peak RSS in MB) and panics on failure.
fn cli(sqlite: &Path, url: &str, args: &[&str]) -> (f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["--env-file", "/dev/null"])
        .env(
            "RUST_LOG",
            if std::env::var_os("BENCH_CLI_LOG").is_some() {
                std::env::var("BENCH_CLI_RUST_LOG").unwrap_or("info".into())
            } else {
                "warn".into()
            },
        )
        .arg("--sqlite")
        .arg(sqlite)
        .args(["--postgres", url])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the cutover binary");
    // VmHWM is the process's peak RSS so far: the last reading before it
    // exits is its peak.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let out = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "cutover {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // With `BENCH_CLI_LOG=path`, the runs' logs are kept there.
    if let Some(log) = std::env::var_os("BENCH_CLI_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "== cutover {args:?}").unwrap();
        f.write_all(&out.stderr).unwrap();
    }
    (started.elapsed().as_secs_f64(), peak_kb as f64 / 1024.0)
}

fn psql(url: &str, cmd: &str) -> f64 {
    let started = Instant::now();
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", cmd])
        .output()
        .expect("psql on PATH");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn table_names() -> Vec<&'static str> {
    cutover::tables::ALL.iter().map(|t| t.name).collect()
}

/// Empties the plan's tables and the backfill's bookkeeping; VACUUM so
/// each run starts alike.
async fn reset(pg: &PgSettings) {
    let mut c = PgConnection::connect_with(&pg.connect_options())
        .await
        .unwrap();
    exec(
        &mut c,
        &format!("TRUNCATE {} CASCADE", table_names().join(", ")),
    )
    .await;
    exec(
        &mut c,
        "DELETE FROM cutover.checkpoints; DELETE FROM cutover.rejects; DELETE FROM cutover.outbox",
    )
    .await;
    exec(&mut c, "VACUUM ANALYZE").await;
    c.close().await.ok();
}

/// Secondary indexes of the plan's tables: (total, valid).
async fn indexes(pg: &PgSettings) -> (i64, i64) {
    let mut c = PgConnection::connect_with(&pg.connect_options())
        .await
        .unwrap();
    let r: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE x.indisvalid AND x.indisready)
         FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND t.relname = ANY($1)",
    )
    .bind(table_names())
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.ok();
    r
}

async fn source_rows(sqlite: &Path) -> u64 {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    table_names()
        .iter()
        .map(|t| {
            c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as u64
        })
        .sum()
}

/// Application writes on `sqlite` for `secs` (8 workers, one `Cutover`):
/// the scraper's and the funnel's writes of the demo (a profile, a batch
/// of five tweets, a funnel step), each call timed; returns the latencies
/// (ms) of the calls.
async fn load(
    sqlite: PathBuf,
    pg: PgSettings,
    secs: f64,
    stop: Arc<AtomicBool>,
    first_worker: usize,
) -> Vec<Call> {
    use cutover::{NewTweet, ScrapedProfile, Store};
    let c = Arc::new(
        cutover::Cutover::start(cutover::CutoverConfig::new(&sqlite, pg))
            .await
            .unwrap(),
    );
    let lat = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for w in first_worker..first_worker + 8 {
        let (c, lat, stop) = (c.clone(), lat.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let store = c.store();
            let mut rng = StdRng::seed_from_u64(w as u64 * 7919);
            let mut i = 0u64;
            let timed = |kind: usize, started: Instant| {
                lat.lock().unwrap().push(Call {
                    kind,
                    at: chrono::Utc::now(),
                    ms: started.elapsed().as_secs_f64() * 1000.0,
                })
            };
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                i += 1;
                let user = format!("bench-w{w}-u{}", rng.random_range(0..8));
                let now = chrono::Utc::now();
                let t = Instant::now();
                store
                    .upsert_profile(&ScrapedProfile {
                        id: user.clone(),
                        username: format!("@{user}"),
                        profile_data: Some(
                            serde_json::json!({"followers": i, "bio": "building things"}),
                        ),
                        profile_picture_url: None,
                        scraped_at: now,
                    })
                    .await
                    .unwrap();
                timed(0, t);
                let tweets: Vec<NewTweet> = (0..5)
                    .map(|k| NewTweet {
                        id: format!("{user}-t{i}-{k}"),
                        text: format!(
                            "shipping the release today #rust @friend https://t.co/{i}{k}"
                        ),
                        created_at: now,
                        url: None,
                        is_reply: Some(false),
                        metadata: Some(serde_json::json!({"likes": k})),
                    })
                    .collect();
                let t = Instant::now();
                store.save_tweets(&user, &tweets).await.unwrap();
                timed(1, t);
                let t = Instant::now();
                store
                    .complete_funnel_command(
                        &user,
                        &format!("/step{}", i % 5),
                        &serde_json::json!({"answer": i}),
                    )
                    .await
                    .unwrap();
                timed(2, t);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    Arc::try_unwrap(c).ok().unwrap().shutdown().await;
    let v = lat.lock().unwrap().clone();
    v
}

fn main() {
    let url = std::env::var("DATABASE_URL")
        .expect("set DATABASE_URL to a PostgreSQL server the bench may create a database on");
    let tweets: u64 = env("BENCH_TWEETS", 100_000);
    let runs: usize = env("BENCH_RUNS", 3);
    let dirty: f64 = env("BENCH_DIRTY", 0.02);
    let load_secs: f64 = env("BENCH_LOAD_SECS", 20.0);
    let users = (tweets / 100).max(100);
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.db");
    let messy = dir.path().join("dirty.db");
    eprintln!("generating {tweets} tweets, clean and {dirty} dirty…");
    for (path, d) in [(&clean, 0.0), (&messy, dirty)] {
        cutover::generate::generate(
            path,
            &cutover::generate::GenerateOptions {
                users,
                tweets,
                dirty: d,
                seed: 7,
            },
        )
        .unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = PgSettings::from_url(&url).unwrap();
    let name = format!("cutover_bench_{}", std::process::id());
    let pg = rt.block_on(async {
        let mut c = PgConnection::connect_with(&admin.connect_options())
            .await
            .unwrap();
        exec(
            &mut c,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
        exec(
            &mut c,
            &format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"),
        )
        .await;
        admin.with_database(&name)
    });
    let db_url = cutover::settings::url_with_database(&url, &name);
    cli(&clean, &db_url, &["schema"]);
    cli(&clean, &db_url, &["stage", "set", "dualwrite"]);
    let (clean_rows, dirty_rows) =
        rt.block_on(async { (source_rows(&clean).await, source_rows(&messy).await) });
    let all_indexes = rt.block_on(indexes(&pg));

    let csv_dir = dir.path().join("csv");
    std::fs::create_dir(&csv_dir).unwrap();
    let (mut ours, mut theirs, mut ours_dirty, mut rss) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        rt.block_on(reset(&pg));
        let (wall, mb) = cli(&clean, &db_url, &["backfill"]);
        assert_eq!(
            rt.block_on(indexes(&pg)),
            all_indexes,
            "every index present and valid when the backfill is done"
        );
        ours.push(clean_rows as f64 / wall);
        rss.push(mb);
        if run == 0 {
            for t in table_names() {
                psql(
                    &db_url,
                    &format!("\\copy {t} TO '{}' CSV", csv_dir.join(t).display()),
                );
            }
        }
        rt.block_on(reset(&pg));
        let (dwall, _) = cli(&messy, &db_url, &["backfill"]);
        ours_dirty.push(dirty_rows as f64 / dwall);

        rt.block_on(reset(&pg));
        let mut took = 0.0;
        for t in table_names() {
            took += psql(
                &db_url,
                &format!("\\copy {t} FROM '{}' CSV", csv_dir.join(t).display()),
            );
        }
        theirs.push(clean_rows as f64 / took);
        eprintln!(
            "run {run}: backfill {:.0} rows/s ({wall:.1} s, peak RSS {mb:.0} MB), dirty {:.0} rows/s, psql \\copy {:.0} rows/s ({took:.1} s): {:.2}x",
            ours[run], ours_dirty[run], theirs[run], ours[run] / theirs[run]
        );
    }
    // BENCH_RUNS=0 measures only the application's writes.
    if runs > 0 {
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
        let dirty_ratios: Vec<f64> = ours_dirty.iter().zip(&ours).map(|(a, b)| a / b).collect();
        println!("{tweets} tweets ({clean_rows} source rows over the ten tables), every index in place at the start and present at the end, median of {runs} runs");
        println!(
            "  cutover backfill, clean:   {:>9.0} rows/s  {:.2}x psql \\copy (per run {:?})",
            median(ours.clone()),
            median(ratios.clone()),
            rounded(&ratios)
        );
        println!(
            "  cutover backfill, {:.0} % dirty: {:>9.0} rows/s  {:.2}x the clean rate (per run {:?})",
            dirty * 100.0,
            median(ours_dirty),
            median(dirty_ratios.clone()),
            rounded(&dirty_ratios)
        );
        println!(
            "  psql \\copy:                {:>9.0} rows/s",
            median(theirs)
        );
        println!(
            "  backfill peak RSS:         {:>9.0} MB (max of runs {:.0})",
            median(rss.clone()),
            rss.iter().cloned().fold(0.0, f64::max)
        );
    }
    if load_secs > 0.0 {
        rt.block_on(async {
            reset(&pg).await;
            let work = dir.path().join("load.db");
            std::fs::copy(&clean, &work).unwrap();
            cli(&work, &db_url, &["stage", "set", "off"]);
            let stop = Arc::new(AtomicBool::new(false));
            let off = load(work.clone(), pg.clone(), load_secs, stop.clone(), 0).await;
            cli(&work, &db_url, &["stage", "set", "dualwrite"]);
            let dual = load(work.clone(), pg.clone(), load_secs, stop.clone(), 16).await;
            let running = {
                let (w, u) = (work.clone(), db_url.clone());
                tokio::task::spawn_blocking(move || {
                    let extra = std::env::var("BENCH_LOAD_BACKFILL_ARGS").unwrap_or_default();
                    let mut args = vec!["backfill"];
                    args.extend(extra.split_whitespace());
                    cli(&w, &u, &args)
                })
            };
            let started = Instant::now();
            let (stop2, w2, p2) = (stop.clone(), work.clone(), pg.clone());
            let loaded = tokio::spawn(async move { load(w2, p2, 3600.0, stop2, 8).await });
            let (bwall, _) = running.await.unwrap();
            stop.store(true, Ordering::Relaxed);
            let during = loaded.await.unwrap();
            let (p_off, p_dual, p_during) = (
                percentile(&mut ms(&off), 0.99),
                percentile(&mut ms(&dual), 0.99),
                percentile(&mut ms(&during), 0.99),
            );
            for (phase, calls) in [("off", &off), ("dualwrite", &dual), ("during the backfill", &during)] {
                println!("  {phase}: {}", spread(calls));
            }
            if env("BENCH_TIMELINE", 0) == 1 {
                timeline(&during);
            }
            println!(
                "  application writes, p99: {p_off:.1} ms in off ({} calls); in dualwrite {p_dual:.1} ms without a backfill ({} calls), {p_during:.1} ms during the backfill ({} calls, {:.1} s): {:.2}x off, {:.2}x dualwrite alone",
                off.len(),
                dual.len(),
                during.len(),
                started.elapsed().as_secs_f64().max(bwall),
                p_during / p_off,
                p_during / p_dual
            );
        });
    }
    rt.block_on(async {
        let mut c = PgConnection::connect_with(&admin.connect_options())
            .await
            .unwrap();
        exec(
            &mut c,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
    });
}
