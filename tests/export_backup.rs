//! The way back and the safety copy: `cutover export` (PostgreSQL → a legacy
//! SQLite file that verifies clean) and `cutover backup` (an online copy of a
//! WAL database taken while writers keep committing).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{TempDir, TestDb};
use cutover::verify::{verify, VerifyOptions};

async fn seed_pg(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        r#"
        INSERT INTO users VALUES ('u1', 'alice', '{"b": 2, "a": {"y": [1, 2.5, "x\"y"]}, "e": "😀\n"}',
            'http://p/1', '2018-10-10 20:19:24+00', '2018-10-10 20:19:24.5+00');
        INSERT INTO users VALUES ('u2', 'bob', NULL, NULL, NULL, NULL);
        INSERT INTO tweets SELECT 't' || lpad(i::text, 5, '0'), CASE WHEN i % 2 = 0 THEN 'u1' ELSE 'u2' END,
            E'text\t' || i, timestamptz '2020-01-01 00:00:00+00' + i * interval '1.000001 second',
            NULL, CASE i % 3 WHEN 0 THEN true WHEN 1 THEN false END,
            jsonb_build_object('i', i, 'f', i / 8.0), NULL FROM generate_series(1, 4500) i;
        INSERT INTO personality_analysis VALUES ('p1', 'u1', '{"open": 0.5}', '["a"]', '{"t": "dry"}', now());
        INSERT INTO funnel_progress VALUES ('u1', 2, '["a"]', '{"a": "x"}', now());
        INSERT INTO funnel_completion VALUES ('u1', now(), '{}');
        INSERT INTO referral_codes VALUES ('CODE1', 'u1', 1, now());
        INSERT INTO referral_tracking (referral_code, referrer_user_id, referred_user_id, used_at)
            VALUES ('CODE1', 'u1', 'u2', now());
        INSERT INTO referral_usage_log (referral_code, used_by_user_id, used_at) VALUES ('CODE1', 'u2', now());
        INSERT INTO analysis_queue (user_id, status, priority, total_chunks) VALUES ('u1', 'pending', 1, 2);
        INSERT INTO analysis_queue (user_id, status, priority, total_chunks) VALUES ('u1', 'failed', 1, 1);
        DELETE FROM analysis_queue WHERE job_id = 2;
        INSERT INTO analysis_chunks (job_id, chunk_index, tweet_count, status, result)
            VALUES (1, 0, 10, 'completed', '{"z": [true, null]}'), (1, 1, 10, 'pending', NULL);
        "#,
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn export_round_trips_and_verifies_clean() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_pg(&pool).await;
    let dir = TempDir::new();
    let out = dir.file("back.db");

    let report = cutover::export::export(&db.settings, &out, false)
        .await
        .unwrap();
    let tweets = report.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.rows, 4500);
    assert!(!cutover::export::partial_path(&out).exists());

    // A plain connection sees the legacy schema and legacy value forms.
    let c = rusqlite::Connection::open(&out).unwrap();
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'users'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("username TEXT UNIQUE NOT NULL"), "{sql}");
    let ac: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'analysis_chunks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ac.contains("AUTOINCREMENT"));
    let (ts, reply, kind): (String, i64, String) = c
        .query_row(
            "SELECT created_at, is_reply, typeof(is_reply) FROM tweets WHERE id = 't00003'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(ts, "2020-01-01T00:00:03.000003Z");
    assert_eq!((reply, kind.as_str()), (1, "integer"));
    let scraped: String = c
        .query_row("SELECT last_scraped FROM users WHERE id = 'u1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(scraped, "2018-10-10T20:19:24.000000Z");
    // The sequence is past the deleted job 2, so the old app never reuses it.
    let seq: i64 = c
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'analysis_queue'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seq, 2);
    let seq: i64 = c
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'analysis_chunks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seq, 2);
    drop(c);

    // Verify between the export and PostgreSQL is clean, every table by
    // checksum alone: PostgreSQL's numeric keeps `i / 8.0` as
    // 0.12500000000000000000 and the export writes that very JSON number
    // (never through a float).
    let mut o = VerifyOptions::new(&out, db.settings.clone());
    o.chunk_rows = 1000;
    let r = verify(&o).await.unwrap();
    assert!(r.clean, "{r:#?}");
    for t in &r.tables {
        assert_eq!(t.sqlite_rows, t.postgres_rows, "{}", t.table);
        assert_eq!(t.chunks_compared, 0, "{}", t.table);
    }

    // Never overwritten without --force.
    let e = cutover::export::export(&db.settings, &out, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["--postgres", &db.url(), "--env-file", "/dev/null"])
        .arg("export")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(bin.status.code(), Some(2));
    sqlx::query("DELETE FROM tweets WHERE id = 't00001'")
        .execute(&pool)
        .await
        .unwrap();
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["--postgres", &db.url(), "--env-file", "/dev/null"])
        .args(["export", "--force", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        bin.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&bin.stderr)
    );
    let c = rusqlite::Connection::open(&out).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM tweets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4499);
}

