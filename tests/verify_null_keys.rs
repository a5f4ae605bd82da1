//! Rows with a NULL primary key (issue 11, finding 3): SQLite allows them on
//! TEXT keys, the backfill rejects them (ledger `row_key` `NULL#rowid=N`,
//! `source_rowid` set). Verify counts them (source = PostgreSQL + rejected),
//! checks each has its reject entry, and `--repair` agrees with plain verify.

mod common;

use std::path::Path;

use common::{TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions};
use cutover::row::Policy;
use cutover::verify::{verify, TableReport, VerifyOptions, VerifyReport};

fn legacy(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA foreign_keys=OFF;").unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    for (id, name) in [("u1", "one"), ("u2", "two")] {
        c.execute(
            "INSERT INTO users (id, username, last_scraped) VALUES (?1, ?2, '2024-01-01 00:00:00')",
            (id, name),
        )
        .unwrap();
    }
    for (id, user) in [
        (Some("t1"), "u1"),
        (None, "u1"),
        (Some("t2"), "u2"),
        (None, "u2"),
    ] {
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at) VALUES (?1, ?2, 'x', '2024-01-01 00:00:00')",
            (id, user),
        )
        .unwrap();
    }
    let nulls: i64 = c
        .query_row("SELECT count(*) FROM tweets WHERE id IS NULL", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(nulls, 2);
}

fn tweets(r: &VerifyReport) -> &TableReport {
    r.tables.iter().find(|t| t.table == "tweets").unwrap()
}

fn opts(path: &Path, db: &TestDb, chunk_rows: i64) -> VerifyOptions {
    let mut o = VerifyOptions::new(path, db.settings.clone());
    o.settle = std::time::Duration::ZERO;
    o.chunk_rows = chunk_rows;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_key_rows_are_counted_checked_and_never_repaired_into_a_clean_run() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    legacy(&path);
    let pool = db.pool().await;

    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.force = true;
    o.policy = Policy::RejectRow;

    backfill::run(o, std::future::pending()).await.unwrap();
    let null_entries: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT source_rowid) FROM cutover.rejects \
         WHERE table_name = 'tweets' AND row_key LIKE 'NULL#%' AND NOT row_copied",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(null_entries, 2);

    // (a) Clean, and the counts add up: 4 = 2 + 2. With one range and with
    // ranges of one key (bounds on either side of the NULL keys).
    for chunk_rows in [1000, 1] {
        let r = verify(&opts(&path, &db, chunk_rows)).await.unwrap();
        let t = tweets(&r);
        assert!(r.clean, "chunk_rows {chunk_rows}: {r:#?}");
        assert_eq!(
            (t.sqlite_rows, t.postgres_rows, t.rejected_rows),
            (4, 2, 2),
            "chunk_rows {chunk_rows}: {t:#?}"
        );
        assert!(t.counts_add_up, "{t:#?}");
        assert!(
            t.rejected.iter().all(|k| k.starts_with("NULL#rowid=")),
            "{t:#?}"
        );
        for t in &r.tables {
            assert!(t.counts_add_up, "{t:#?}");
        }
    }

    // (b) Their reject entries deleted: not clean, the rows named.
    sqlx::query("DELETE FROM cutover.rejects WHERE row_key LIKE 'NULL#%'")
        .execute(&pool)
        .await
        .unwrap();
    for chunk_rows in [1000, 1] {
        let r = verify(&opts(&path, &db, chunk_rows)).await.unwrap();
        let t = tweets(&r);
        assert!(!r.clean, "chunk_rows {chunk_rows}: {r:#?}");
        assert_eq!(t.rejected_rows, 0, "{t:#?}");
        assert_eq!(t.divergent_rows(), 2, "{t:#?}");
        let mut keys: Vec<&str> = t.divergences.iter().map(|d| d.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys.len(), 2, "{t:#?}");
        assert!(keys.iter().all(|k| k.starts_with("NULL#rowid=")), "{t:#?}");
        assert!(!t.counts_add_up, "{t:#?}");
    }

    // (c) --repair cannot copy them: unrepairable, not clean.
    let mut o = opts(&path, &db, 1000);
    o.repair = true;
    let r = verify(&o).await.unwrap();
    assert!(!r.clean, "{r:#?}");
    let rr = r.repair.as_ref().unwrap();
    assert_eq!(rr.divergent_before, 2, "{rr:#?}");
    assert_eq!(rr.unrepairable, 2, "{rr:#?}");
    assert_eq!(rr.rows_written, 0, "{rr:#?}");
    assert_eq!(tweets(&r).divergent_rows(), 2, "{r:#?}");
    let pg: i64 = sqlx::query_scalar("SELECT count(*) FROM tweets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pg, 2);
}
