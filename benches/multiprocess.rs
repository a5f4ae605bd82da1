//! Several processes on one SQLite file and one PostgreSQL database
//! (docs/DESIGN.md §3): write throughput in `live` against bare SQLite, and the flip
//! pause while processes write.
//!
//! `cargo bench --bench multiprocess` (PostgreSQL from `DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`; the bench creates
//! a database of its own there and drops it at the end).
//!
//! - **live 3x8**: three child processes, each a `Cutover` with eight
//!   writers, in stage `live` (PostgreSQL authoritative, SQLite written under
//!   its write lock in the same order).
//! - **bare sqlite 3x8**: the same load, each process a plain `SqliteStore`,
//!   all three on one file seeded like the live one (the legacy application:
//!   the ceiling docs/DESIGN.md §3 promises not to go below).
//! - **bare sqlite 3x8, one file per process**: the same again with a copy of
//!   the file for each process, so no lock is shared between processes (an
//!   upper bound, not the legacy application).
//! - **bare postgresql 3x8**: the same load, each process a plain `PgStore`
//!   on a database of its own (what PostgreSQL alone allows this load).
//! - **flip pause**: the parent flips `shadow ⇄ live` while three live
//!   children write; each pause is what `DualStore::set_stage` returns.
//!
//! The write mix, the same everywhere: 6 in 8 calls upsert a profile among
//! `USERS` keys, 1 in 8 upserts one of `HOT_USERS` hot profiles, 1 in 8
//! upserts a new user and redeems the hot referral code for them (two
//! writes, the code's `usage_count` a hot row). Every acknowledged call
//! counts as one write.
//!
//! Environment: `MP_BENCH_SECS` (seconds per throughput run, 5),
//! `MP_BENCH_RUNS` (runs per configuration, 3), `MP_BENCH_FLIPS` (20),
//! `MP_BENCH_SEPARATE=0` skips the one-file-per-process runs,
//! `MP_BENCH_PROCESSES` (3) and `MP_BENCH_WRITERS` (8) change the load.
//! Arguments (cargo passes `--bench`) are ignored.
//!
//! `RUST_LOG` (e.g. `cutover=info`) logs to stderr, each flip's breakdown
//! included.
//!
//! Children are this binary again with `MP_BENCH_CHILD` set: they start,
//! print `{"ready": id}`, wait for the go file, write until the stop file
//! appears and print their count as one JSON line on stdout.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::settings::PgSettings;
use cutover::stage::Stage;
use cutover::{Cutover, CutoverConfig};
use cutover::{PgStore, ScrapedProfile, SqliteStore, Store};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

const USERS: usize = 2000;
const HOT_USERS: usize = 3;
const HOT_CODE: &str = "HOT";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Child processes (`MP_BENCH_PROCESSES`, 3); children read it too.
fn process_count() -> usize {
    env_or("MP_BENCH_PROCESSES", 3usize).max(1)
}

/// Writers per process (`MP_BENCH_WRITERS`, 8).
fn writer_count() -> usize {
    env_or("MP_BENCH_WRITERS", 8usize).max(1)
}

fn profile(id: &str, n: u64, by: &str) -> ScrapedProfile {
    ScrapedProfile {
        id: id.to_string(),
        username: format!("@{id}"),
        profile_data: Some(json!({
            "followers": n,
            "bio": "benchmarking 🚀",
            "by": by,
            "tags": ["rust", "sqlite", "postgres"],
        })),
        profile_picture_url: Some(format!("https://pbs.example/{id}.jpg")),
        scraped_at: cutover::model::now(),
    }
}

/// The rows every run starts from: `USERS` users, the hot users, and the
/// hot referral code with its owner.
async fn seed(store: &dyn Store) -> cutover::Result<()> {
    store.upsert_profile(&profile("owner", 0, "seed")).await?;
    store.create_referral_code("owner", HOT_CODE).await?;
    for u in 0..HOT_USERS {
        store
            .upsert_profile(&profile(&format!("hot{u}"), 0, "seed"))
            .await?;
    }
    for u in 0..USERS {
        store
            .upsert_profile(&profile(&format!("user{u}"), 0, "seed"))
            .await?;
    }
    Ok(())
}

