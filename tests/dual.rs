//! The dual store on real SQLite files and a real PostgreSQL: routing per
//! stage, rollback from every stage, faults (PostgreSQL stopped under
//! traffic, a process killed between the two writes), convergence.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use cutover::dual::{DualConfig, DualStore};
use cutover::image;
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{Backend, NewJob, NewTweet, PgStore, ScrapedProfile, SqliteStore, Store};
use serde_json::json;

async fn dual_on(
    sqlite: &std::path::Path,
    pg: &cutover::settings::PgSettings,
    stage: Stage,
) -> DualStore {
    let config = DualConfig {
        raise_on_mismatch: false,
        shadow_sample_rate: 1.0,
        ..DualConfig::default()
    };
    dual_with(sqlite, pg, stage, config).await
}

async fn dual_with(
    sqlite: &std::path::Path,
    pg: &cutover::settings::PgSettings,
    stage: Stage,
    config: DualConfig,
) -> DualStore {
    let s = SqliteStore::open(sqlite).await.unwrap();
    let p = PgStore::connect(pg).await.unwrap();
    cutover::pg::migrate(p.pool()).await.unwrap();
    DualStore::forced(s, p, stage, config).await.unwrap()
}

/// Replays the outbox to PostgreSQL until it is empty (up to about 5 s).
async fn replay_until_empty(d: &DualStore) {
    for _ in 0..50 {
        d.drain(Backend::Sqlite, 100).await.unwrap();
        if d.outbox_pending().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 20 s) until the counters satisfy `done`: shadow comparisons
/// run off the caller's path and take as long as their re-checks.
async fn counters_when(
    d: &DualStore,
    done: impl Fn(&cutover::dual::CounterSnapshot) -> bool,
) -> cutover::dual::CounterSnapshot {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = d.counters();
        if done(&c) || std::time::Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mismatches a comparison has decided on, one way or another.
fn decided(c: &cutover::dual::CounterSnapshot) -> u64 {
    c.mismatches_real + c.mismatches_lag_resolved + c.mismatches_unsettled + c.mismatches_rejected
}

fn profile(id: &str) -> ScrapedProfile {
    ScrapedProfile {
        id: id.into(),
        username: format!("name-{id}"),
        profile_data: Some(json!({"bio": "hi", "n": 1})),
        profile_picture_url: None,
        scraped_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    }
}

fn tweet(id: &str, text: &str) -> NewTweet {
    NewTweet {
        id: id.into(),
        text: text.into(),
        created_at: Utc.timestamp_opt(1_700_000_100, 0).unwrap(),
        url: None,
        is_reply: Some(false),
        metadata: Some(json!({"likes": 1})),
    }
}

/// Runs the ignored test `name` of this binary as a child process on the
/// given SQLite file, database and stage, with the failpoint variable
/// `failpoint` set, and returns once its stderr shows `wanted` (panics,
/// killing it, if it never does).
fn spawn_child(
    name: &str,
    failpoint: (&str, String),
    path: &std::path::Path,
    db: &str,
    stage: Stage,
    wanted: String,
) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DATABASE_URL", common::admin_url())
        .env(failpoint.0, failpoint.1)
        .env("CUTOVER_CHILD_SQLITE", path)
        .env("CUTOVER_CHILD_DB", db)
        .env("CUTOVER_CHILD_STAGE", stage.as_str())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let looked_for = wanted.clone();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            if line.contains(&looked_for) {
                let _ = tx.send(Ok(()));
                return;
            }
            seen.push(line);
        }
        let _ = tx.send(Err(seen.join("\n")));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(())) => child,
        other => {
            let _ = child.kill();
            panic!("{stage}: the child never printed {wanted:?}: {other:?}");
        }
    }
}

/// In a child process spawned by `spawn_child`: its dual store; None when
/// not spawned by a parent test (e.g. `--include-ignored`).
async fn child_store() -> Option<DualStore> {
    let (Ok(path), Ok(db), Ok(stage)) = (
        std::env::var("CUTOVER_CHILD_SQLITE"),
        std::env::var("CUTOVER_CHILD_DB"),
        std::env::var("CUTOVER_CHILD_STAGE"),
    ) else {
        return None;
    };
    let settings = cutover::settings::PgSettings::from_url(&common::admin_url())
        .unwrap()
        .with_database(&db);
    Some(
        dual_on(
            std::path::Path::new(&path),
            &settings,
            Stage::parse(&stage).unwrap(),
        )
        .await,
    )
}

