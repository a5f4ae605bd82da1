//! Several application processes on one SQLite file and one PostgreSQL
//! database (docs/DESIGN.md §3): child processes of this test binary, each a
//! `Cutover` with several writers on a few hot keys whose history can be
//! checked afterwards, while the parent flips the stage shadow ⇄ live every
//! couple of seconds (and live → rampdown → complete at the end), and
//! PostgreSQL is restarted once in `live`. Every acknowledged write is then
//! looked for in both databases.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::settings::PgSettings;
use cutover::stage::Stage;
use cutover::{Backend, NewJob, PgStore, ScrapedProfile, SqliteStore, Store};
use cutover::{Cutover, CutoverConfig};
use serde_json::{json, Value};

const PROCESSES: usize = 3;
const WRITERS: usize = 6;
const HOT_USERS: usize = 3;
const JOBS: usize = 400;

fn profile(id: &str, data: Value) -> ScrapedProfile {
    ScrapedProfile {
        id: id.to_string(),
        username: format!("name_{id}"),
        profile_data: Some(data),
        profile_picture_url: None,
        scraped_at: cutover::model::now(),
    }
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// One line of a child's log of acknowledged writes.
fn log_line(log: &Mutex<std::fs::File>, v: Value) {
    let mut f = log.lock().unwrap();
    writeln!(f, "{v}").unwrap();
}

/// The child: a `Cutover` with `WRITERS` writers until the stop file
/// appears; then it waits for the `complete` stage (read by its watcher),
/// logs the authorities it followed and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by the soak tests as a child process"]
async fn soak_child() {
    let (Ok(path), Ok(url), Ok(id), Ok(log), Ok(stop)) = (
        std::env::var("SOAK_SQLITE"),
        std::env::var("SOAK_URL"),
        std::env::var("SOAK_ID"),
        std::env::var("SOAK_LOG"),
        std::env::var("SOAK_STOP"),
    ) else {
        return;
    };
    let mut settings = PgSettings::from_url(&url).unwrap();
    if std::env::var("SOAK_TINY_POOL").is_ok() {
        settings.pool.max_connections = 1;
        settings.pool.acquire_timeout = Duration::from_millis(100);
    } else {
        settings.pool.acquire_timeout = Duration::from_secs(2);
    }
    let mut config = CutoverConfig::new(&path, settings);
    config.stage_poll = Duration::from_millis(200);
    config.replay_interval = Duration::from_millis(100);
    config.dual = DualConfig {
        shadow_sample_rate: 0.2,
        ..DualConfig::default()
    };
    let cutover = Cutover::start(config).await.unwrap();
    let store = cutover.store();
    let log = Arc::new(Mutex::new(std::fs::File::create(&log).unwrap()));
    let stop_path = PathBuf::from(&stop);
    let stopping = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    eprintln!("soak child {id} ready");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (d, log, stopping, calls, id) = (
            store.clone(),
            log.clone(),
            stopping.clone(),
            calls.clone(),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                i += 1;
                calls.fetch_add(1, Ordering::Relaxed);
                let r: cutover::Result<Option<Value>> = match (i as usize + w) % 4 {
                    0 => {
                        let user = format!("hot{}", i as usize % HOT_USERS);
                        let cmd = format!("/p{id}w{w}n{i}");
                        d.complete_funnel_command(&user, &cmd, &json!({"n": i}))
                            .await
                            .map(|_| Some(json!({"funnel": [user, cmd]})))
                    }
                    1 => {
                        let referred = format!("ref-{id}-{w}-{i}");
                        match d.upsert_profile(&profile(&referred, json!({}))).await {
                            Err(e) => Err(e),
                            Ok(_) => d
                                .redeem_referral("HOT", &referred)
                                .await
                                .map(|r| Some(json!({"redeem": [r.id, referred]}))),
                        }
                    }
                    2 => match d.claim_next_job().await {
                        Ok(Some(job)) => {
                            let j = json!({"claim": job.job_id});
                            log_line(&log, j);
                            match d.get_job(job.job_id).await {
                                Ok(Some(full)) => {
                                    let c = &full.chunks[0];
                                    match d.start_chunk(c.chunk_id).await {
                                        Err(e) => Err(e),
                                        Ok(_) => d
                                            .complete_chunk(
                                                c.chunk_id,
                                                &json!({"by": id, "null": null}),
                                            )
                                            .await
                                            .map(|_| Some(json!({"chunk": c.chunk_id}))),
                                    }
                                }
                                Ok(None) => Ok(None),
                                Err(e) => Err(e),
                            }
                        }
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    },
                    _ => {
                        let user = format!("hot{}", i as usize % HOT_USERS);
                        d.upsert_profile(&profile(&user, json!({"by": id, "w": w, "n": i})))
                            .await
                            .map(|_| None)
                    }
                };
                match r {
                    Ok(Some(mut v)) => {
                        let r = d.routing();
                        v["at"] = json!([r.epoch, r.stage.as_str(), r.fallback]);
                        log_line(&log, v)
                    }
                    Ok(None) => {}
                    Err(e) => log_line(
                        &log,
                        json!({"error": e.to_string(), "kind": format!("{:?}", e.db_kind())}),
                    ),
                }
            }
        }));
    }
    while !stop_path.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stopping.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // Idle now: the watcher alone must bring the last flips.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.routing().stage != Stage::Complete && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed: Vec<Value> = store
        .followed()
        .into_iter()
        .map(|(e, s, f, t)| json!([e, s.as_str(), f, unix_ms(t) as u64]))
        .collect();
    log_line(&log, json!({"followed": followed}));
    log_line(
        &log,
        json!({"calls": calls.load(Ordering::Relaxed), "counters": store.counters()}),
    );
    cutover.shutdown().await;
    eprintln!("soak child {id} done");
}

