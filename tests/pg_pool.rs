//! The plan's "verify connection pool behavior": `PgStore` honours the pool
//! size and the acquire timeout, reports exhaustion as `Error::PoolTimeout`
//! with the configured limits, recovers as soon as a connection is free, and
//! queues (rather than fails) more concurrent calls than connections when the
//! timeout allows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use cutover::{Backend, Error, NewTweet, PgStore, ScrapedProfile, Store};

async fn store_with(db: &TestDb, max: u32, timeout: Duration) -> PgStore {
    let mut settings = db.settings.clone();
    settings.pool.max_connections = max;
    settings.pool.min_connections = 0;
    settings.pool.acquire_timeout = timeout;
    PgStore::connect(&settings).await.expect("connect")
}

fn profile(i: usize) -> ScrapedProfile {
    ScrapedProfile {
        id: format!("u{i}"),
        username: format!("user{i}"),
        profile_data: Some(serde_json::json!({ "n": i })),
        profile_picture_url: None,
        scraped_at: cutover::model::now(),
    }
}

#[tokio::test]
async fn exhausted_pool_times_out_then_recovers() {
    let db = TestDb::migrated().await;
    let store = store_with(&db, 2, Duration::from_millis(300)).await;

    let first = store.pool().acquire().await.expect("first connection");
    let mut second = store
        .pool()
        .begin()
        .await
        .expect("second connection, in a transaction");
    sqlx::query("SELECT 1").execute(&mut *second).await.unwrap();

    let err = store
        .get_user("nobody")
        .await
        .expect_err("no connection is free");
    match err {
        Error::PoolTimeout {
            backend,
            waited_ms,
            max_connections,
        } => {
            assert_eq!(backend, Backend::Postgres);
            assert_eq!(waited_ms, 300);
            assert_eq!(max_connections, 2);
        }
        other => panic!("expected PoolTimeout, got {other:?}"),
    }
    // Writes go through the same pool and fail the same way, writing nothing.
    let err = store.upsert_profile(&profile(1)).await.unwrap_err();
    assert!(matches!(err, Error::PoolTimeout { .. }), "{err:?}");
    assert!(err.is_unavailable());

    drop(first);
    assert_eq!(
        store.get_user("u1").await.expect("a connection is free"),
        None
    );
    let u = store.upsert_profile(&profile(1)).await.expect("write");
    assert_eq!(u.id, "u1");

    second.rollback().await.unwrap();
    assert!(store.get_user("u1").await.unwrap().is_some());
}

#[tokio::test]
async fn more_concurrent_calls_than_connections_all_succeed() {
    let db = TestDb::migrated().await;
    let store = Arc::new(store_with(&db, 2, Duration::from_secs(30)).await);
    const N: usize = 24;

    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.upsert_profile(&profile(i)).await?;
            let tweets: Vec<NewTweet> = (0..5)
                .map(|k| NewTweet {
                    id: format!("t{i}_{k}"),
                    text: format!("tweet {k} of user {i}"),
                    created_at: cutover::model::now(),
                    url: None,
                    is_reply: Some(false),
                    metadata: None,
                })
                .collect();
            store.save_tweets(&format!("u{i}"), &tweets).await?;
            store.count_tweets(&format!("u{i}")).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let n = t
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(n, 5);
    }
    assert!(
        store.pool().size() <= 2,
        "the pool never grew past its limit"
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM tweets")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(total, (N * 5) as i64);
}
