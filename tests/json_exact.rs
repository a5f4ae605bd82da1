//! JSON judged as `jsonb` judges it and kept exact on every path (issue
//! findings 1 and 2): a number out of PostgreSQL's numeric range is one
//! rejected row, not a stopped migration, and audit predicts it; numbers
//! keep every digit through the backfill, verify, `verify --repair` and
//! export, and a rounded number is a divergence.

mod common;

use std::path::Path;

use common::{TempDir, TestDb};
use cutover::audit;
use cutover::backfill::{self, BackfillOptions};
use cutover::convert::RejectReason;
use cutover::row::Policy;
use cutover::verify::{verify, VerifyOptions};

/// (tweet id, metadata text, copied?)
const TWEETS: &[(&str, &str, bool)] = &[
    ("t_tiny", r#"{"e": 1e-20000}"#, false),
    ("t_huge", r#"{"e": 1e131072}"#, false),
    ("t_scale", r#"{"e": 1.5e-16383}"#, false),
    ("t_edge_small", r#"{"e": 1e-16383}"#, true),
    ("t_edge_big", r#"{"e": 9.99e131071}"#, true),
    (
        "t_exact",
        r#"{"n": 123456789012345678901234567890, "f": 0.1000000000000000055511151231257827, "t": 1e-400, "x": 1E+2}"#,
        true,
    ),
];

fn legacy(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    c.execute(
        "INSERT INTO users (id, username, last_scraped) VALUES ('u1', 'one', '2024-01-01 00:00:00')",
        [],
    )
    .unwrap();
    for (id, meta, _) in TWEETS {
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at, metadata) VALUES (?1, 'u1', 'x', '2024-01-01 00:00:00', ?2)",
            (id, meta),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_out_of_jsonb_range_are_rejected_rows_and_the_rest_stay_exact() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    legacy(&path);
    let pool = db.pool().await;

    // Audit predicts what the backfill does.
    let report = audit::audit(&path).unwrap();
    let tweets = report.tables.iter().find(|t| t.table == "tweets").unwrap();
    let predicted = tweets
        .predicted
        .iter()
        .find(|p| p.policy == "reject-row")
        .unwrap();
    let bad = TWEETS.iter().filter(|t| !t.2).count() as u64;
    assert_eq!(predicted.rejected, bad, "{predicted:?}");
    assert_eq!(
        predicted.rejected_by_reason.get("invalid_json"),
        Some(&bad),
        "{predicted:?}"
    );

    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.policy = Policy::RejectRow;
    o.defer_indexes = true;
    o.defer_min_rows = 0;
    // The file alone, no application: the stage stays `off`.
    o.force = true;
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let t = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(t.copied, TWEETS.len() as u64 - bad, "{t:?}");
    assert_eq!(
        t.rejected.get(&RejectReason::InvalidJson),
        Some(&bad),
        "{t:?}"
    );
    let invalid_indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
         WHERE c.relname = 'tweets' AND NOT i.indisvalid",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(invalid_indexes, 0);

    // Rejected with the reason, the offending number named.
    let details: Vec<(String, String)> = sqlx::query_as(
        "SELECT row_key, detail FROM cutover.rejects WHERE table_name = 'tweets' ORDER BY row_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(details.len() as u64, bad);
    for (k, d) in &details {
        assert!(d.contains("numeric"), "{k}: {d}");
    }

    // Copied exactly: PostgreSQL holds every digit.
    let text = |k: &'static str, f: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT (metadata -> $2)::text FROM tweets WHERE id = $1",
            )
            .bind(k)
            .bind(f)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(text("t_exact", "n").await, "123456789012345678901234567890");
    assert_eq!(
        text("t_exact", "f").await,
        "0.1000000000000000055511151231257827"
    );
    assert_eq!(
        text("t_exact", "t").await,
        format!("0.{}1", "0".repeat(399))
    );
    assert_eq!(text("t_exact", "x").await, "100");

    let mut vo = VerifyOptions::new(&path, db.settings.clone());
    vo.settle = std::time::Duration::ZERO;
    let r = verify(&vo).await.unwrap();
    assert!(r.clean, "{r:#?}");

    // A rounded number is a divergence (as a float it would compare equal)…
    sqlx::query(
        "UPDATE tweets SET metadata = jsonb_set(metadata, '{n}', '1.2345678901234568e+29') WHERE id = 't_exact'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = verify(&vo).await.unwrap();
    assert!(!r.clean, "a rounded number must be a divergence: {r:#?}");

    // …and the repair writes the exact one back.
    vo.repair = true;
    let r = verify(&vo).await.unwrap();
    assert!(r.clean, "{r:#?}");
    assert_eq!(text("t_exact", "n").await, "123456789012345678901234567890");
    assert_eq!(
        text("t_exact", "f").await,
        "0.1000000000000000055511151231257827"
    );

    // The export keeps every digit too.
    let out = dir.file("export.db");
    cutover::export::export(&db.settings, &out, false)
        .await
        .unwrap();
    let c = rusqlite::Connection::open(&out).unwrap();
    let meta: String = c
        .query_row(
            "SELECT metadata FROM tweets WHERE id = 't_exact'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(meta.contains("123456789012345678901234567890"), "{meta}");
    assert!(
        meta.contains("0.1000000000000000055511151231257827"),
        "{meta}"
    );
}