/// What a child logged.
#[derive(Default, Debug)]
struct ChildLog {
    funnel: Vec<(String, String)>,
    redeemed: Vec<(i64, String)>,
    claimed: Vec<i64>,
    chunks: Vec<i64>,
    errors: Vec<(String, String)>,
    followed: Vec<(i64, String, bool, u128)>,
    calls: u64,
    fallbacks: u64,
    /// Writes whose changed rows copied to PostgreSQL in one transaction
    /// (a redeemed referral changes three rows).
    copies_together: u64,
    counters: Value,
}

fn read_log(path: &Path) -> ChildLog {
    let mut out = ChildLog::default();
    let f = std::fs::File::open(path).unwrap();
    for line in std::io::BufReader::new(f).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(a) = v.get("funnel") {
            out.funnel
                .push((a[0].as_str().unwrap().into(), a[1].as_str().unwrap().into()));
        } else if let Some(a) = v.get("redeem") {
            out.redeemed
                .push((a[0].as_i64().unwrap(), a[1].as_str().unwrap().into()));
        } else if let Some(j) = v.get("claim") {
            out.claimed.push(j.as_i64().unwrap());
        } else if let Some(c) = v.get("chunk") {
            out.chunks.push(c.as_i64().unwrap());
        } else if let Some(e) = v.get("error") {
            out.errors.push((
                e.as_str().unwrap().into(),
                v["kind"].as_str().unwrap_or("").into(),
            ));
        } else if let Some(f) = v.get("followed") {
            for x in f.as_array().unwrap() {
                out.followed.push((
                    x[0].as_i64().unwrap(),
                    x[1].as_str().unwrap().into(),
                    x[2].as_bool().unwrap(),
                    x[3].as_u64().unwrap() as u128,
                ));
            }
        } else if let Some(c) = v.get("calls") {
            out.calls = c.as_u64().unwrap();
            out.fallbacks = v["counters"]["fallbacks"].as_u64().unwrap_or(0);
            out.copies_together = v["counters"]["copies_together"].as_u64().unwrap_or(0);
            out.counters = v["counters"].clone();
        }
    }
    out
}

struct Child {
    process: std::process::Child,
    log: PathBuf,
}

/// A child left running when the test fails is killed, not left writing.
impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

