//! A write whose PostgreSQL COMMIT succeeded but whose answer an outage cut
//! (docs/DESIGN.md §3): the caller is told the outcome is unknown, SQLite never
//! runs the write a second time (no silent duplicate), the ids SQLite hands
//! out during the fallback do not collide with the ones PostgreSQL used,
//! and after the return the write is on both sides exactly once.
//!
//! Its own test binary: the failpoint is armed for the whole process.

mod common;

use std::time::{Duration, Instant};

use cutover::dual::DualConfig;
use cutover::dual::DualStore;
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{Error, NewJob, PgStore, ScrapedProfile, SqliteStore, Store};

fn profile(id: &str) -> ScrapedProfile {
    ScrapedProfile {
        id: id.to_string(),
        username: format!("name_{id}"),
        profile_data: None,
        profile_picture_url: None,
        scraped_at: cutover::model::now(),
    }
}

fn job(user: &str) -> NewJob {
    NewJob {
        user_id: user.into(),
        priority: 0,
        chunk_tweet_counts: vec![10, 20],
    }
}

/// (job_id, user_id) of every job in the SQLite file.
fn sqlite_jobs(path: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT job_id, user_id FROM analysis_queue ORDER BY job_id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

async fn pg_jobs(pool: &sqlx::PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT job_id::bigint, user_id FROM analysis_queue ORDER BY job_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_cut_by_an_outage_is_never_run_twice_nor_collides() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // The first PostgreSQL COMMIT through the dual store succeeds, then
    // waits 1.5 s before its answer is reported lost; PostgreSQL goes away
    // meanwhile. (Armed before anything runs: a failpoint reads its
    // setting once.)
    std::env::set_var("CUTOVER_FAILPOINT_PAUSE", "pg.after_commit=1500");
    std::env::set_var("CUTOVER_FAILPOINT_CUT", "pg.after_commit");
    let dir = common::TempDir::new();
    let path = dir.file("t.db");
    let mut server = cutover::pgserver::PgServer::start_new().unwrap();
    let mut settings = server.settings("postgres");
    settings.pool.acquire_timeout = Duration::from_millis(500);

    // The users and an earlier job are written while SQLite is
    // authoritative (the copies to PostgreSQL are no store commits), so the
    // first commit to meet the failpoint is the one under test.
    let s = SqliteStore::open(&path).await.unwrap();
    let p = PgStore::connect(&settings).await.unwrap();
    cutover::pg::migrate(p.pool()).await.unwrap();
    let watch = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(p.pool().connect_options().as_ref().clone())
        .await
        .unwrap();
    let config = DualConfig {
        shadow_sample_rate: 0.0,
        ..DualConfig::default()
    };
    let d = DualStore::forced(s, p, Stage::DualWrite, config)
        .await
        .unwrap();
    for u in ["cut", "after"] {
        d.upsert_profile(&profile(u)).await.unwrap();
    }
    d.enqueue_job(&job("after")).await.unwrap();
    d.switch(Stage::Live).await.unwrap();

    let writer = {
        let d = d.clone();
        tokio::spawn(async move { d.enqueue_job(&job("cut")).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let committed = loop {
        let jobs = pg_jobs(&watch).await;
        if let Some((id, _)) = jobs.iter().find(|(_, u)| u == "cut") {
            break *id;
        }
        assert!(Instant::now() < deadline, "the write never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    watch.close().await;
    server.stop().unwrap();

    let r = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the cut write answers")
        .unwrap();
    assert!(
        matches!(r, Err(Error::OutcomeUnknown { .. })),
        "the caller is told the outcome is unknown: {r:?}"
    );
    assert!(d.routing().fallback, "PostgreSQL is gone: SQLite stands in");
    assert!(
        !sqlite_jobs(&path).iter().any(|(_, u)| u == "cut"),
        "SQLite did not run the write a second time"
    );

    // A new job during the fallback: SQLite's id must not be the one
    // PostgreSQL used for the cut write.
    let during = d.enqueue_job(&job("after")).await.unwrap();
    assert_ne!(
        i64::from(during.job.job_id),
        committed,
        "an id handed out by SQLite during the fallback collides with the one PostgreSQL committed"
    );

    server.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.routing().fallback {
        assert!(Instant::now() < deadline, "never returned to PostgreSQL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.settle().await;
    let pool = d.pg().pool().clone();
    let on_pg = pg_jobs(&pool).await;
    let on_sqlite = sqlite_jobs(&path);
    assert_eq!(on_pg, on_sqlite, "both sides hold the same jobs");
    let cut: Vec<_> = on_pg.iter().filter(|(_, u)| u == "cut").collect();
    assert_eq!(
        cut,
        vec![&(committed, "cut".to_string())],
        "the cut write exactly once, with PostgreSQL's id"
    );
    assert_eq!(
        on_pg.len(),
        3,
        "the earlier job, the cut one, the fallback's: {on_pg:?}"
    );
    let conflicts: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.conflicts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        conflicts, 0,
        "no conflict: the two writes touched different rows"
    );
    assert_eq!(d.counters().unknown_commits, 1);
    let (s_rows, p_rows) = common::snapshot(&d).await;
    for ((t, s), (_, p)) in s_rows.iter().zip(&p_rows) {
        assert_eq!(s, p, "{t}: every row the same on both sides");
    }
}
