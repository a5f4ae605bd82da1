//! The backfill holds no SQLite lock while a batch loads: the application's
//! inserts, updates and deletes on the very keys a batch is loading go
//! through at once, and none of them is undone or resurrected by the batch.
//!
//! One test walks the three moments a batch can be caught at (gates armed in
//! this process: after the read, before the PostgreSQL commit, after the
//! commit and before the re-check against SQLite). At each, a `dualwrite`
//! application deletes legacy users the batch holds, updates one, deletes
//! and re-creates one, and adds a new one, each call bounded well under the
//! time the batch is held; then the batch goes on, and at the end verify is
//! clean and no deleted row is back in PostgreSQL. The gates are
//! process-wide, so this binary holds this one test.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{Backend, NewTweet, PgStore, ScrapedProfile, SqliteStore, Store};
use serde_json::json;

fn profile(id: &str, bio: &str) -> ScrapedProfile {
    ScrapedProfile {
        id: id.into(),
        username: format!("name-{id}"),
        profile_data: Some(json!({"bio": bio})),
        profile_picture_url: None,
        scraped_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    }
}

/// A call of the application, which must not wait for the paused batch.
async fn call<T>(what: &str, f: impl std::future::Future<Output = cutover::Result<T>>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what}: still waiting after 10 s behind a batch held at its gate"),
    }
}

async fn race_at(point: &str) {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("race.db");
    common::generated(&path, 40, 400, 0.0, 11);
    let d = DualStore::forced(
        SqliteStore::open(&path).await.unwrap(),
        PgStore::connect(&db.settings).await.unwrap(),
        Stage::DualWrite,
        DualConfig::default(),
    )
    .await
    .unwrap();
    let ids: Vec<String> = d
        .sqlite()
        .connection()
        .call(|c| -> cutover::Result<Vec<String>> {
            let mut st = c.prepare("SELECT id FROM users ORDER BY rowid LIMIT 4")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    let (deleted, updated, recreated, deleted2) = (&ids[0], &ids[1], &ids[2], &ids[3]);

    let gate = cutover::failpoint::arm_gate(point);
    let mut opts = cutover::backfill::BackfillOptions::new(&path, db.settings.clone());
    // The users table in one batch: the gate holds every legacy user.
    opts.batch_size = 1000;
    let backfill = tokio::spawn(cutover::backfill::run(opts, std::future::pending()));
    tokio::time::timeout(Duration::from_secs(60), gate.reached())
        .await
        .unwrap_or_else(|_| panic!("{point}: the backfill never reached the gate"));

    // The application, while the batch is held.
    assert!(call("delete a legacy user", d.delete_user(deleted)).await);
    call(
        "update a legacy user",
        d.upsert_profile(&profile(updated, "updated meanwhile")),
    )
    .await;
    assert!(call("delete a legacy user", d.delete_user(recreated)).await);
    call(
        "re-create it",
        d.upsert_profile(&profile(recreated, "re-created meanwhile")),
    )
    .await;
    assert!(call("delete another", d.delete_user(deleted2)).await);
    call(
        "a new user",
        d.upsert_profile(&profile("new-during-batch", "new")),
    )
    .await;
    call(
        "a tweet of the updated user",
        d.save_tweets(
            updated,
            &[NewTweet {
                id: format!("live-{}", point.len()),
                text: "written while the batch loaded".into(),
                created_at: Utc.timestamp_opt(1_700_000_100, 0).unwrap(),
                url: None,
                is_reply: Some(false),
                metadata: Some(json!({"n": 1})),
            }],
        ),
    )
    .await;

    gate.release();
    let summary = tokio::time::timeout(Duration::from_secs(120), backfill)
        .await
        .expect("the backfill ends")
        .unwrap()
        .unwrap();

    // Copies that met the batch's locks wait in the outbox: replay them.
    d.settle().await;
    for _ in 0..50 {
        d.drain(Backend::Sqlite, 1000).await.unwrap();
        if d.outbox_pending().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.outbox_pending().await.unwrap(), 0, "{point}");

    let pool = db.pool().await;
    let back: Vec<(String,)> = sqlx::query_as("SELECT id FROM users WHERE id = ANY($1)")
        .bind(vec![deleted.clone(), deleted2.clone()])
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        back.is_empty(),
        "{point}: deleted users came back: {back:?}"
    );
    let bio: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT profile_data->>'bio' FROM users WHERE id = ANY($1) ORDER BY id = $2",
    )
    .bind(vec![updated.clone(), recreated.clone()])
    .bind(recreated.clone())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        bio,
        vec![
            (Some("updated meanwhile".to_string()),),
            (Some("re-created meanwhile".to_string()),)
        ],
        "{point}"
    );
    pool.close().await;

    let users = summary.tables.iter().find(|t| t.table == "users").unwrap();
    assert_eq!(
        users.deleted_meanwhile, 3,
        "{point}: the three users deleted while their batch loaded: {users:?}"
    );
    assert!(summary.reconciled(), "{point}: {summary:?}");

    let report = cutover::verify::verify(&cutover::verify::VerifyOptions::new(
        &path,
        db.settings.clone(),
    ))
    .await
    .unwrap();
    assert!(
        report.clean,
        "{point}: divergent: {:?}",
        report
            .tables
            .iter()
            .filter(|t| !t.clean())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_the_keys_of_a_loading_batch_neither_wait_nor_come_back() {
    for point in [
        "backfill.after_read",
        "backfill.before_commit",
        "backfill.before_recheck",
    ] {
        race_at(point).await;
    }
}