fn spawn_child(id: usize, path: &Path, url: &str, dir: &Path, stop: &Path, tiny: bool) -> Child {
    let log = dir.join(format!("child{id}.log"));
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "soak_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SOAK_SQLITE", path)
    .env("SOAK_URL", url)
    .env("SOAK_ID", id.to_string())
    .env("SOAK_LOG", &log)
    .env("SOAK_STOP", stop)
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    if tiny {
        cmd.env("SOAK_TINY_POOL", "1");
    }
    let mut process = cmd.spawn().unwrap();
    let stderr = process.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            if !sent && line.contains("ready") {
                let _ = tx.send(());
                sent = true;
            }
            if line.contains("panicked") || line.contains("ERROR") {
                eprintln!("child {id}: {line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the child started");
    Child { process, log }
}

/// The rows of a table on SQLite, by key.
fn sqlite_rows(path: &Path, sql: &str) -> BTreeMap<i64, String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

async fn pg_rows(pool: &sqlx::PgPool, sql: &str) -> BTreeMap<i64, String> {
    let rows: Vec<(i32, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter().map(|(k, v)| (k as i64, v)).collect()
}

/// Each flip the parent made: (epoch, stage, when it was done).
type Flips = Vec<(i64, Stage, SystemTime)>;

async fn flip(d: &DualStore, to: Stage, flips: &mut Flips, pauses: &mut Vec<Duration>) {
    let pause = d.set_stage(to, true, "soak").await.unwrap();
    pauses.push(pause);
    flips.push((d.routing().epoch, to, SystemTime::now()));
}

/// Applies what both outboxes hold until nothing is pending (10 s at most).
async fn drain_all(d: &DualStore) {
    for _ in 0..100 {
        let _ = d.drain(Backend::Postgres, 1000).await;
        d.settle().await;
        if d.outbox_pending().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A soak's variations: one child with a one-connection pool, PostgreSQL
/// restarted in live, or a legacy history (users, tweets) the backfill
/// copies while the children write.
#[derive(Clone, Copy, Default)]
struct Soak {
    tiny_pool: bool,
    restart: bool,
    history: Option<(u64, u64)>,
}

async fn soak(o: Soak) {
    let Soak {
        tiny_pool,
        restart,
        history,
    } = o;
    let dir = common::TempDir::new();
    let path = dir.file("app.db");
    let stop = dir.file("stop");
    if let Some((users, tweets)) = history {
        common::generated(&path, users, tweets, 0.0, 7);
    }
    let mut server = cutover::pgserver::PgServer::start_new().unwrap();
    let settings = server.settings("postgres");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port());

    // The parent seeds both sides in dualwrite, then moves to shadow.
    let sqlite = SqliteStore::open(&path).await.unwrap();
    let pg = PgStore::connect(&settings).await.unwrap();
    cutover::pg::migrate(pg.pool()).await.unwrap();
    let d = DualStore::forced(sqlite, pg, Stage::DualWrite, DualConfig::default())
        .await
        .unwrap();
    d.upsert_profile(&profile("owner", json!({})))
        .await
        .unwrap();
    d.create_referral_code("owner", "HOT").await.unwrap();
    for u in 0..HOT_USERS {
        d.upsert_profile(&profile(&format!("hot{u}"), json!({})))
            .await
            .unwrap();
    }
    for j in 0..JOBS {
        d.enqueue_job(&NewJob {
            user_id: format!("hot{}", j % HOT_USERS),
            priority: (j % 5) as i32,
            chunk_tweet_counts: vec![10, 20],
        })
        .await
        .unwrap();
    }
    let mut flips: Flips = Vec::new();
    let mut pauses = Vec::new();
    flip(&d, Stage::Shadow, &mut flips, &mut pauses).await;

    let children: Vec<Child> = (0..PROCESSES)
        .map(|i| spawn_child(i, &path, &url, dir.0.path(), &stop, tiny_pool && i == 0))
        .collect();

    let started = Instant::now();
    let mut backfilled = None;
    if history.is_some() {
        // The history is copied while every process writes: each table's
        // secondary indexes (full-text too) are dropped for its copy and
        // built again, a build holding the table's lock; the writes that
        // meet it wait in the outbox and are replayed.
        let indexes = |valid: bool| {
            let pool = d.pg().pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' AND (NOT $1 OR i.indisvalid)",
                )
                .bind(valid)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        let before = indexes(false).await;
        let mut o = cutover::backfill::BackfillOptions::new(&path, settings.clone());
        o.defer_min_rows = 0;
        o.defer_full_text = true;
        o.batch_size = 2000;
        let summary = cutover::backfill::run(o, std::future::pending())
            .await
            .unwrap();
        // Every index dropped for the copy is back, and valid.
        assert_eq!(
            (indexes(false).await, indexes(true).await),
            (before, before),
            "indexes after the backfill"
        );
        backfilled = Some((
            summary.tables.iter().map(|t| t.copied).sum::<u64>(),
            summary.tables.iter().map(|t| t.busy_rounds).sum::<u64>(),
            started.elapsed(),
        ));
    }
    let rounds = 8;
    for k in 0..rounds {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let to = if k % 2 == 0 {
            Stage::Live
        } else {
            Stage::Shadow
        };
        flip(&d, to, &mut flips, &mut pauses).await;
        if restart && k == 2 {
            // PostgreSQL goes away in live: some process falls back for
            // all, and the first to see it again makes the return.
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Longer than the children's 2 s pool acquire timeout, so
            // their writes find it down rather than waiting it out.
            server.stop().unwrap();
            tokio::time::sleep(Duration::from_millis(3000)).await;
            server.start().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = d.refresh().await.unwrap();
                if !r.fallback && r.stage == Stage::Live {
                    break;
                }
                assert!(Instant::now() < deadline, "the fallback ended");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    flip(&d, Stage::Live, &mut flips, &mut pauses).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    flip(&d, Stage::Rampdown, &mut flips, &mut pauses).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // `cutover status` sees every process, each on the authority's epoch
    // and stage once its next heartbeat (every 5 s) is in.
    let pids: Vec<i64> = children.iter().map(|c| i64::from(c.process.id())).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = cutover::status::read(d.pg().pool(), Some(&path))
            .await
            .unwrap();
        let following = pids
            .iter()
            .filter(|pid| {
                st.processes.iter().any(|p| {
                    i64::from(p.pid) == **pid
                        && !p.stopped
                        && p.epoch == st.epoch
                        && p.stage == "rampdown"
                })
            })
            .count();
        if following == pids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status does not show every process following epoch {}: {:?}",
            st.epoch,
            st.processes
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::write(&stop, b"stop").unwrap();
    let traffic = started.elapsed();

    // Every write is in: both outboxes drain (the writers stop within a
    // call, so once more after they did), then both sides are checked.
    drain_all(&d).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drain_all(&d).await;
    assert_eq!(
        d.outbox_pending().await.unwrap(),
        0,
        "both outboxes drained"
    );
    let report = cutover::verify::verify(&cutover::verify::VerifyOptions::new(
        &path,
        settings.clone(),
    ))
    .await
    .unwrap();
    let divergent: u64 = report.tables.iter().map(|t| t.divergent_rows()).sum();
    flip(&d, Stage::Complete, &mut flips, &mut pauses).await;

    let mut logs = Vec::new();
    for mut c in children {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = c.process.try_wait().unwrap() {
                assert!(status.success(), "child exited with {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.process.kill();
                panic!("a child did not finish");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        logs.push(read_log(&c.log));
    }

    // What every process acknowledged, against both databases.
    let pool = d.pg().pool().clone();
    let mut problems = Vec::new();
    let funnel_of = |side: &dyn Fn(&str) -> Vec<String>, user: &str| -> HashSet<String> {
        side(user).into_iter().collect()
    };
    let mut sqlite_funnel: HashMap<String, HashSet<String>> = HashMap::new();
    let mut pg_funnel: HashMap<String, HashSet<String>> = HashMap::new();
    for u in 0..HOT_USERS {
        let user = format!("hot{u}");
        for (side, map) in [
            (Backend::Sqlite, &mut sqlite_funnel),
            (Backend::Postgres, &mut pg_funnel),
        ] {
            let fp = match side {
                Backend::Sqlite => d.sqlite().funnel_progress(&user).await.unwrap(),
                Backend::Postgres => d.pg().funnel_progress(&user).await.unwrap(),
            };
            let cmds: Vec<String> = fp
                .and_then(|f| f.completed_commands)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let _ = funnel_of;
            map.insert(user.clone(), cmds.into_iter().collect());
        }
    }
    let sqlite_tracking = sqlite_rows(&path, "SELECT id, referred_user_id FROM referral_tracking");
    let pg_tracking = pg_rows(&pool, "SELECT id, referred_user_id FROM referral_tracking").await;
    let sqlite_jobs = sqlite_rows(&path, "SELECT job_id, status FROM analysis_queue");
    let pg_jobs = pg_rows(&pool, "SELECT job_id, status FROM analysis_queue").await;
    let (mut acked, mut failed, mut unknown, mut calls) = (0u64, 0u64, 0u64, 0u64);
    let mut pool_timeouts = 0u64;
    let mut ids = HashSet::new();
    let mut claimed = HashSet::new();
    for (i, l) in logs.iter().enumerate() {
        calls += l.calls;
        failed += l.errors.len() as u64;
        for (e, _) in &l.errors {
            if e.contains("during COMMIT") {
                unknown += 1;
            } else if tiny_pool && i == 0 && e.contains("exhausted") {
                // The one-connection pool: a clear error, never a fallback.
                pool_timeouts += 1;
            } else {
                problems.push(format!("child {i}: a call failed: {e}"));
            }
        }
        for (user, cmd) in &l.funnel {
            acked += 1;
            if !sqlite_funnel[user].contains(cmd) {
                problems.push(format!(
                    "funnel {user} {cmd}: acknowledged, missing in SQLite"
                ));
            }
            if !pg_funnel[user].contains(cmd) {
                problems.push(format!(
                    "funnel {user} {cmd}: acknowledged, missing in PostgreSQL"
                ));
            }
        }
        for (id, referred) in &l.redeemed {
            acked += 1;
            if !ids.insert(*id) {
                problems.push(format!("referral id {id} handed out twice"));
            }
            for (side, rows) in [("SQLite", &sqlite_tracking), ("PostgreSQL", &pg_tracking)] {
                if rows.get(id) != Some(referred) {
                    problems.push(format!(
                        "referral {id} for {referred}: {side} holds {:?}",
                        rows.get(id)
                    ));
                }
            }
        }
        for j in &l.claimed {
            acked += 1;
            if !claimed.insert(*j) {
                problems.push(format!("job {j} claimed twice"));
            }
            for (side, rows) in [("SQLite", &sqlite_jobs), ("PostgreSQL", &pg_jobs)] {
                if rows.get(j).map(String::as_str) == Some("pending") {
                    problems.push(format!("job {j}: claimed, still pending in {side}"));
                }
            }
        }
        acked += l.chunks.len() as u64;
    }
    for (side, usage, logged) in [
        (
            "SQLite",
            sqlite_rows(&path, "SELECT 0, CAST(usage_count AS TEXT) FROM referral_codes WHERE code = 'HOT'"),
            sqlite_rows(&path, "SELECT 0, CAST(count(*) AS TEXT) FROM referral_usage_log WHERE referral_code = 'HOT'"),
        ),
        (
            "PostgreSQL",
            pg_rows(&pool, "SELECT 0, usage_count::text FROM referral_codes WHERE code = 'HOT'").await,
            pg_rows(&pool, "SELECT 0, count(*)::text FROM referral_usage_log WHERE referral_code = 'HOT'").await,
        ),
    ] {
        if usage.get(&0) != logged.get(&0) {
            problems.push(format!(
                "{side}: usage_count {:?} but {:?} usage-log rows",
                usage.get(&0),
                logged.get(&0)
            ));
        }
    }
    // Every process followed every flip made while it ran.
    let mut follow_ms: Vec<Vec<i64>> = vec![Vec::new(); logs.len()];
    for (i, l) in logs.iter().enumerate() {
        for (epoch, stage, at) in &flips[1..] {
            // The epoch itself, or a later one when a fallback or the next
            // flip came before the process's next write or poll.
            match l.followed.iter().find(|f| f.0 >= *epoch) {
                Some(f) => follow_ms[i].push(f.3 as i64 - unix_ms(*at) as i64),
                None => problems.push(format!("child {i} never followed epoch {epoch} ({stage})")),
            }
        }
    }
    let fallbacks: u64 = logs.iter().map(|l| l.fallbacks).sum::<u64>() + d.counters().fallbacks;
    let conflicts: Vec<(String, String, Option<Value>, Option<Value>)> = sqlx::query_as(
        "SELECT table_name, row_key, postgres_image, sqlite_image FROM cutover.conflicts ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for c in &conflicts {
        eprintln!("conflict recorded: {c:?}");
    }
    let fell_back = logs.iter().any(|l| l.followed.iter().any(|f| f.2));
    let mut sorted = pauses.clone();
    sorted.sort();
    eprintln!(
        "soak (tiny pool {tiny_pool}, restart {restart}): {PROCESSES} processes x {WRITERS} writers for {:.1} s; calls {calls}, failed {failed} (outcome unknown {unknown}, pool timeouts {pool_timeouts}); acknowledged writes checked on both sides {acked}; flips {} (pause max {:.1} ms, median {:.1} ms); fallbacks {fallbacks}; conflicts recorded {}; follow lag ms per process {follow_ms:?}; verify divergent rows {divergent}",
        traffic.as_secs_f64(),
        flips.len(),
        sorted.last().unwrap().as_secs_f64() * 1000.0,
        sorted[sorted.len() / 2].as_secs_f64() * 1000.0,
        conflicts.len(),
    );
    if let Some((copied, busy, took)) = backfilled {
        eprintln!(
            "backfill under the writers: {copied} rows in {:.1} s, {busy} rounds with application writes",
            took.as_secs_f64()
        );
    }
    if !problems.is_empty() {
        // Kept for a look: the SQLite file and every child's log.
        eprintln!("soak files kept in {}", dir.0.path().display());
        std::mem::forget(dir);
    }
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
    assert_eq!(divergent, 0, "verify: {report:?}");
    assert!(acked > 500, "enough traffic: {acked}");
    // The writes of several rows went through the copy together in every
    // process, under the same flips and faults (but the one whose single
    // connection is nearly always taken: its copies wait in the outbox).
    let together: Vec<u64> = logs.iter().map(|l| l.copies_together).collect();
    assert!(
        together
            .iter()
            .enumerate()
            .all(|(i, n)| (tiny_pool && i == 0) || *n > 0),
        "copies together per process: {together:?}; counters {:?}",
        logs.iter().map(|l| &l.counters).collect::<Vec<_>>()
    );
    if restart {
        assert!(fell_back, "the restart made the processes fall back");
    } else {
        assert_eq!(fallbacks, 0, "a busy pool never causes a fallback");
        assert!(!fell_back, "a busy pool never causes a fallback");
    }
}

/// Three processes, flips every 1.5 s, PostgreSQL restarted once in live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_lose_nothing_across_flips_and_a_restart() {
    soak(Soak {
        restart: true,
        ..Soak::default()
    })
    .await;
}

/// Three processes write while the backfill copies a legacy history,
/// dropping and building every table's secondary indexes (a build holds
/// the table's lock), then the same flips: nothing acknowledged is lost,
/// verify is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_lose_nothing_while_the_backfill_rebuilds_indexes() {
    soak(Soak {
        history: Some((300, 30_000)),
        ..Soak::default()
    })
    .await;
}

/// The same, one process with a one-connection pool and a 100 ms acquire
/// timeout, no restart: its pool timeouts are errors or waits, never a
/// fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_pool_never_causes_a_fallback() {
    soak(Soak {
        tiny_pool: true,
        ..Soak::default()
    })
    .await;
}