fn legacy_wal(path: &std::path::Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch(
        r#"
        INSERT INTO users (id, username) VALUES ('u1', 'alice');
        WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 30000)
        INSERT INTO tweets SELECT 't' || i, 'u1', printf('%.200c', 'x') || i, '2020-01-01 00:00:00',
            NULL, 0, '{}', NULL FROM s;
        "#,
    )
    .unwrap();
}

#[test]
fn backup_under_concurrent_writers_is_a_consistent_snapshot() {
    let dir = TempDir::new();
    let src = dir.file("live.db");
    legacy_wal(&src);

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (src, stop, commits) = (src.clone(), stop.clone(), commits.clone());
            std::thread::spawn(move || {
                let mut c = rusqlite::Connection::open(&src).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // A job and its chunk in one transaction: any consistent
                    // snapshot holds as many of one as of the other.
                    let tx = c
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    tx.execute(
                        "INSERT INTO analysis_queue (user_id, status, total_chunks) VALUES ('u1', 'pending', 1)",
                        [],
                    )
                    .unwrap();
                    let job = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO analysis_chunks (job_id, chunk_index, tweet_count, status, result) \
                         VALUES (?1, 0, ?2, 'pending', printf('%.300c', 'r'))",
                        rusqlite::params![job, (w * 1_000_000 + i) as i64],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                    i += 1;
                    commits.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while commits.load(Ordering::SeqCst) < 20 {
        std::thread::yield_now();
    }
    let before = commits.load(Ordering::SeqCst);
    let out = dir.file("copy.db");
    let report = cutover::backup::backup(&src, &out).unwrap();
    let after = commits.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    assert_eq!(report.integrity, "ok");
    assert_eq!(report.journal_mode, "wal");
    assert!(report.pages > 256, "{report:?}");
    assert!(after > before, "writers kept committing during the backup");
    let count = |name: &str| report.tables.iter().find(|t| t.table == name).unwrap().rows;
    assert_eq!(count("tweets"), 30000);
    assert!(count("analysis_queue") >= 20);
    assert_eq!(count("analysis_queue"), count("analysis_chunks"));

    // The copy opens on its own and agrees with the report.
    let c = rusqlite::Connection::open(&out).unwrap();
    let (q, ch): (i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM analysis_queue), (SELECT count(*) FROM analysis_chunks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((q, ch), (count("analysis_queue"), count("analysis_chunks")));
    let live: i64 = rusqlite::Connection::open(&src)
        .unwrap()
        .query_row("SELECT count(*) FROM analysis_queue", [], |r| r.get(0))
        .unwrap();
    assert!(live >= q);

    // A backup never overwrites.
    let e = cutover::backup::backup(&src, &out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}
