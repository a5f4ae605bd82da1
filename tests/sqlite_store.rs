//! `SqliteStore` on real legacy files: schema creation, leaving an existing
//! file's schema alone, reading values in every legacy form, and naming the
//! table, key and column of a value that does not convert.

mod common;

use chrono::{TimeZone, Utc};
use cutover::convert::RejectReason;
use cutover::{Error, SqliteStore, Store};
use rusqlite::Connection;
use serde_json::json;

/// `sqlite_master` as (type, name, tbl_name, sql), in a stable order.
fn schema(path: &std::path::Path) -> Vec<(String, String, String, Option<String>)> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Runs SQL on the store's own connection, as the legacy application would.
async fn legacy_sql(store: &SqliteStore, sql: &'static str) {
    store
        .connection()
        .call(move |c| c.execute_batch(sql))
        .await
        .unwrap();
}

#[tokio::test]
async fn open_creates_the_legacy_schema() {
    let dir = common::TempDir::new();
    let path = dir.file("new.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let (mode, fks): (String, i64) = store
        .connection()
        .call(|c| {
            let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let fks = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            Ok::<_, rusqlite::Error>((mode, fks))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(fks, 0, "foreign keys stay off, as the legacy app ran");

    let got = schema(&path);
    let tables: Vec<&str> = got
        .iter()
        .filter(|(t, n, ..)| t == "table" && !n.starts_with("sqlite_"))
        .map(|(_, n, ..)| n.as_str())
        .collect();
    let mut want: Vec<&str> = cutover::tables::ALL.iter().map(|t| t.name).collect();
    want.sort();
    assert_eq!(tables, want);
    assert!(got
        .iter()
        .any(|(t, n, ..)| t == "index" && n == "idx_tweets_user_created"));

    // The same schema as the legacy application's own script makes.
    let reference = dir.file("reference.db");
    Connection::open(&reference)
        .unwrap()
        .execute_batch(cutover::sqlite::LEGACY_SCHEMA)
        .unwrap();
    assert_eq!(got, schema(&reference));
}

#[tokio::test]
async fn opening_an_existing_file_leaves_its_schema_alone() {
    let dir = common::TempDir::new();
    let path = dir.file("legacy.db");
    {
        // A legacy file that drifted: an index dropped, an extra table and
        // column added by hand. The store must not "repair" any of it.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
        c.execute_batch(
            "DROP INDEX idx_tweets_created;
             ALTER TABLE users ADD COLUMN notes TEXT;
             CREATE TABLE app_settings (k TEXT PRIMARY KEY, v TEXT);
             INSERT INTO users (id, username) VALUES ('u1', 'alice');",
        )
        .unwrap();
    }
    let before = schema(&path);
    let store = SqliteStore::open(&path).await.unwrap();
    let u = store.get_user("u1").await.unwrap().unwrap();
    assert_eq!(u.username, "alice");
    drop(store);
    assert_eq!(schema(&path), before);
}

#[tokio::test]
async fn legacy_values_in_every_form_read_and_order_by_instant() {
    let dir = common::TempDir::new();
    let store = SqliteStore::open(dir.file("t.db")).await.unwrap();
    // Four timestamp forms on one timeline. As SQL compares them (integer <
    // text, 'Wed…' > '2…') the order would be wrong; the store orders instants.
    legacy_sql(
        &store,
        r#"
        INSERT INTO users (id, username, profile_data, last_scraped, created_at)
            VALUES ('u1', 'alice', '{"bio":"hi"}', 1700000000000, '2023-11-01 10:00:00');
        INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata, created_in_db)
        VALUES
            ('t-millis', 'u1', 'millis', 1700000300000, NULL, 'true', '{"likes":3}', '2023-11-14 22:20:00'),
            ('t-twitter', 'u1', 'twitter', 'Tue Nov 14 22:15:00 +0000 2023', NULL, '1', NULL, NULL),
            ('t-sql', 'u1', 'sql', '2023-11-14 22:16:40', NULL, 0, '[1,2]', NULL),
            ('t-iso', 'u1', 'iso', '2023-11-14T22:17:30.500Z', NULL, 1, NULL, NULL);
        "#,
    )
    .await;

    let u = store.get_user("u1").await.unwrap().unwrap();
    assert_eq!(u.profile_data, Some(json!({"bio": "hi"})));
    assert_eq!(
        u.last_scraped,
        Some(Utc.timestamp_millis_opt(1_700_000_000_000).unwrap())
    );
    assert_eq!(
        u.created_at,
        Some(Utc.with_ymd_and_hms(2023, 11, 1, 10, 0, 0).unwrap())
    );

    let t = store.get_tweet("t-millis").await.unwrap().unwrap();
    assert_eq!(
        t.created_at,
        Utc.timestamp_millis_opt(1_700_000_300_000).unwrap()
    );
    assert_eq!(t.is_reply, Some(true));
    assert_eq!(t.metadata, Some(json!({"likes": 3})));
    let t = store.get_tweet("t-twitter").await.unwrap().unwrap();
    assert_eq!(
        t.created_at,
        Utc.with_ymd_and_hms(2023, 11, 14, 22, 15, 0).unwrap()
    );
    assert_eq!(t.is_reply, Some(true));
    assert_eq!(
        store.get_tweet("t-sql").await.unwrap().unwrap().is_reply,
        Some(false)
    );

    let ids: Vec<String> = store
        .timeline("u1", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t-millis", "t-iso", "t-sql", "t-twitter"]);
    // The cursor pages across forms too.
    let first = store.timeline("u1", 2, None).await.unwrap();
    let cursor = cutover::TimelineCursor::after(first.last().unwrap());
    let rest: Vec<String> = store
        .timeline("u1", 10, Some(&cursor))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(rest, ["t-sql", "t-twitter"]);
}

#[tokio::test]
async fn writes_use_the_canonical_forms() {
    let dir = common::TempDir::new();
    let store = SqliteStore::open(dir.file("w.db")).await.unwrap();
    store
        .upsert_profile(&cutover::ScrapedProfile {
            id: "u1".into(),
            username: "alice".into(),
            profile_data: Some(json!({"a": 1})),
            profile_picture_url: None,
            scraped_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
        })
        .await
        .unwrap();
    store
        .save_tweets(
            "u1",
            &[cutover::NewTweet {
                id: "t1".into(),
                text: "hello".into(),
                created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                url: None,
                is_reply: Some(true),
                metadata: Some(json!({"k": [1, 2]})),
            }],
        )
        .await
        .unwrap();
    let (scraped, created, reply, reply_type, meta): (String, String, i64, String, String) = store
        .connection()
        .call(|c| {
            c.query_row(
                "SELECT u.last_scraped, t.created_at, t.is_reply, typeof(t.is_reply), t.metadata \
                     FROM users u JOIN tweets t ON t.user_id = u.id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
        })
        .await
        .unwrap();
    assert_eq!(scraped, "2023-11-14T22:13:20.123456Z");
    assert_eq!(created, "2023-11-14T22:13:20.000000Z");
    assert_eq!((reply, reply_type.as_str()), (1, "integer"));
    assert_eq!(meta, r#"{"k":[1,2]}"#);
}

#[tokio::test]
async fn a_bad_value_names_table_key_and_column() {
    let dir = common::TempDir::new();
    let store = SqliteStore::open(dir.file("bad.db")).await.unwrap();
    legacy_sql(
        &store,
        r#"
        INSERT INTO users (id, username) VALUES ('u1', 'alice');
        INSERT INTO tweets (id, user_id, text, created_at, metadata)
            VALUES ('t-bad', 'u1', 'x', '2023-11-14 22:16:40', '{"likes":');
        INSERT INTO analysis_queue (user_id, status, total_chunks, created_at)
            VALUES ('u1', 'pending', 1, 'yesterday');
        "#,
    )
    .await;
    match store.get_tweet("t-bad").await {
        Err(Error::InvalidValue {
            table,
            key,
            column,
            reason,
            detail,
        }) => {
            assert_eq!(
                (table, key.as_str(), column),
                ("tweets", "t-bad", "metadata")
            );
            assert_eq!(reason, RejectReason::InvalidJson);
            assert!(detail.contains("likes"), "{detail}");
        }
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    // The integer key of a serial table is named too.
    match store.get_job(1).await {
        Err(Error::InvalidValue {
            table,
            key,
            column,
            reason,
            ..
        }) => {
            assert_eq!(
                (table, key.as_str(), column),
                ("analysis_queue", "1", "created_at")
            );
            assert_eq!(reason, RejectReason::InvalidTimestamp);
        }
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    // A job the backfill would reject is never claimed (list reads skip
    // rows that cannot be converted exactly, as PostgreSQL never holds them).
    assert_eq!(store.claim_next_job().await.unwrap(), None);
    // Nothing was written.
    let status: String = store
        .connection()
        .call(|c| c.query_row("SELECT status FROM analysis_queue", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(status, "pending");
}

#[tokio::test]
async fn claims_follow_instants_across_legacy_forms() {
    let dir = common::TempDir::new();
    let store = SqliteStore::open(dir.file("q.db")).await.unwrap();
    // Same priority; by instant job 2 (epoch millis, 2023) is oldest, then job
    // 3 (Twitter string, 2024), then job 1 (SQL form, 2025). As text/number
    // SQL would pick job 2 first as well, but then job 1 before job 3.
    legacy_sql(
        &store,
        r#"
        INSERT INTO users (id, username) VALUES ('u1', 'alice');
        INSERT INTO analysis_queue (job_id, user_id, status, priority, total_chunks, created_at) VALUES
            (1, 'u1', 'pending', 5, 1, '2025-01-01 00:00:00'),
            (2, 'u1', 'pending', 5, 1, 1700000000000),
            (3, 'u1', 'pending', 5, 1, 'Mon Jan 01 00:00:00 +0000 2024'),
            (4, 'u1', 'pending', NULL, 1, 1);
        "#,
    )
    .await;
    let mut order = Vec::new();
    while let Some(j) = store.claim_next_job().await.unwrap() {
        order.push(j.job_id);
    }
    assert_eq!(order, [2, 3, 1, 4]);
}
