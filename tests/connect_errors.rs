//! Connection errors say what failed, within the connect timeout (issue
//! finding 11): refused, unknown host, missing database (with the fix), for
//! the backfill, verify, export and the store alike.

mod common;

use std::time::{Duration, Instant};

use cutover::settings::PgSettings;

/// Runs every command against `settings` and returns their errors.
async fn errors(settings: &PgSettings) -> Vec<(&'static str, String, Duration)> {
    let dir = common::TempDir::new();
    let path = dir.file("legacy.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    drop(c);
    let mut out = Vec::new();
    let t = Instant::now();
    let o = cutover::backfill::BackfillOptions::new(&path, settings.clone());
    let e = cutover::backfill::run(o, std::future::pending())
        .await
        .unwrap_err();
    out.push(("backfill", e.to_string(), t.elapsed()));
    let t = Instant::now();
    let mut vo = cutover::verify::VerifyOptions::new(&path, settings.clone());
    vo.settle = Duration::ZERO;
    let e = cutover::verify::verify(&vo).await.unwrap_err();
    out.push(("verify", e.to_string(), t.elapsed()));
    let t = Instant::now();
    let e = cutover::export::export(settings, &dir.file("out.db"), false)
        .await
        .unwrap_err();
    out.push(("export", e.to_string(), t.elapsed()));
    let t = Instant::now();
    let e = cutover::PgStore::connect(settings).await.err().unwrap();
    out.push(("store", e.to_string(), t.elapsed()));
    out
}

fn check(what: &str, errs: &[(&'static str, String, Duration)], wanted: &[&str]) {
    for (cmd, e, took) in errs {
        eprintln!("{what}: {cmd} failed after {took:?}: {e}");
        for w in wanted {
            assert!(e.contains(w), "{what}: {cmd}: {e:?} should say {w:?}");
        }
        assert!(!e.contains("pool of 0"), "{cmd}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_unknown_host_and_missing_database_are_named() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let refused = PgSettings::from_url(&format!("postgres://postgres@127.0.0.1:{port}/x")).unwrap();
    check(
        "refused",
        &errors(&refused).await,
        &["connection refused", &port.to_string()],
    );

    let unknown = PgSettings::from_url("postgres://postgres@no-such-host.invalid:5432/x").unwrap();
    check(
        "unknown host",
        &errors(&unknown).await,
        &["unknown host", "no-such-host.invalid"],
    );

    let db = common::TestDb::new().await;
    let missing = db.settings.with_database("cutover_no_such_database");
    check(
        "missing database",
        &errors(&missing).await,
        &["cutover_no_such_database", "does not exist", "createdb"],
    );
}

/// A PostgreSQL restart mid-backfill: the run waits for the server and
/// resumes from its checkpoint; every row is accounted for, verify clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_waits_out_a_postgresql_restart_and_resumes() {
    let dir = common::TempDir::new();
    let path = dir.file("legacy.db");
    cutover::generate::generate(
        &path,
        &cutover::generate::GenerateOptions {
            users: 100,
            tweets: 12_000,
            dirty: 0.0,
            seed: 3,
        },
    )
    .unwrap();
    let mut server = cutover::pgserver::PgServer::start_new().unwrap();
    let settings = server.settings("postgres");
    let store = cutover::PgStore::connect(&settings).await.unwrap();
    cutover::pg::migrate(store.pool()).await.unwrap();
    drop(store);

    let mut o = cutover::backfill::BackfillOptions::new(&path, settings.clone());
    o.force = true;
    o.batch_size = 500;
    // About 4 s of copying: the restart lands mid-run.
    o.max_rows_per_sec = Some(4_000);
    o.postgres_wait = Duration::from_secs(30);
    let run = tokio::spawn(cutover::backfill::run(o, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!run.is_finished(), "the restart must land mid-run");
    server.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start().unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the backfill ends")
        .unwrap()
        .expect("the backfill waited out the restart");
    assert!(summary.reconciled(), "{summary:#?}");
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(
        tweets.total_copied + tweets.total_rejected,
        12_000,
        "{tweets:?}"
    );
    let mut vo = cutover::verify::VerifyOptions::new(&path, settings.clone());
    vo.settle = Duration::ZERO;
    let r = cutover::verify::verify(&vo).await.unwrap();
    assert!(r.clean, "{r:#?}");
}