async fn assert_converged(d: &DualStore) {
    for _ in 0..100 {
        if d.outbox_pending().await.unwrap() == 0 {
            break;
        }
        let _ = d.drain(Backend::Sqlite, 1000).await;
        let _ = d.drain(Backend::Postgres, 1000).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.outbox_pending().await.unwrap(), 0, "outbox drained");
    let (s, p) = common::snapshot(d).await;
    for ((t, a), (_, b)) in s.iter().zip(p.iter()) {
        assert_eq!(a.len(), b.len(), "{t}: row counts differ");
        assert_eq!(a, b, "{t}: rows differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_in_each_stage() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::Off).await;
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        d.switch(stage).await.unwrap();
        let id = format!("u{i}");
        d.upsert_profile(&profile(&id)).await.unwrap();
        // While PostgreSQL is authoritative the copy to SQLite runs on its own task.
        d.settle().await;
        let in_sqlite = d.sqlite().get_user(&id).await.unwrap().is_some();
        let in_pg = d.pg().get_user(&id).await.unwrap().is_some();
        let want = match stage {
            Stage::Off => (true, false),
            Stage::Complete => (false, true),
            _ => (true, true),
        };
        assert_eq!((in_sqlite, in_pg), want, "writes in {stage}");
        // Reads come from the authoritative side: a row only the other side has is invisible.
        let only = format!("only-{i}");
        let other: &dyn Store = match stage.authoritative() {
            Backend::Sqlite => d.pg(),
            Backend::Postgres => d.sqlite(),
        };
        other.upsert_profile(&profile(&only)).await.unwrap();
        assert!(
            d.get_user(&only).await.unwrap().is_none(),
            "reads in {stage} come from {}",
            stage.authoritative()
        );
        assert_eq!(d.backend(), stage.authoritative());
        other.delete_user(&only).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_from_every_stage_to_every_earlier_one() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::DualWrite).await;
    d.upsert_profile(&profile("base")).await.unwrap();
    let mut n = 0;
    for from in Stage::ALL {
        for to in Stage::ALL.into_iter().filter(|t| *t < from) {
            // Keep both sides complete so any stage can serve: go through dualwrite.
            d.switch(Stage::DualWrite).await.unwrap();
            d.switch(from).await.unwrap();
            n += 1;
            let id = format!("w{n}");
            d.upsert_profile(&profile(&id)).await.unwrap();
            d.save_tweets(&id, &[tweet(&format!("t{n}"), "before rollback")])
                .await
                .unwrap();
            d.switch(to).await.unwrap();
            assert_eq!(d.stage(), to);
            if from != Stage::Complete || to >= Stage::Live {
                assert!(
                    d.get_user(&id).await.unwrap().is_some(),
                    "{from} -> {to}: write made in {from} readable"
                );
                assert_eq!(d.count_tweets(&id).await.unwrap(), 1, "{from} -> {to}");
            }
            assert!(d.get_user("base").await.unwrap().is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_come_from_the_authoritative_side() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::DualWrite).await;
    d.upsert_profile(&profile("u")).await.unwrap();
    let job = |p| NewJob {
        user_id: "u".into(),
        priority: p,
        chunk_tweet_counts: vec![10, 20],
    };
    let a = d.enqueue_job(&job(0)).await.unwrap();
    let on_pg = d.pg().get_job(a.job.job_id).await.unwrap().unwrap();
    assert_eq!(on_pg, a, "same ids and rows on PostgreSQL");
    d.switch(Stage::Shadow).await.unwrap();
    d.switch(Stage::Live).await.unwrap();
    let b = d.enqueue_job(&job(1)).await.unwrap();
    assert!(
        b.job.job_id > a.job.job_id,
        "PostgreSQL's sequence moved past SQLite's ids"
    );
    d.settle().await;
    assert_eq!(d.sqlite().get_job(b.job.job_id).await.unwrap().unwrap(), b);
    d.switch(Stage::Shadow).await.unwrap();
    let c = d.enqueue_job(&job(2)).await.unwrap();
    assert!(
        c.job.job_id > b.job.job_id,
        "SQLite's sequence moved past PostgreSQL's ids"
    );
    assert_converged(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_the_same_keys_converge() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    for stage in [Stage::DualWrite, Stage::Live] {
        let d = dual_on(&dir.file(&format!("{stage}.db")), &db.settings, stage).await;
        // A second store on the same files, as a second process of the
        // application would have: its own connections and per-key locks.
        let other = dual_on(&dir.file(&format!("{stage}.db")), &db.settings, stage).await;
        for u in 0..4 {
            d.upsert_profile(&profile(&format!("c{u}"))).await.unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..8 {
            let d = if w % 2 == 0 { d.clone() } else { other.clone() };
            tasks.push(tokio::spawn(async move {
                for i in 0..40 {
                    let u = format!("c{}", (w + i) % 4);
                    d.save_tweets(
                        &u,
                        &[tweet(
                            &format!("same-{}", i % 5),
                            &format!("writer {w} round {i}"),
                        )],
                    )
                    .await
                    .unwrap();
                    d.complete_funnel_command(&u, &format!("/cmd{i}"), &json!({"w": w}))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        other.settle().await;
        assert_converged(&d).await;
        // Reset PostgreSQL's application tables for the next stage.
        for t in cutover::tables::ALL.iter().rev() {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", t.name)))
                .execute(d.pg().pool())
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_reads_count_real_mismatches_not_lag() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::Shadow).await;
    d.upsert_profile(&profile("s1")).await.unwrap();
    for _ in 0..20 {
        d.get_user("s1").await.unwrap();
    }
    // Comparisons run off the caller's path: let them finish.
    let c = counters_when(&d, |c| c.comparisons == 20).await;
    assert_eq!((c.comparisons, c.mismatches_real), (20, 0), "{c:?}");
    // Divergence planted behind the dual store's back.
    sqlx::query("UPDATE users SET profile_data = '{\"bio\": \"tampered\"}' WHERE id = 's1'")
        .execute(d.pg().pool())
        .await
        .unwrap();
    d.get_user("s1").await.unwrap();
    counters_when(&d, |c| c.mismatches_real == 1).await;
    sqlx::query("DELETE FROM users WHERE id = 's1'")
        .execute(d.pg().pool())
        .await
        .unwrap();
    d.get_user("s1").await.unwrap();
    let c = counters_when(&d, |c| decided(c) == 2).await;
    assert!(c.comparisons >= 22, "{c:?}");
    assert_eq!(c.mismatches_real, 2, "{c:?}");
    let recent = d.recent_mismatches();
    assert!(
        recent
            .iter()
            .any(|m| m.kind == cutover::shadow::MismatchKind::Field
                && m.field.as_deref() == Some("profile_data")
                && m.key == "s1"),
        "{recent:?}"
    );
    assert!(
        recent
            .iter()
            .any(|m| m.kind == cutover::shadow::MismatchKind::Missing && m.key == "s1"),
        "{recent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_reads_account_for_rejected_legacy_rows() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("t.db");
    // A legacy tweet whose user does not exist: the backfill rejects it.
    drop(SqliteStore::open(&path).await.unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA foreign_keys=OFF").unwrap();
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at) VALUES ('orphan-1', 'nobody', 'hi', '2020-01-01 00:00:00')",
            [],
        )
        .unwrap();
    }
    let mut o = cutover::backfill::BackfillOptions::new(&path, db.settings.clone());
    // Still `off` (the store moves to shadow below); nothing writes meanwhile.
    o.force = true;
    let summary = cutover::backfill::run(o, std::future::pending())
        .await
        .unwrap();
    assert!(summary.reconciled());
    let d = dual_on(&path, &db.settings, Stage::Shadow).await;
    assert!(d.get_tweet("orphan-1").await.unwrap().is_some());
    let c = counters_when(&d, |c| decided(c) == 1).await;
    assert_eq!(c.comparisons, 1, "{c:?}");
    assert_eq!((c.mismatches_real, c.mismatches_rejected), (0, 1), "{c:?}");
}

/// A write in `live` whose copy to SQLite is still in PostgreSQL's outbox
/// (made on PostgreSQL alone, as a crash between the two leaves it): a
/// shadow read in between sees PostgreSQL ahead of SQLite. That is lag: the comparison waits for the key to leave the
/// outbox and resolves, or, when the copy is held past the re-check
/// deadline, is counted apart as unsettled, never as a real mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_reads_wait_out_a_key_still_in_the_outbox() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("t.db");
    for (n, recheck) in [
        (1u64, Duration::from_secs(8)),
        (2, Duration::from_millis(600)),
    ] {
        let config = DualConfig {
            shadow_sample_rate: 1.0,
            lag_recheck: recheck,
            ..DualConfig::default()
        };
        let d = dual_with(&path, &db.settings, Stage::Live, config).await;
        let id = format!("lag{n}");
        d.upsert_profile(&profile(&id)).await.unwrap();
        // In `live` the caller has its answer once PostgreSQL committed; the
        // copy to SQLite lands just after. Wait for it so both sides agree.
        d.settle().await;
        d.get_user(&id).await.unwrap();
        let c0 = counters_when(&d, |c| c.comparisons >= 1).await;
        assert_eq!(decided(&c0), 0, "both sides agree at first: {c0:?}");

        // A write PostgreSQL committed whose copy has not reached SQLite
        // yet (as a process killed between the two leaves it): its entry
        // waits in PostgreSQL's outbox.
        let mut changed = profile(&id);
        changed.profile_data = Some(json!({"bio": "moved on"}));
        d.pg().upsert_profile(&changed).await.unwrap();
        let user = d.get_user(&id).await.unwrap().unwrap();
        assert_eq!(
            user.profile_data.unwrap()["bio"],
            "moved on",
            "reads follow PostgreSQL"
        );
        if n == 1 {
            // The replayer copies it while the comparison waits.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(d.drain(Backend::Postgres, 100).await.unwrap(), 1);
        }
        let c = counters_when(&d, |c| decided(c) >= 1).await;
        assert_eq!(c.mismatches_real, 0, "{c:?}");
        if n == 1 {
            assert_eq!(c.mismatches_lag_resolved, 1, "waited for the copy: {c:?}");
        } else {
            assert_eq!(
                c.mismatches_unsettled, 1,
                "copy held past the deadline: {c:?}"
            );
        }
        assert!(d.recent_mismatches().is_empty());
    }
}

/// PostgreSQL aborts a write as a deadlock victim (a trigger raises 40P01
/// on the first two attempts): the store runs it again and the caller never
/// sees it. A write aborted every time is the caller's error after the
/// retries, and SQLite is left untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_postgresql_aborts_as_busy_run_again() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::Live).await;
    sqlx::raw_sql(
        "CREATE SEQUENCE fired;
         CREATE FUNCTION abort_as_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.id = 'always' OR nextval('fired') <= 2 THEN
                 RAISE deadlock_detected USING MESSAGE = 'injected deadlock';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER abort_as_deadlock BEFORE INSERT ON users FOR EACH ROW
             WHEN (NEW.id IN ('busy1', 'always')) EXECUTE FUNCTION abort_as_deadlock();",
    )
    .execute(d.pg().pool())
    .await
    .unwrap();

    let u = d.upsert_profile(&profile("busy1")).await.unwrap();
    assert_eq!(u.id, "busy1");
    let c = d.counters();
    assert_eq!((c.busy_retries, c.failed_calls), (2, 0), "{c:?}");
    assert!(d.pg().get_user("busy1").await.unwrap().is_some());
    // In `live` the images may land in SQLite just after the answer.
    d.settle().await;
    assert!(d.sqlite().get_user("busy1").await.unwrap().is_some());

    let e = d.upsert_profile(&profile("always")).await.unwrap_err();
    assert_eq!(e.db_kind(), Some(cutover::DbErrorKind::Busy), "{e}");
    let c = d.counters();
    assert_eq!((c.busy_retries, c.failed_calls), (6, 1), "{c:?}");
    assert!(d.sqlite().get_user("always").await.unwrap().is_none());
    assert!(d.pg().get_user("always").await.unwrap().is_none());
}

/// Runs app traffic on `d` until `stop`, counting calls and failures.
fn traffic(
    d: DualStore,
    worker: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let u = format!("w{worker}-{}", i % 20);
            let r: cutover::Result<()> = async {
                d.upsert_profile(&profile(&u)).await?;
                d.save_tweets(&u, &[tweet(&format!("{u}-t{i}"), "traffic")])
                    .await?;
                d.timeline(&u, 10, None).await?;
                d.complete_funnel_command(&u, "/step", &json!(i)).await?;
                Ok(())
            }
            .await;
            calls.fetch_add(4, Ordering::Relaxed);
            if let Err(e) = r {
                eprintln!("call failed: {e}");
                failed.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn outage_under_traffic(stage: Stage) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = common::TempDir::new();
    let mut server = cutover::pgserver::PgServer::start_new().unwrap();
    let mut settings = server.settings("postgres");
    settings.pool.acquire_timeout = Duration::from_millis(500);
    let d = dual_on(&dir.file("t.db"), &settings, stage).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| traffic(d.clone(), w, stop.clone(), calls.clone(), failed.clone()))
        .collect();
    // A replayer, as Cutover runs one.
    let rd = d.clone();
    let rstop = stop.clone();
    let replayer = tokio::spawn(async move {
        while !rstop.load(Ordering::Relaxed) {
            let _ = rd.drain(Backend::Sqlite, 500).await;
            let _ = rd.drain(Backend::Postgres, 500).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.stop().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("{stage}: a writer stalled; {}", d.lock_report()),
        }
    }
    replayer.await.unwrap();
    let c = d.counters();
    eprintln!(
        "{stage}: calls {} failed {} counters {c:?}",
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    // A write whose COMMIT the outage cut fails as `OutcomeUnknown` (it
    // is applied once or not at all); no other call fails.
    assert_eq!(
        failed.load(Ordering::Relaxed),
        c.unknown_commits,
        "no call failed during the outage but those whose COMMIT it cut"
    );
    assert!(
        c.secondary_failures > 0 || c.fallbacks > 0,
        "the outage was seen: {c:?}"
    );
    if stage >= Stage::Live {
        assert!(c.fallbacks > 0, "fell back to SQLite: {c:?}");
        for _ in 0..100 {
            if !d.routing().fallback {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!d.routing().fallback, "returned to PostgreSQL");
    }
    assert_converged(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_in_dualwrite_loses_nothing() {
    outage_under_traffic(Stage::DualWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_in_shadow_loses_nothing() {
    outage_under_traffic(Stage::Shadow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_in_live_falls_back_and_returns() {
    outage_under_traffic(Stage::Live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_under_live_dual_writes_ends_consistent() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("gen.db");
    cutover::generate::generate(
        &path,
        &cutover::generate::GenerateOptions {
            users: 200,
            tweets: 6_000,
            dirty: 0.0,
            seed: 3,
        },
    )
    .unwrap();
    let d = dual_on(&path, &db.settings, Stage::DualWrite).await;
    // Legacy users the writers update, and some they delete, while the backfill copies them.
    let ids: Vec<String> = d
        .sqlite()
        .connection()
        .call(|c| -> cutover::Result<Vec<String>> {
            let mut st = c.prepare("SELECT id FROM users ORDER BY rowid LIMIT 60")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (d, ids, stop) = (d.clone(), ids.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let u = &ids[(w * 20 + i) % ids.len()];
                if i.is_multiple_of(17) && w == 0 {
                    d.delete_user(u).await.unwrap();
                } else if d.get_user(u).await.unwrap().is_some() {
                    // Writer 0 may delete the user between the read and
                    // these writes: then they fail as the application's own
                    // race, naming the missing parent, and change nothing.
                    let gone =
                        |e: &cutover::Error| matches!(e, cutover::Error::MissingParent { .. });
                    if let Err(e) = d
                        .save_tweets(
                            u,
                            &[tweet(
                                &format!("live-{w}-{i}"),
                                "written during the backfill",
                            )],
                        )
                        .await
                    {
                        assert!(gone(&e), "{e}");
                    }
                    if let Err(e) = d.complete_funnel_command(u, "/live", &json!(i)).await {
                        assert!(gone(&e), "{e}");
                    }
                } else {
                    d.upsert_profile(&profile(u)).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let mut opts = cutover::backfill::BackfillOptions::new(&path, db.settings.clone());
    opts.batch_size = 500;

    let summary = cutover::backfill::run(opts, std::future::pending())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let _ = d.drain(Backend::Sqlite, 1000).await;
    assert_eq!(d.outbox_pending().await.unwrap(), 0);
    let report = cutover::verify::verify(&cutover::verify::VerifyOptions::new(
        &path,
        db.settings.clone(),
    ))
    .await
    .unwrap();
    assert!(
        report.clean,
        "divergent after backfill under live writes: {:?}",
        report
            .tables
            .iter()
            .filter(|t| t.divergent_rows() > 0)
            .collect::<Vec<_>>()
    );
    assert!(summary.tables.iter().any(|t| t.copied > 0));
    // The writers committed to SQLite while the tables were copied: the
    // copy paused after those rounds (busy_share 1: as long as the round).
    assert!(
        summary
            .tables
            .iter()
            .any(|t| t.busy_rounds > 0 && t.room_seconds > 0.0),
        "no round saw the application's writes: {:?}",
        summary
            .tables
            .iter()
            .map(|t| (t.table, t.busy_rounds, t.room_seconds))
            .collect::<Vec<_>>()
    );
}

/// The child process of
/// `a_write_killed_between_commit_and_secondary_apply_is_replayed_by_the_next_start`:
/// one dual write, stopped by the failpoint right after the authoritative
/// commit, where the parent kills it with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of a_write_killed_between_commit_and_secondary_apply_is_replayed_by_the_next_start; only meaningful when spawned by it"]
async fn child_writer_stopped_at_the_failpoint() {
    let Some(d) = child_store().await else {
        return;
    };
    d.upsert_profile(&profile("killed")).await.unwrap();
    d.save_tweets("killed", &[tweet("killed-t1", "written once")])
        .await
        .unwrap();
    // In `live` the images land in SQLite after the answer.
    d.settle().await;
    panic!("the failpoint did not stop the write");
}

/// A child killed with SIGKILL while it holds its locks (the order lock in
/// `live`, SQLite's write lock from the apply on and in `dualwrite`), at each
/// step of a write: before PostgreSQL's COMMIT (nothing was acknowledged:
/// neither side has the row), after the authoritative commit, and in
/// `live` after the images were applied to SQLite but before SQLite's
/// COMMIT. The lock dies with the process; the next start replays what the
/// authoritative side committed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_killed_between_commit_and_secondary_apply_is_replayed_by_the_next_start() {
    for (stage, point, committed) in [
        (Stage::DualWrite, "dual.after_authoritative_commit", true),
        (Stage::Live, "pg.before_commit", false),
        (Stage::Live, "dual.after_authoritative_commit", true),
        (Stage::Live, "dual.after_sqlite_apply", true),
    ] {
        let db = common::TestDb::migrated().await;
        let dir = common::TempDir::new();
        let path = dir.file("killed.db");
        let pool = db.pool().await;
        drop(SqliteStore::open(&path).await.unwrap());

        let mut child = spawn_child(
            "child_writer_stopped_at_the_failpoint",
            ("CUTOVER_FAILPOINT", point.into()),
            &path,
            &db.name,
            stage,
            format!("failpoint {point} reached"),
        );
        // SIGKILL: no destructor, no flush, no secondary apply.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "{stage} {point}: killed, not exited: {status:?}"
        );

        // The authoritative side has the user when it committed, and its
        // outbox the entry; the other side does not.
        let s = SqliteStore::open(&path).await.unwrap();
        let p = PgStore::connect(&db.settings).await.unwrap();
        let (auth, other): (&dyn Store, &dyn Store) = match stage.authoritative() {
            Backend::Sqlite => (&s, &p),
            Backend::Postgres => (&p, &s),
        };
        assert_eq!(
            auth.get_user("killed").await.unwrap().is_some(),
            committed,
            "{stage} {point}"
        );
        assert!(
            other.get_user("killed").await.unwrap().is_none(),
            "{stage} {point}"
        );
        let pending = match stage.authoritative() {
            Backend::Sqlite => s.read(cutover::outbox::sqlite_pending).await.unwrap(),
            Backend::Postgres => cutover::outbox::pg_pending(p.pool()).await.unwrap(),
        };
        assert_eq!(
            pending >= 1,
            committed,
            "{stage} {point}: the entry is in the outbox"
        );
        drop((s, p));

        // The next start replays it.
        let mut config = cutover::CutoverConfig::new(&path, db.settings.clone());
        config.replay_interval = Duration::from_millis(50);
        let c = cutover::Cutover::start(config).await.unwrap();
        let d = c.store();
        assert_eq!(d.stage(), stage);
        let mut replayed = false;
        for _ in 0..100 {
            let other_has = match stage.authoritative() {
                Backend::Sqlite => d.pg().get_user("killed").await.unwrap().is_some(),
                Backend::Postgres => d.sqlite().get_user("killed").await.unwrap().is_some(),
            };
            if other_has == committed && d.outbox_pending().await.unwrap() == 0 {
                replayed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            replayed,
            "{stage} {point}: the next start replayed the killed write"
        );
        if committed {
            assert!(d.counters().replayed >= 1, "{stage}: {:?}", d.counters());
        }
        // The process is gone, its lock with it: writes go on.
        d.upsert_profile(&profile("after")).await.unwrap();
        eprintln!("{stage}: killed at {point}, replayed {:?}", d.counters());
        assert_converged(&d).await;
        c.shutdown().await;
        pool.close().await;
    }
}

/// The images a PostgreSQL write carries (read back inside its transaction
/// as jsonb, one round trip) are exactly the rows as read with their types,
/// for every table and every kind of value, deletes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_images_are_the_rows_as_committed() {
    let db = common::TestDb::migrated().await;
    let pg = PgStore::connect(&db.settings).await.unwrap();
    pg.set_outbox(true);
    let mut tables_seen = std::collections::BTreeSet::new();
    let mut deleted = 0;
    // Runs a write and compares each image it carried with the row as
    // PostgreSQL returns it right after.
    macro_rules! check {
        ($write:expr) => {{
            let (out, captured) = cutover::changes::capture($write).await;
            let out = out.unwrap();
            assert!(
                !captured.changes.is_empty(),
                "every write reported its rows"
            );
            for ch in &captured.changes {
                let carried = captured
                    .carried
                    .get(ch)
                    .expect("an image travels with each change");
                tables_seen.insert(ch.table);
                let table = cutover::tables::by_name(ch.table).unwrap();
                let key = image::Key::parse(table, &ch.key).unwrap();
                let now = image::pg_read(pg.pool(), table, &key).await.unwrap();
                if now.is_none() {
                    deleted += 1;
                }
                assert_eq!(carried.image, now, "{} {}: carried image", ch.table, ch.key);
            }
            out
        }};
    }
    check!(pg.upsert_profile(&ScrapedProfile {
        profile_picture_url: Some("https://pbs.example/ü.jpg".into()),
        scraped_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
        ..profile("u1")
    }));
    check!(pg.upsert_profile(&profile("u2")));
    let mut t = tweet("t1", "emoji 🚀 and a \"quote\" and a tab\t");
    t.url = None;
    t.is_reply = None;
    t.metadata = Some(json!({"nested": {"a": [1, 2.5, null, "x"]}, "big": 9007199254740993_i64}));
    check!(pg.save_tweets("u1", &[t, tweet("t2", "two")]));
    check!(pg.save_tweets("u2", &[tweet("t3", "three")]));
    check!(pg.save_analysis(&cutover::PersonalityAnalysis {
        id: "a1".into(),
        user_id: "u1".into(),
        traits: json!({"openness": 0.7}),
        interests: json!(["rust"]),
        communication_style: json!("terse"),
        analyzed_at: None,
    }));
    check!(pg.complete_funnel_command("u1", "/start", &json!({"r": "ok"})));
    check!(pg.mark_funnel_complete("u1", &json!({"done": true})));
    check!(pg.create_referral_code("u1", "CODE1"));
    check!(pg.redeem_referral("CODE1", "u2"));
    let job = check!(pg.enqueue_job(&NewJob {
        user_id: "u1".into(),
        priority: 3,
        chunk_tweet_counts: vec![5, 7],
    }));
    check!(pg.claim_next_job());
    check!(pg.start_chunk(job.chunks[0].chunk_id));
    check!(pg.complete_chunk(job.chunks[0].chunk_id, &json!({"ok": 1})));
    check!(pg.delete_user("u2"));
    assert!(deleted > 0, "a delete carries no image");
    assert_eq!(
        tables_seen.len(),
        cutover::tables::ALL.len(),
        "every table was written: {tables_seen:?}"
    );
}

/// Two processes copy the same key to the other side: the one that read
/// its image first writes it last (paused in between). The other side still
/// ends with the newer image, with nothing left in the outbox to fix it
/// later: SQLite → PostgreSQL in `dualwrite` (the copy re-reads SQLite),
/// PostgreSQL → SQLite in `live` (SQLite's recorded version refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_process_never_leaves_an_older_image_behind() {
    for (stage, point) in [
        (Stage::DualWrite, "dual.before_copy_to_postgres"),
        (Stage::Live, "dual.before_copy_to_sqlite"),
    ] {
        let db = common::TestDb::migrated().await;
        let dir = common::TempDir::new();
        let path = dir.file("race.db");
        let d = dual_on(&path, &db.settings, stage).await;
        d.upsert_profile(&profile("race")).await.unwrap();
        d.settle().await;

        let mut child = spawn_child(
            "child_writer_paused_before_its_copy",
            ("CUTOVER_FAILPOINT_PAUSE", format!("{point}=1500")),
            &path,
            &db.name,
            stage,
            format!("failpoint {point} paused"),
        );
        // The child holds the older image; this write is newer and is
        // copied (its entry and the child's cleared) while the child waits.
        d.upsert_profile(&ScrapedProfile {
            username: "name-newer".into(),
            ..profile("race")
        })
        .await
        .unwrap();
        d.settle().await;
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{stage}: the child's write succeeded: {status:?}"
        );

        let (s, p) = (
            d.sqlite().get_user("race").await.unwrap().unwrap(),
            d.pg().get_user("race").await.unwrap().unwrap(),
        );
        assert_eq!(s.username, "name-newer", "{stage}");
        assert_eq!(p, s, "{stage}: both sides hold the newer image");
        assert_eq!(d.outbox_pending().await.unwrap(), 0, "{stage}");
    }
}

#[tokio::test]
#[ignore = "child process of a_slower_process_never_leaves_an_older_image_behind; only meaningful when spawned by it"]
async fn child_writer_paused_before_its_copy() {
    let Some(d) = child_store().await else {
        return;
    };
    d.upsert_profile(&ScrapedProfile {
        username: "name-older".into(),
        ..profile("race")
    })
    .await
    .unwrap();
    d.settle().await;
}

/// As `a_slower_process_never_leaves_an_older_image_behind`, for a write
/// of several rows, whose copy to PostgreSQL is one transaction: the
/// child's older copy of two tweets pauses after taking their copy locks
/// and reading SQLite; this process's newer write of both waits for those
/// locks and copies after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_process_never_leaves_an_older_image_behind_for_several_rows() {
    let db = common::TestDb::migrated().await;
    let dir = common::TempDir::new();
    let path = dir.file("race-rows.db");
    // Long enough to wait for the child's copy locks (held 1.5 s), so this
    // process's rows also copy in one transaction, after the child's.
    let config = DualConfig {
        raise_on_mismatch: false,
        copy_lock_timeout: Duration::from_secs(5),
        ..DualConfig::default()
    };
    let d = dual_with(&path, &db.settings, Stage::DualWrite, config).await;
    d.upsert_profile(&profile("race")).await.unwrap();
    d.save_tweets("race", &[tweet("ra", "first"), tweet("rb", "first")])
        .await
        .unwrap();
    d.settle().await;

    let point = "dual.before_copy_to_postgres";
    let mut child = spawn_child(
        "child_writer_of_several_rows_paused_before_its_copy",
        ("CUTOVER_FAILPOINT_PAUSE", format!("{point}=1500")),
        &path,
        &db.name,
        Stage::DualWrite,
        format!("failpoint {point} paused"),
    );
    let before = d.counters();
    d.save_tweets("race", &[tweet("ra", "newer"), tweet("rb", "newer")])
        .await
        .unwrap();
    d.settle().await;
    let after = d.counters();
    assert_eq!(
        (
            after.copies_together - before.copies_together,
            after.copies_one_by_one - before.copies_one_by_one
        ),
        (1, 0),
        "this process's two rows copied in one transaction: {after:?}"
    );
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the child's write succeeded, its rows copied in one transaction: {status:?}"
    );

    for id in ["ra", "rb"] {
        let (s, p) = (
            d.sqlite().get_tweet(id).await.unwrap().unwrap(),
            d.pg().get_tweet(id).await.unwrap().unwrap(),
        );
        assert_eq!(s.text, "newer", "{id}");
        assert_eq!(p, s, "{id}: both sides hold the newer image");
    }
    assert_eq!(d.outbox_pending().await.unwrap(), 0);
}

#[tokio::test]
#[ignore = "child process of a_slower_process_never_leaves_an_older_image_behind_for_several_rows; only meaningful when spawned by it"]
async fn child_writer_of_several_rows_paused_before_its_copy() {
    let Some(d) = child_store().await else {
        return;
    };
    d.save_tweets("race", &[tweet("ra", "older"), tweet("rb", "older")])
        .await
        .unwrap();
    d.settle().await;
    let c = d.counters();
    assert_eq!((c.copies_together, c.copies_one_by_one), (1, 0), "{c:?}");
}

/// Two tweets of two users written in one SQLite transaction.
struct TwoUsersTweets;

impl cutover::dual::WriteQuery for TwoUsersTweets {
    type Output = ();
    fn sqlite(&self, c: &rusqlite::Connection) -> cutover::Result<()> {
        for (id, user) in [("two-old", "old"), ("two-new", "new")] {
            c.execute(
                "INSERT INTO tweets (id, user_id, text, created_at) VALUES (?1, ?2, 'both', '2024-01-01 00:00:00')",
                (id, user),
            )?;
        }
        Ok(())
    }
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> cutover::dual::PgFuture<'c, ()> {
        Box::pin(async move {
            for (id, user) in [("two-old", "old"), ("two-new", "new")] {
                sqlx::query(
                    "INSERT INTO tweets (id, user_id, text, created_at) VALUES ($1, $2, 'both', '2024-01-01 00:00:00+00')",
                )
                .bind(id)
                .bind(user)
                .execute(&mut *c)
                .await?;
            }
            Ok(())
        })
    }
}

/// In `dualwrite` a write's rows copy to PostgreSQL in one transaction.
/// When PostgreSQL refuses one of them (here a tweet whose user the
/// backfill has not copied and that no copy is bringing: an orphan), the
/// transaction is rolled back and each row is judged alone: the other row
/// still copies, the refused one is recorded in the reject ledger (as a
/// single-row write's would be), nothing is counted as failed and nothing
/// is left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_one_row_postgresql_refuses_still_copies_the_others() {
    let db = common::TestDb::migrated().await;
    let dir = common::TempDir::new();
    let path = dir.file("rows.db");
    let d = dual_on(&path, &db.settings, Stage::Off).await;
    d.upsert_profile(&profile("old")).await.unwrap();
    d.switch(Stage::DualWrite).await.unwrap();
    d.upsert_profile(&profile("new")).await.unwrap();
    // A write of two rows PostgreSQL takes: one transaction.
    d.save_tweets("new", &[tweet("n1", "one"), tweet("n2", "two")])
        .await
        .unwrap();
    d.settle().await;
    let c = d.counters();
    assert_eq!((c.copies_together, c.copies_one_by_one), (1, 0), "{c:?}");
    for id in ["n1", "n2"] {
        assert!(d.pg().get_tweet(id).await.unwrap().is_some(), "{id}");
    }
    assert!(d.pg().get_user("old").await.unwrap().is_none());
    let before = d.counters();

    d.write("two_users_tweets", TwoUsersTweets).await.unwrap();
    d.settle().await;

    assert!(d.sqlite().get_tweet("two-old").await.unwrap().is_some());
    let (s, p) = (
        d.sqlite().get_tweet("two-new").await.unwrap().unwrap(),
        d.pg().get_tweet("two-new").await.unwrap(),
    );
    assert_eq!(
        p.as_ref(),
        Some(&s),
        "the row that could copy is in PostgreSQL"
    );
    assert!(d.pg().get_tweet("two-old").await.unwrap().is_none());
    let rejects: Vec<(String, String)> =
        sqlx::query_as("SELECT row_key, reason FROM cutover.rejects WHERE table_name = 'tweets'")
            .fetch_all(d.pg().pool())
            .await
            .unwrap();
    assert_eq!(rejects, vec![("two-old".to_string(), "orphan".to_string())]);
    let after = d.counters();
    assert_eq!(
        after.copies_one_by_one - before.copies_one_by_one,
        1,
        "{after:?}"
    );
    assert_eq!(
        after.secondary_failures, before.secondary_failures,
        "{after:?}"
    );
    assert_eq!(after.failed_calls, 0, "{after:?}");
    assert_eq!(d.outbox_pending().await.unwrap(), 0);
}

/// A process flips the stage itself while its own writers keep its small
/// pool busy: writers waiting for the order lock must not sit on the pool's
/// connections the flip needs (each flip would then wait out the acquire
/// timeout and fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_made_beside_its_own_writers_gets_a_connection() {
    let db = common::TestDb::migrated().await;
    let dir = common::TempDir::new();
    let mut settings = db.settings.clone();
    settings.pool.max_connections = 3;
    settings.pool.acquire_timeout = Duration::from_secs(1);
    let d = dual_on(&dir.file("own.db"), &settings, Stage::Live).await;
    for i in 0..12 {
        d.upsert_profile(&profile(&format!("own{i}")))
            .await
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..12)
        .map(|i| {
            let (d, stop, ok, failed) = (d.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let p = ScrapedProfile {
                        username: format!("own{i}-{n}"),
                        ..profile(&format!("own{i}"))
                    };
                    match d.upsert_profile(&p).await {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    let mut stage = Stage::Live;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stage = if stage == Stage::Live {
            Stage::Shadow
        } else {
            Stage::Live
        };
        let r = d.switch(stage).await;
        assert!(r.is_ok(), "flip to {stage}: {r:?}");
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no write failed");
    assert!(ok.load(Ordering::SeqCst) > 0);
    d.settle().await;
    for i in 0..12 {
        let id = format!("own{i}");
        assert_eq!(
            d.sqlite().get_user(&id).await.unwrap(),
            d.pg().get_user(&id).await.unwrap(),
            "{id}: both sides agree"
        );
    }
}

/// A copy to PostgreSQL that meets a table locked against writes (as a
/// backfill's plain index build locks it) gives up after
/// `copy_lock_timeout` and waits in the outbox: the caller is not held
/// behind the lock, the next copies to that table go straight to the
/// outbox for `copy_busy_pause` (counted as deferred, not failed), and once
/// the lock is gone the replayer copies them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_that_meet_a_locked_table_wait_in_the_outbox_not_the_caller() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let d = dual_on(&dir.file("t.db"), &db.settings, Stage::DualWrite).await;
    let pool = db.pool().await;
    let mut build = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN SHARE MODE")
        .execute(&mut *build)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..5 {
            d.upsert_profile(&profile(&format!("locked{i}")))
                .await
                .unwrap();
        }
    })
    .await
    .expect("the application's writes are not held behind PostgreSQL's lock");
    let c = d.counters();
    assert_eq!(
        (c.secondary_deferred, c.secondary_failures, c.failed_calls),
        (5, 0, 0),
        "{c:?}"
    );
    let in_pg: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id LIKE 'locked%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_pg, 0);
    build.rollback().await.unwrap();
    replay_until_empty(&d).await;
    let in_pg: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id LIKE 'locked%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_pg, 5, "replayed once the lock is gone");
}

/// Verify while writes never stop, in `live`: some write is always between
/// PostgreSQL's commit and its landing in SQLite, so two counts taken one
/// after the other rarely agree. A recount that misses takes the order lock
/// exclusively for its counts (writers wait that long, none is between the
/// sides), so the counts add up every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_counts_add_up_under_steady_writes_in_live() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("busy.db");
    let d = dual_on(&path, &db.settings, Stage::Live).await;
    d.upsert_profile(&profile("busy")).await.unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (d, stop) = (d.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                d.save_tweets("busy", &[tweet(&format!("b{w}-{i}"), "steady")])
                    .await
                    .unwrap();
            }
            i
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let mut vo = cutover::verify::VerifyOptions::new(&path, db.settings.clone());
        vo.tables = Some(vec!["tweets".into()]);
        let report = cutover::verify::verify(&vo).await.unwrap();
        let t = &report.tables[0];
        assert_eq!(
            t.unaccounted_rows, 0,
            "round {round}: {:?}",
            t.count_problem
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 0);
}

/// A write of several rows whose copy meets its table locked against
/// writes (as a backfill's plain index build locks it) waits out the lock
/// timeout once: the copy together marks the table busy, and the rows go
/// to the outbox instead of each being tried again, one by one, behind the
/// same lock. Each wait is seen from PostgreSQL's side: a transaction of
/// the store's waiting for the table's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_of_several_rows_waits_for_a_locked_table_once() {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    // A long lock timeout: each wait is surely seen by the watcher below.
    let config = DualConfig {
        copy_lock_timeout: Duration::from_secs(1),
        ..DualConfig::default()
    };
    let d = dual_with(&dir.file("t.db"), &db.settings, Stage::DualWrite, config).await;
    d.upsert_profile(&profile("lk")).await.unwrap();
    let pool = db.pool().await;
    let mut build = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE tweets IN SHARE MODE")
        .execute(&mut *build)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut waiting = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<String> = sqlx::query_scalar(
                    "SELECT virtualtransaction FROM pg_locks
                     WHERE relation = 'tweets'::regclass AND NOT granted
                       AND database = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                waiting.extend(now);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            waiting.len()
        })
    };
    let tweets: Vec<NewTweet> = (0..5)
        .map(|k| tweet(&format!("lk-t{k}"), "behind a lock"))
        .collect();
    d.save_tweets("lk", &tweets).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let waits = watcher.await.unwrap();
    let c = d.counters();
    assert_eq!(waits, 1, "transactions that waited for the lock; {c:?}");
    assert_eq!(
        (
            c.copies_one_by_one,
            c.secondary_deferred,
            c.secondary_failures,
            c.failed_calls
        ),
        (1, 5, 0, 0),
        "{c:?}"
    );
    build.rollback().await.unwrap();
    replay_until_empty(&d).await;
    let in_pg: i64 = sqlx::query_scalar("SELECT count(*) FROM tweets WHERE user_id = 'lk'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_pg, 5, "replayed once the lock is gone");
}
