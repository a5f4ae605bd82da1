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
use sqlx::Row;

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

fn tweet(id: String, text: String) -> NewTweet {
    NewTweet {
        id,
        text,
        created_at: cutover::model::now(),
        url: None,
        is_reply: None,
        metadata: None,
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

/// A write that fails inside its transaction (after BEGIN, before COMMIT)
/// rolls back before its connection serves anyone else: with one
/// connection and change capture on, the next statement on it runs outside
/// any transaction (the check that fails if the rollback is skipped), the
/// next writes succeed and report exactly their own keys, and the failed
/// ones left no row and no outbox entry (they fail before writing, so those
/// last checks guard the outcome, not the rollback).
#[tokio::test]
async fn a_failed_write_rolls_back_before_its_connection_is_reused() {
    let db = TestDb::migrated().await;
    let store = store_with(&db, 1, Duration::from_secs(5)).await;
    store.set_outbox(true);
    store.upsert_profile(&profile(1)).await.unwrap();
    for round in 0..20 {
        // Same username, other id: refused inside the transaction.
        let mut taken = profile(1);
        taken.id = format!("intruder{round}");
        let err = store.upsert_profile(&taken).await.unwrap_err();
        assert!(matches!(err, Error::Duplicate { .. }), "{err:?}");
        // A tweet for a user that does not exist: refused after BEGIN too.
        let err = store
            .save_tweets("ghost", &[tweet(format!("t{round}"), "x".into())])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::NotFound { .. } | Error::MissingParent { .. }),
            "{err:?}"
        );
        // The one connection is free again only once rolled back; outside a
        // transaction block each statement has its own start time.
        // (One simple-protocol message: its statement starts the implicit
        // transaction.)
        let row = sqlx::raw_sql("SELECT (now() = statement_timestamp())::text")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let fresh = row.get::<String, _>(0) == "true";
        assert!(
            fresh,
            "the connection came back inside the failed transaction"
        );
        let (res, captured) =
            cutover::changes::capture(store.upsert_profile(&profile(100 + round))).await;
        res.unwrap();
        let keys: Vec<_> = captured
            .changes
            .iter()
            .map(|c| (c.table, c.key.clone()))
            .collect();
        assert_eq!(keys, vec![("users", format!("u{}", 100 + round))]);
        let carried = &captured.carried[&captured.changes[0]];
        assert!(
            carried.image.is_some(),
            "the committed image travels with the key"
        );
    }
    let pool = db.pool().await;
    let intruders: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id LIKE 'intruder%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(intruders, 0);
    let entries: Vec<String> = sqlx::query_scalar(
        "SELECT row_key FROM cutover.outbox WHERE row_key LIKE 'intruder%' OR row_key LIKE 't%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        entries.is_empty(),
        "failed writes left outbox entries: {entries:?}"
    );
    let tx_open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tx_open, 0, "a connection was left inside a transaction");
}

/// A batch larger than the capture notes' limit (64 kB of images) still
/// reports every row it changed, in order: the first ones with their
/// committed images, the rest without (the apply reads those back).
#[tokio::test]
async fn a_large_batch_reports_every_row() {
    let db = TestDb::migrated().await;
    let store = store_with(&db, 2, Duration::from_secs(5)).await;
    store.set_outbox(true);
    store.upsert_profile(&profile(1)).await.unwrap();
    let tweets: Vec<NewTweet> = (0..300)
        .map(|i| tweet(format!("big{i:03}"), "x".repeat(1000)))
        .collect();
    let (res, captured) = cutover::changes::capture(store.save_tweets("u1", &tweets)).await;
    assert_eq!(res.unwrap(), 300);
    let keys: Vec<&str> = captured.changes.iter().map(|c| c.key.as_str()).collect();
    let want: Vec<String> = (0..300).map(|i| format!("big{i:03}")).collect();
    assert_eq!(keys, want);
    let carried = captured.carried.len();
    assert!(
        (10..300).contains(&carried),
        "the first rows carry their images, the rest are read back: {carried}"
    );
    for c in &captured.changes[..carried] {
        assert!(captured.carried[c].image.is_some(), "{c:?}");
    }
    // A small write right after on the same pool is noted in full again.
    let (res, captured) = cutover::changes::capture(store.upsert_profile(&profile(2))).await;
    res.unwrap();
    assert_eq!(captured.changes.len(), 1);
    assert_eq!(captured.carried.len(), 1);
}

/// A pooled connection is pinged before use only once it has been idle a
/// while (a call in steady use costs one round trip less); one cut while
/// idle (a server restart or a network cut, seen from the pool) is found by
/// that ping and replaced before any call sees it.
#[tokio::test]
async fn a_connection_cut_while_idle_is_replaced_before_a_call_sees_it() {
    let db = TestDb::migrated().await;
    let store = store_with(&db, 2, Duration::from_secs(5)).await;
    store.upsert_profile(&profile(1)).await.unwrap();
    let admin = db.pool().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .execute(&admin)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..4 {
        let u = store
            .get_user("u1")
            .await
            .expect("no call sees the cut connection");
        assert!(u.is_some());
    }
}

/// A call that finished keeps its connection warm for the next call (no
/// ping on its way back to the pool); a call that failed gives its
/// connection back to the pool; and a connection left warm goes back to the
/// pool within about a second, so the pool's other users never wait for it
/// beyond that.
#[tokio::test]
async fn a_warm_connection_serves_the_next_call_and_goes_back_to_the_pool_when_idle() {
    let db = TestDb::migrated().await;
    let store = store_with(&db, 2, Duration::from_secs(5)).await;
    store.upsert_profile(&profile(1)).await.unwrap();
    assert_eq!(
        store.warm_connections(),
        1,
        "the finished write's connection"
    );
    assert!(store.get_user("u1").await.unwrap().is_some());
    assert_eq!(
        store.warm_connections(),
        1,
        "the read took it and gave it back"
    );
    assert_eq!(store.pool().size(), 1, "one connection served both calls");

    // A call that fails returns its connection to the pool, not warm.
    let clash = ScrapedProfile {
        id: "u2".into(),
        ..profile(1)
    };
    let err = store.upsert_profile(&clash).await.unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err:?}");
    assert_eq!(store.warm_connections(), 0);

    // Warm again; then the pool's other users take both connections: the
    // one kept warm comes back to the pool for the second of them.
    store.get_user("u1").await.unwrap();
    assert_eq!(store.warm_connections(), 1);
    let first = store.pool().acquire().await.expect("the idle connection");
    // Within the pool's 5 s acquire timeout, else this fails.
    let second = store
        .pool()
        .acquire()
        .await
        .expect("the warm connection goes back to the pool");
    assert_eq!(store.warm_connections(), 0);
    drop((first, second));
}

/// A store whose connection waits warm can be dropped outside the runtime
/// it was made on, and after that runtime is gone (an embedder dropping
/// its store after `block_on` returned): nothing panics, and the
/// connection is closed.
#[test]
fn a_store_dropped_outside_its_runtime_lets_its_warm_connection_go() {
    for shut_down_first in [false, true] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, store) = rt.block_on(async {
            let db = TestDb::migrated().await;
            let store = store_with(&db, 2, Duration::from_secs(5)).await;
            store.upsert_profile(&profile(1)).await.unwrap();
            assert_eq!(store.warm_connections(), 1);
            (db, store)
        });
        if shut_down_first {
            drop(rt);
            drop(store);
        } else {
            drop(store);
            drop(rt);
        }
        drop(db);
    }
}