/// One call of the mix; returns the writes it acknowledged.
async fn one_call(store: &dyn Store, tag: &str, w: usize, i: u64) -> cutover::Result<u64> {
    match (i as usize + w) % 8 {
        6 => {
            let user = format!("hot{}", i as usize % HOT_USERS);
            store.upsert_profile(&profile(&user, i, tag)).await?;
            Ok(1)
        }
        7 => {
            let referred = format!("ref-{tag}-{w}-{i}");
            store.upsert_profile(&profile(&referred, i, tag)).await?;
            store.redeem_referral(HOT_CODE, &referred).await?;
            Ok(2)
        }
        _ => {
            let user = format!("user{}", rand::random_range(0..USERS));
            store.upsert_profile(&profile(&user, i, tag)).await?;
            Ok(1)
        }
    }
}

// ----- the child -------------------------------------------------------------

/// What a child is told through its environment.
struct ChildArgs {
    id: String,
    mode: String,
    sqlite: PathBuf,
    admin_url: String,
    database: String,
    go: PathBuf,
    stop: PathBuf,
    tag: String,
}

impl ChildArgs {
    fn from_env(id: String) -> anyhow::Result<Self> {
        let var = |n: &str| std::env::var(n).with_context(|| format!("{n} not set"));
        Ok(Self {
            id,
            mode: var("MP_BENCH_MODE")?,
            sqlite: var("MP_BENCH_SQLITE")?.into(),
            admin_url: var("MP_BENCH_ADMIN_URL")?,
            database: var("MP_BENCH_DB")?,
            go: var("MP_BENCH_GO")?.into(),
            stop: var("MP_BENCH_STOP")?.into(),
            tag: var("MP_BENCH_TAG")?,
        })
    }
}

async fn wait_for(path: &Path) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn child(args: ChildArgs) -> anyhow::Result<()> {
    let mut cutover = None;
    let store: Arc<dyn Store> = match args.mode.as_str() {
        "live" => {
            let settings = PgSettings::from_url(&args.admin_url)?.with_database(&args.database);
            let c = Cutover::start(CutoverConfig::new(&args.sqlite, settings)).await?;
            let store = Arc::new(c.store());
            if c.stage() != Stage::Live && c.stage() != Stage::Shadow {
                bail!("child {}: stage {} at start", args.id, c.stage());
            }
            cutover = Some(c);
            store
        }
        "sqlite" => Arc::new(SqliteStore::open(&args.sqlite).await?),
        "pg" => {
            let settings = PgSettings::from_url(&args.admin_url)?
                .with_database(&format!("{}_bare", args.database));
            Arc::new(PgStore::connect(&settings).await?)
        }
        m => bail!("unknown MP_BENCH_MODE {m}"),
    };
    println!("{}", json!({ "ready": args.id }));
    wait_for(&args.go).await;

    let started = Instant::now();
    let stopping = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..writer_count() {
        let (store, stopping, writes, errors, first_errors) = (
            store.clone(),
            stopping.clone(),
            writes.clone(),
            errors.clone(),
            first_errors.clone(),
        );
        let tag = format!("{}-{}", args.tag, args.id);
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                i += 1;
                match one_call(store.as_ref(), &tag, w, i).await {
                    Ok(n) => {
                        writes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_errors.lock().unwrap();
                        if f.len() < 3 {
                            f.push(e.to_string());
                        }
                    }
                }
            }
        }));
    }
    wait_for(&args.stop).await;
    stopping.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    // The calls in flight at the stop count, and so does their time.
    let secs = started.elapsed().as_secs_f64();
    let first_errors = first_errors.lock().unwrap().clone();
    println!(
        "{}",
        json!({
            "writes": writes.load(Ordering::Relaxed),
            "secs": secs,
            "errors": errors.load(Ordering::Relaxed),
            "first_errors": first_errors,
        })
    );
    if let Some(c) = cutover {
        c.shutdown().await;
    }
    Ok(())
}

// ----- the parent ------------------------------------------------------------

/// What one child reported.
#[derive(Debug, Default)]
struct Report {
    writes: u64,
    secs: f64,
    errors: u64,
    first_errors: Vec<String>,
}

