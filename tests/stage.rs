//! Stage control: a change made by the CLI reaches a running process within
//! a second; the go-live gates refuse, `--force` overrides; rollback works.

mod common;

use std::time::{Duration, Instant};

use cutover::stage::Stage;
use cutover::{Cutover, CutoverConfig};

fn cli(db: &common::TestDb, sqlite: &std::path::Path, args: &[&str]) -> std::process::Output {
    let url = db.url();
    std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["--postgres", &url, "--sqlite"])
        .arg(sqlite)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flip_reaches_a_running_process_within_a_second() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("t.db");
    let c = Cutover::start(CutoverConfig::new(&path, db.settings.clone()))
        .await
        .unwrap();
    assert_eq!(c.stage(), Stage::Off);

    for (to, name) in [
        (Stage::DualWrite, "dualwrite"),
        (Stage::Shadow, "shadow"),
        (Stage::Off, "off"),
    ] {
        let out = cli(&db, &path, &["stage", "set", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        while c.stage() != to && t.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = t.elapsed();
        assert_eq!(c.stage(), to);
        assert!(seen < Duration::from_secs(1), "{name} seen after {seen:?}");
    }
    let out = cli(&db, &path, &["stage", "get"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "off");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_live_is_gated_and_force_overrides() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("t.db");
    let c = Cutover::start(CutoverConfig::new(&path, db.settings.clone()))
        .await
        .unwrap();
    c.set_stage(Stage::DualWrite, false).await.unwrap();
    c.set_stage(Stage::Shadow, false).await.unwrap();
    let err = c
        .set_stage(Stage::Live, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backfill is not complete") && err.contains("verify"),
        "{err}"
    );
    assert_eq!(c.stage(), Stage::Shadow, "refused move changes nothing");
    let out = cli(&db, &path, &["stage", "set", "live"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    c.set_stage(Stage::Live, true).await.unwrap();
    assert_eq!(c.stage(), Stage::Live);
    let pool = sqlx::PgPool::connect_with(db.settings.connect_options())
        .await
        .unwrap();
    let forced: bool = sqlx::query_scalar("SELECT forced FROM cutover.state")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(forced, "the override is recorded");
    // Rollback needs no gate.
    c.set_stage(Stage::Off, false).await.unwrap();
    assert_eq!(c.stage(), Stage::Off);
    c.shutdown().await;
}

async fn set(pool: &sqlx::PgPool, to: Stage, force: bool) -> cutover::Result<()> {
    cutover::stage::set(
        pool,
        &cutover::stage::Change {
            to,
            force,
            by: "test".into(),
            extra_pending: 0,
        },
    )
    .await
    .map(|_| ())
}

/// The go-live gates count only a verify that covered every table and
/// started after dual writes began; stages move one at a time, and
/// `complete` is left only with --force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_live_gates_cannot_be_passed_by_accident() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let pool = db.pool().await;
    let path = dir.file("legacy.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    c.execute("INSERT INTO users (id, username) VALUES ('u1', 'one')", [])
        .unwrap();
    drop(c);
    let verify = |tables: Option<Vec<String>>| {
        let mut o = cutover::verify::VerifyOptions::new(&path, db.settings.clone());
        o.tables = tables;
        o.settle = Duration::ZERO;
        async move { cutover::verify::verify(&o).await.unwrap() }
    };

    // Skipping stages is refused.
    let e = set(&pool, Stage::Live, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("skips dualwrite, shadow"), "{e}");

    // A clean verify made in `off` (before dual writes began) does not count.
    set(&pool, Stage::DualWrite, false).await.unwrap();
    let o = cutover::backfill::BackfillOptions::new(&path, db.settings.clone());
    cutover::backfill::run(o, std::future::pending())
        .await
        .unwrap();
    set(&pool, Stage::Off, false).await.unwrap();
    assert!(verify(None).await.clean);
    set(&pool, Stage::DualWrite, false).await.unwrap();
    set(&pool, Stage::Shadow, false).await.unwrap();
    let e = set(&pool, Stage::Live, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("started before dual writes began"), "{e}");

    // A verify of one table while another diverges does not count.
    sqlx::query(
        "INSERT INTO tweets (id, user_id, text, created_at) VALUES ('only_pg', 'u1', 'x', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(verify(Some(vec!["users".into()])).await.clean);
    let e = set(&pool, Stage::Live, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("covered only some tables"), "{e}");
    assert!(!verify(None).await.clean, "tweets diverge");
    sqlx::query("DELETE FROM tweets WHERE id = 'only_pg'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(verify(None).await.clean);
    set(&pool, Stage::Live, false).await.unwrap();

    // Leaving `complete` needs --force.
    set(&pool, Stage::Rampdown, false).await.unwrap();
    set(&pool, Stage::Complete, false).await.unwrap();
    let e = set(&pool, Stage::Shadow, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("leaving complete"), "{e}");
    set(&pool, Stage::Shadow, true).await.unwrap();
    assert!(cutover::stage::get(&pool).await.unwrap().forced);
}