/// A batch of children, started and ready, until they report.
struct Children {
    processes: Vec<std::process::Child>,
    lines: mpsc::Receiver<(usize, Value)>,
    go: PathBuf,
    stop: PathBuf,
}

/// How a batch of children runs.
struct Load<'a> {
    mode: &'a str,
    /// One file for all, or one per child.
    files: Vec<PathBuf>,
    admin_url: &'a str,
    database: &'a str,
    dir: &'a Path,
    tag: String,
}

impl Children {
    fn spawn(load: &Load) -> anyhow::Result<Children> {
        let go = load.dir.join(format!("go-{}", load.tag));
        let stop = load.dir.join(format!("stop-{}", load.tag));
        let exe = std::env::current_exe()?;
        let (tx, lines) = mpsc::channel();
        let mut processes = Vec::new();
        for id in 0..process_count() {
            let file = &load.files[id % load.files.len()];
            let mut p = Command::new(&exe)
                .env("MP_BENCH_CHILD", id.to_string())
                .env("MP_BENCH_MODE", load.mode)
                .env("MP_BENCH_SQLITE", file)
                .env("MP_BENCH_ADMIN_URL", load.admin_url)
                .env("MP_BENCH_DB", load.database)
                .env("MP_BENCH_GO", &go)
                .env("MP_BENCH_STOP", &stop)
                .env("MP_BENCH_TAG", &load.tag)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("start a child")?;
            let out = p.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            let _ = tx.send((id, v));
                        }
                        Err(_) => eprintln!("child {id}: {line}"),
                    }
                }
            });
            processes.push(p);
        }
        let mut children = Children {
            processes,
            lines,
            go,
            stop,
        };
        for _ in 0..process_count() {
            children.next_line(Duration::from_secs(120), "ready")?;
        }
        Ok(children)
    }

    fn next_line(&mut self, timeout: Duration, what: &str) -> anyhow::Result<(usize, Value)> {
        let (id, v) = self
            .lines
            .recv_timeout(timeout)
            .with_context(|| format!("a child did not report {what}"))?;
        if v.get(what).is_none() {
            bail!("child {id} said {v} while {what} was awaited");
        }
        Ok((id, v))
    }

    fn go(&self) -> anyhow::Result<()> {
        std::fs::write(&self.go, b"")?;
        Ok(())
    }

    fn stop(mut self) -> anyhow::Result<Vec<Report>> {
        std::fs::write(&self.stop, b"")?;
        let mut reports = Vec::new();
        for _ in 0..process_count() {
            let (_, v) = self.next_line(Duration::from_secs(60), "writes")?;
            reports.push(Report {
                writes: v["writes"].as_u64().unwrap_or(0),
                secs: v["secs"].as_f64().unwrap_or(0.0),
                errors: v["errors"].as_u64().unwrap_or(0),
                first_errors: v["first_errors"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for p in &mut self.processes {
            loop {
                if let Some(status) = p.try_wait()? {
                    if !status.success() {
                        bail!("a child exited with {status}");
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("a child did not exit");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(reports)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &mut self.processes {
            if matches!(p.try_wait(), Ok(None)) {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }
}

/// Writes per second over a batch: each child's count over its own window.
fn rate(reports: &[Report]) -> f64 {
    reports
        .iter()
        .map(|r| r.writes as f64 / r.secs.max(1e-9))
        .sum()
}

fn errors(reports: &[Report]) -> (u64, Vec<String>) {
    let n = reports.iter().map(|r| r.errors).sum();
    let mut first: Vec<String> = reports
        .iter()
        .flat_map(|r| r.first_errors.iter().cloned())
        .collect();
    first.dedup();
    first.truncate(3);
    (n, first)
}

/// One throughput run: children start, write for `secs`, report.
async fn throughput(load: &Load<'_>, secs: f64) -> anyhow::Result<(f64, u64, Vec<String>)> {
    let children = Children::spawn(load)?;
    children.go()?;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let reports = tokio::task::block_in_place(|| children.stop())?;
    let (n, first) = errors(&reports);
    Ok((rate(&reports), n, first))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn runs_text(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A throughput configuration's runs: rates and errors.
#[derive(Default)]
struct Series {
    rates: Vec<f64>,
    errors: u64,
    first_errors: Vec<String>,
}

impl Series {
    fn add(&mut self, (rate, errors, first): (f64, u64, Vec<String>)) {
        eprintln!("  {rate:.0} writes/s, {errors} failed calls");
        self.rates.push(rate);
        self.errors += errors;
        for e in first {
            if self.first_errors.len() < 3 && !self.first_errors.contains(&e) {
                self.first_errors.push(e);
            }
        }
    }

    fn line(&self, name: &str) -> String {
        let mut s = format!(
            "{name}: median {:.0} writes/s (runs: {})",
            median(&self.rates),
            runs_text(&self.rates)
        );
        if self.errors > 0 {
            s.push_str(&format!(
                "; {} failed calls, e.g. {:?}",
                self.errors, self.first_errors
            ));
        }
        s
    }
}

async fn bench(admin_url: &str, database: &str, dir: &Path) -> anyhow::Result<()> {
    let secs: f64 = env_or("MP_BENCH_SECS", 5.0);
    let runs: usize = env_or("MP_BENCH_RUNS", 3usize).max(1);
    let flips: usize = env_or("MP_BENCH_FLIPS", 20usize);
    let separate = std::env::var("MP_BENCH_SEPARATE").map_or(true, |v| v != "0");
    let admin = PgSettings::from_url(admin_url)?;
    let (np, nw) = (process_count(), writer_count());

    // Live: one file and the database, seeded in dualwrite, then live.
    let live_path = dir.join("live.db");
    let sqlite = SqliteStore::open(&live_path).await?;
    let pg = PgStore::connect(&admin.with_database(database)).await?;
    cutover::pg::migrate(pg.pool()).await?;
    let d = DualStore::forced(sqlite, pg, Stage::DualWrite, DualConfig::default()).await?;
    seed(&d).await?;
    d.switch(Stage::Shadow).await?;
    d.switch(Stage::Live).await?;

    // Bare SQLite: a file seeded the same way, and one more per process.
    let bare_path = dir.join("bare.db");
    seed(&SqliteStore::open(&bare_path).await?).await?;
    let mut separate_paths = Vec::new();
    if separate {
        for i in 0..process_count() {
            let p = dir.join(format!("bare{i}.db"));
            seed(&SqliteStore::open(&p).await?).await?;
            separate_paths.push(p);
        }
    }

    let load = |mode: &'static str, files: Vec<PathBuf>, tag: String| Load {
        mode,
        files,
        admin_url,
        database,
        dir,
        tag,
    };
    // Bare PostgreSQL: a database of its own, seeded the same way.
    let bare_pg = PgStore::connect(&admin.with_database(&format!("{database}_bare"))).await?;
    cutover::pg::migrate(bare_pg.pool()).await?;
    seed(&bare_pg).await?;
    drop(bare_pg);

    // The throughput configurations, run in turn within each round.
    let mut configs = vec![
        ("live", "live", vec![live_path.clone()], 'l'),
        ("bare sqlite", "sqlite", vec![bare_path.clone()], 's'),
        ("bare postgresql", "pg", vec![bare_path.clone()], 'g'),
    ];
    if separate {
        configs.push((
            "bare sqlite, a file per process",
            "sqlite",
            separate_paths.clone(),
            'p',
        ));
    }
    let mut series: Vec<Series> = configs.iter().map(|_| Series::default()).collect();
    for run in 0..runs {
        for ((name, mode, files, tag), s) in configs.iter().zip(series.iter_mut()) {
            eprintln!("run {}/{runs}: {name} {np}x{nw}", run + 1);
            s.add(throughput(&load(mode, files.clone(), format!("{tag}{run}")), secs).await?);
        }
    }
    let mut series = series.into_iter();
    let (live, bare, pg_only) = (
        series.next().unwrap_or_default(),
        series.next().unwrap_or_default(),
        series.next().unwrap_or_default(),
    );
    let apart = series.next().unwrap_or_default();

    // Flips while three live processes write.
    eprintln!("flips: {flips} flips shadow <-> live with {np}x{nw} writing");
    let children = Children::spawn(&load("live", vec![live_path.clone()], "f".into()))?;
    children.go()?;
    let mut pauses = Vec::new();
    let mut by_direction: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut stage = d.stage();
    for k in 0..flips {
        // 0.5 to 1 s between flips, spread evenly.
        let wait = 500 + (k as u64 * 263) % 500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let to = if stage == Stage::Live {
            Stage::Shadow
        } else {
            Stage::Live
        };
        let pause = d.set_stage(to, true, "bench").await?;
        pauses.push(pause);
        by_direction[usize::from(to == Stage::Shadow)].push(pause);
        stage = to;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = tokio::task::block_in_place(|| children.stop())?;
    let (flip_errors, flip_first) = errors(&reports);
    let flip_rate = rate(&reports);
    if d.stage() != Stage::Live {
        d.set_stage(Stage::Live, true, "bench").await?;
    }

    // The summary.
    println!();
    println!("multiprocess bench: {np} processes x {nw} writers, {runs} runs of {secs} s each");
    println!("{}", live.line(&format!("live {np}x{nw}")));
    println!(
        "{}",
        bare.line(&format!("bare sqlite {np}x{nw} (one shared file)"))
    );
    println!("{}", pg_only.line(&format!("bare postgresql {np}x{nw}")));
    if separate {
        println!(
            "{}",
            apart.line(&format!("bare sqlite {np}x{nw} (a file per process)"))
        );
    }
    println!(
        "ratio live/sqlite: {:.2}",
        median(&live.rates) / median(&bare.rates)
    );
    println!(
        "ratio live/postgresql: {:.2}",
        median(&live.rates) / median(&pg_only.rates)
    );
    if separate {
        println!(
            "ratio live/sqlite (a file per process): {:.2}",
            median(&live.rates) / median(&apart.rates)
        );
    }
    if pauses.is_empty() {
        println!("no flips (MP_BENCH_FLIPS=0)");
    } else {
        let mut sorted = pauses.clone();
        sorted.sort();
        println!(
            "flip pause over {} flips ({np} processes writing): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            sorted.len(),
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.99)),
            ms(*sorted.last().unwrap()),
        );
        for (name, v) in [
            ("shadow -> live", &by_direction[0]),
            ("live -> shadow", &by_direction[1]),
        ] {
            if !v.is_empty() {
                let mut s = v.clone();
                s.sort();
                println!(
                    "  {name}: {} flips, p50 {:.1} ms, max {:.1} ms",
                    s.len(),
                    ms(percentile(&s, 0.5)),
                    ms(*s.last().unwrap())
                );
            }
        }
        println!(
            "  all pauses ms: {}",
            pauses
                .iter()
                .map(|p| format!("{:.1}", ms(*p)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut line = format!("  writes during the flips: {flip_rate:.0} writes/s");
        if flip_errors > 0 {
            line.push_str(&format!(
                "; {flip_errors} failed calls, e.g. {flip_first:?}"
            ));
        } else {
            line.push_str(", no failed call");
        }
        println!("{line}");
    }
    Ok(())
}

async fn create_database(admin: &PgSettings, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect_with(&admin.connect_options())
        .await
        .context(
            "connect to DATABASE_URL (set it to a PostgreSQL the bench may create databases on)",
        )?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"
    )))
    .execute(&mut c)
    .await?;
    c.close().await.ok();
    Ok(())
}

async fn drop_database(admin: &PgSettings, name: &str) {
    if let Ok(mut c) = PgConnection::connect_with(&admin.connect_options()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> anyhow::Result<()> {
    // `RUST_LOG=cutover=info` shows each flip's breakdown (lock wait, drain).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Ok(id) = std::env::var("MP_BENCH_CHILD") {
        let args = ChildArgs::from_env(id)?;
        return runtime().block_on(child(args));
    }
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgSettings::from_url(&admin_url).context("DATABASE_URL")?;
    let database = format!("cutover_bench_mp_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let rt = runtime();
    rt.block_on(create_database(&admin, &database))?;
    rt.block_on(create_database(&admin, &format!("{database}_bare")))?;
    let result = rt.block_on(bench(&admin_url, &database, dir.path()));
    rt.block_on(drop_database(&admin, &database));
    rt.block_on(drop_database(&admin, &format!("{database}_bare")));
    result
}
