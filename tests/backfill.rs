//! The backfill against real SQLite files and a real PostgreSQL: every kind
//! of messy legacy value converted or rejected exactly under both policies,
//! reconciliation, byte-exact originals, idempotent reruns, resume after
//! SIGKILL, the single-run lock and the statement-timeout retry.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions, BackfillSummary};
use cutover::convert::{Raw, RejectReason};
use cutover::rejects;
use cutover::row::{self, OwnedRaw, Policy};
use cutover::tables;
use rusqlite::Connection;
use sqlx::{Connection as _, PgConnection};

fn legacy_db(dir: &TempDir, name: &str) -> PathBuf {
    let path = dir.file(name);
    let c = Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    path
}

/// A file holding one of every messy kind the legacy data has.
fn messy_db(dir: &TempDir) -> PathBuf {
    let path = legacy_db(dir, "messy.db");
    let c = Connection::open(&path).unwrap();
    // The legacy application never switched foreign keys on (this build of
    // SQLite does by default).
    c.execute_batch(
        r#"
        PRAGMA foreign_keys = OFF;
        INSERT INTO users (id, username, profile_data, last_scraped, created_at) VALUES
          ('u1', 'alice', '{"bio":"hi 👋"}', 'Wed Oct 10 20:19:24 +0000 2018', '2024-03-01 12:34:56'),
          ('u2', 'bob', NULL, 'yesterday', 1709296496789),
          ('u3', 'carol', '', NULL, '2024-03-01T12:34:56.789+02:00'),
          ('u4', 'dave', '{"a": 1', NULL, NULL),
          ('u5', 'erin', '{"a": "x\u0000y"}', NULL, NULL),
          ('u6', CAST(x'6d616c006c6f7279' AS TEXT), NULL, NULL, NULL),
          ('u7', CAST(x'61ff62' AS TEXT), NULL, NULL, NULL),
          ('1', 'one', NULL, NULL, NULL),
          (CAST('1' AS BLOB), 'one-blob', NULL, NULL, NULL),
          ('u8', CAST('alice' AS BLOB), NULL, NULL, NULL);
        INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata) VALUES
          ('t1', 'u1', 'hello 🌍 https://t.co/x @bob', 'Wed Oct 10 20:19:24 +0000 2018', NULL, 0, '{"likes": 3}'),
          ('t2', 'u1', 'iso', '2018-10-10T22:19:24+02:00', NULL, 'true', NULL),
          ('t3', 'u1', 'millis', 1539202764000, NULL, 'yes', NULL),
          ('t4', 'u1', 'garbage date', 'not a date', NULL, NULL, NULL),
          ('t5', 'u1', 'bad bool', '2018-10-10 20:19:24', NULL, 'maybe', NULL),
          ('t6', 'u1', 'empty json', '2018-10-10 20:19:24', NULL, NULL, ''),
          ('t7', 'u1', CAST(x'6e756c00' AS TEXT), '2018-10-10 20:19:24', NULL, NULL, NULL),
          ('t8', 'ghost', 'orphan', '2018-10-10 20:19:24', NULL, NULL, NULL),
          ('t9', 'u7', 'child of a rejected user', '2018-10-10 20:19:24', NULL, NULL, NULL),
          ('t10', 'u2', 'child of a nulled-or-rejected user', '2018-10-10 20:19:24', NULL, 1, NULL);
        INSERT INTO analysis_queue (job_id, user_id, status, total_chunks) VALUES
          (1, 'u1', 'pending', 2),
          (2, 'u1', 'done', 1),
          (3, 'ghost', 'pending', 1);
        INSERT INTO analysis_chunks (chunk_id, job_id, chunk_index, tweet_count, status, result) VALUES
          (1, 1, 0, 10, 'completed', '{"ok": true}'),
          (2, 2, 0, 10, 'pending', NULL),
          (3, NULL, 0, 10, 'pending', NULL),
          (4, 1, 1, 10, 'completed', '{"ok": tru');
        "#,
    )
    .unwrap();
    path
}

/// A migrated database in `dualwrite`, the stage the backfill runs in.
async fn dualwrite_db() -> TestDb {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    cutover::stage::set(
        &pool,
        &cutover::stage::Change {
            to: cutover::stage::Stage::DualWrite,
            force: false,
            by: "tests/backfill.rs".into(),
            extra_pending: 0,
        },
    )
    .await
    .expect("move to dualwrite");
    pool.close().await;
    db
}

fn options(path: &Path, db: &TestDb, policy: Policy) -> BackfillOptions {
    let mut o = BackfillOptions::new(path, db.settings.clone());
    o.policy = policy;
    o.batch_size = 3;

    o
}

async fn backfill(opts: BackfillOptions) -> BackfillSummary {
    backfill::run(opts, std::future::pending()).await.unwrap()
}

async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect_with(&db.settings.connect_options())
        .await
        .unwrap()
}

/// Rejects of a table: row_key → (column, reason, row_copied).
async fn ledger(
    conn: &mut PgConnection,
    table: &str,
) -> BTreeMap<(String, String), (RejectReason, bool)> {
    rejects::list(conn, table)
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.row_key, r.column), (r.reason, r.row_copied)))
        .collect()
}

fn entry(
    key: &str,
    col: &str,
    reason: RejectReason,
    copied: bool,
) -> ((String, String), (RejectReason, bool)) {
    ((key.into(), col.into()), (reason, copied))
}

async fn keys(conn: &mut PgConnection, table: &str, pk: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {pk}::text FROM {table} ORDER BY 1"
    )))
    .fetch_all(conn)
    .await
    .unwrap()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every ledger entry's original image restores the SQLite row byte for byte.
async fn originals_restore_exactly(conn: &mut PgConnection, sqlite: &Path) {
    let c = Connection::open(sqlite).unwrap();
    for t in tables::ALL {
        for r in rejects::list(conn, t.name).await.unwrap() {
            let restored = row::restore_image(t, &r.original).expect("image restores");
            let rowid = r.source_rowid.expect("backfill records the rowid");
            let actual: Vec<OwnedRaw> = c
                .query_row(
                    &format!(
                        "SELECT {} FROM {} WHERE rowid = ?1",
                        t.column_list(),
                        t.name
                    ),
                    [rowid],
                    |row| {
                        (0..t.columns.len())
                            .map(|i| {
                                Ok(match Raw::from(row.get_ref(i)?) {
                                    Raw::Null => OwnedRaw::Null,
                                    Raw::Integer(v) => OwnedRaw::Integer(v),
                                    Raw::Real(v) => OwnedRaw::Real(v),
                                    Raw::Text(b) => OwnedRaw::Text(b.to_vec()),
                                    Raw::Blob(b) => OwnedRaw::Blob(b.to_vec()),
                                })
                            })
                            .collect()
                    },
                )
                .unwrap();
            assert_eq!(restored, actual, "{} rowid {rowid}", t.name);
        }
    }
}

#[tokio::test]
async fn messy_rows_are_converted_or_rejected_exactly_under_reject_row() {
    let dir = TempDir::new();
    let path = messy_db(&dir);
    let db = dualwrite_db().await;
    let summary = backfill(options(&path, &db, Policy::RejectRow)).await;
    assert!(summary.reconciled(), "{summary:#?}");
    // Nothing else wrote to SQLite: no round made room for an application.
    for t in &summary.tables {
        assert_eq!(t.busy_rounds, 0, "{}", t.table);
        assert_eq!(t.room_seconds, 0.0, "{}", t.table);
    }
    let mut conn = connect(&db).await;
    use RejectReason::*;

    assert_eq!(keys(&mut conn, "users", "id").await, strs(&["1", "u1"]));
    let want: BTreeMap<_, _> = [
        entry("u2", "last_scraped", InvalidTimestamp, false),
        entry("u3", "profile_data", InvalidJson, false),
        entry("u4", "profile_data", InvalidJson, false),
        entry("u5", "profile_data", InvalidJson, false),
        entry("u6", "username", NulChar, false),
        entry("u7", "username", InvalidUtf8, false),
        entry("1", "id", UniqueViolation, false),
        entry("u8", "username", UniqueViolation, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "users").await, want);

    assert_eq!(
        keys(&mut conn, "tweets", "id").await,
        strs(&["t1", "t2", "t3"])
    );
    let want: BTreeMap<_, _> = [
        entry("t4", "created_at", InvalidTimestamp, false),
        entry("t5", "is_reply", InvalidBoolean, false),
        entry("t6", "metadata", InvalidJson, false),
        entry("t7", "text", NulChar, false),
        entry("t8", "user_id", Orphan, false),
        entry("t9", "user_id", Orphan, false),
        entry("t10", "user_id", Orphan, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "tweets").await, want);

    // Converted values are exact.
    let want_ts = Utc.with_ymd_and_hms(2018, 10, 10, 20, 19, 24).unwrap();
    let rows: Vec<(String, chrono::DateTime<Utc>, Option<bool>)> =
        sqlx::query_as("SELECT id, created_at, is_reply FROM tweets ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("t1".into(), want_ts, Some(false)),
            ("t2".into(), want_ts, Some(true)),
            ("t3".into(), want_ts, Some(true)),
        ]
    );
    let (text, meta): (String, serde_json::Value) =
        sqlx::query_as("SELECT text, metadata FROM tweets WHERE id = 't1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(text, "hello 🌍 https://t.co/x @bob");
    assert_eq!(meta, serde_json::json!({"likes": 3}));
    let (scraped, created): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT last_scraped, created_at FROM users WHERE id = 'u1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(scraped, want_ts);
    assert_eq!(
        created,
        Utc.with_ymd_and_hms(2024, 3, 1, 12, 34, 56).unwrap()
    );

    assert_eq!(
        keys(&mut conn, "analysis_queue", "job_id").await,
        strs(&["1"])
    );
    let want: BTreeMap<_, _> = [
        entry("2", "status", CheckViolation, false),
        entry("3", "user_id", Orphan, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "analysis_queue").await, want);
    assert_eq!(
        keys(&mut conn, "analysis_chunks", "chunk_id").await,
        strs(&["1", "3"])
    );
    let want: BTreeMap<_, _> = [
        entry("2", "job_id", Orphan, false),
        entry("4", "result", InvalidJson, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "analysis_chunks").await, want);

    // Per-table summary: source = copied + rejected, by reason.
    let users = summary.tables.iter().find(|t| t.table == "users").unwrap();
    assert_eq!(users.source_rows, Some(10));
    assert_eq!((users.copied, users.rejected_total()), (2, 8));
    assert_eq!(users.rejected.get(&UniqueViolation), Some(&2));
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.rejected.get(&Orphan), Some(&3));

    // Sequences moved past the highest ids of both sides.
    let next: i32 = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('analysis_chunks', 'chunk_id'))::int",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(next, 5);

    originals_restore_exactly(&mut conn, &path).await;
}

#[tokio::test]
async fn messy_rows_under_null_and_record_copy_nullable_values_as_null() {
    let dir = TempDir::new();
    let path = messy_db(&dir);
    let db = dualwrite_db().await;
    let summary = backfill(options(&path, &db, Policy::NullAndRecord)).await;
    assert!(summary.reconciled(), "{summary:#?}");
    let mut conn = connect(&db).await;
    use RejectReason::*;

    assert_eq!(
        keys(&mut conn, "users", "id").await,
        strs(&["1", "u1", "u2", "u3", "u4", "u5"])
    );
    let want: BTreeMap<_, _> = [
        entry("u2", "last_scraped", InvalidTimestamp, true),
        entry("u3", "profile_data", InvalidJson, true),
        entry("u4", "profile_data", InvalidJson, true),
        entry("u5", "profile_data", InvalidJson, true),
        entry("u6", "username", NulChar, false),
        entry("u7", "username", InvalidUtf8, false),
        entry("1", "id", UniqueViolation, false),
        entry("u8", "username", UniqueViolation, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "users").await, want);
    let (scraped, created, profile): (
        Option<chrono::DateTime<Utc>>,
        Option<chrono::DateTime<Utc>>,
        Option<serde_json::Value>,
    ) = sqlx::query_as("SELECT last_scraped, created_at, profile_data FROM users WHERE id = 'u2'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(scraped, None);
    assert_eq!(
        created,
        Utc.timestamp_millis_opt(1_709_296_496_789).single()
    );
    assert_eq!(profile, None);

    // The NOT NULL created_at and text still reject; nullable ones are nulled.
    assert_eq!(
        keys(&mut conn, "tweets", "id").await,
        strs(&["t1", "t10", "t2", "t3", "t5", "t6"])
    );
    let want: BTreeMap<_, _> = [
        entry("t4", "created_at", InvalidTimestamp, false),
        entry("t5", "is_reply", InvalidBoolean, true),
        entry("t6", "metadata", InvalidJson, true),
        entry("t7", "text", NulChar, false),
        entry("t8", "user_id", Orphan, false),
        entry("t9", "user_id", Orphan, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(ledger(&mut conn, "tweets").await, want);
    let reply: Option<bool> = sqlx::query_scalar("SELECT is_reply FROM tweets WHERE id = 't5'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(reply, None);

    assert_eq!(
        keys(&mut conn, "analysis_chunks", "chunk_id").await,
        strs(&["1", "3", "4"])
    );
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(
        (tweets.copied, tweets.rejected_total(), tweets.nulled_values),
        (6, 4, 2)
    );
    originals_restore_exactly(&mut conn, &path).await;
}

#[tokio::test]
async fn rerun_copies_nothing_twice_and_picks_up_new_rows() {
    let dir = TempDir::new();
    let path = messy_db(&dir);
    let db = dualwrite_db().await;
    backfill(options(&path, &db, Policy::RejectRow)).await;
    let mut conn = connect(&db).await;
    let count = |table: &'static str| format!("SELECT count(*) FROM {table}");
    let mut before = Vec::new();
    for t in tables::ALL {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count(t.name)))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        before.push(n);
    }
    let rejects_before: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.rejects")
        .fetch_one(&mut conn)
        .await
        .unwrap();

    let again = backfill(options(&path, &db, Policy::RejectRow)).await;
    assert!(again.reconciled(), "{again:#?}");
    for t in &again.tables {
        assert_eq!((t.copied, t.rejected_total()), (0, 0), "{}", t.table);
    }
    for (t, n) in tables::ALL.iter().zip(&before) {
        let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count(t.name)))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(now, *n, "{}", t.name);
    }
    let rejects_after: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.rejects")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rejects_after, rejects_before);

    // A row written by the application later is picked up from the checkpoint;
    // one a live dual write already put in PostgreSQL counts as copied.
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "INSERT INTO tweets (id, user_id, text, created_at) VALUES ('t11', 'u1', 'new', '2024-01-01 00:00:00');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES ('t12', 'u1', 'live', '2024-01-01 00:00:00');",
    )
    .unwrap();
    sqlx::query("INSERT INTO tweets (id, user_id, text, created_at) VALUES ('t12', 'u1', 'live, newer', now())")
        .execute(&mut conn)
        .await
        .unwrap();
    let third = backfill(options(&path, &db, Policy::RejectRow)).await;
    assert!(third.reconciled(), "{third:#?}");
    let tweets = third.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!((tweets.copied, tweets.already_present), (2, 1));
    let text: String = sqlx::query_scalar("SELECT text FROM tweets WHERE id = 't12'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(text, "live, newer");
}

/// A file of `n` valid tweets by 100 users.
fn big_db(dir: &TempDir, n: usize) -> PathBuf {
    let path = legacy_db(dir, "big.db");
    let mut c = Connection::open(&path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut u = tx
            .prepare("INSERT INTO users (id, username) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..100 {
            u.execute(rusqlite::params![format!("u{i}"), format!("user{i}")])
                .unwrap();
        }
        let mut t = tx
            .prepare("INSERT INTO tweets (id, user_id, text, created_at, is_reply, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .unwrap();
        for i in 0..n {
            t.execute(rusqlite::params![
                format!("{}", 1_000_000_000_000u64 + i as u64),
                format!("u{}", i % 100),
                format!("tweet number {i} 🚀 https://example.com/{i} @user{}", i % 7),
                1_600_000_000_000i64 + i as i64 * 1000,
                i % 2,
                format!(r#"{{"likes": {i}, "lang": "en"}}"#),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    path
}

fn cutover_bin(dir: &TempDir, sqlite: &Path, db: &TestDb, extra: &[&str]) -> Command {
    common::cutover_cmd(
        dir.0.path(),
        sqlite,
        Some(db),
        &[&["backfill"], extra].concat(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_sigkill_resumes_without_duplicates_or_gaps() {
    const N: usize = 200_000;
    let dir = TempDir::new();
    let path = big_db(&dir, N);
    let db = dualwrite_db().await;
    let mut conn = connect(&db).await;

    let mut child = cutover_bin(
        &dir,
        &path,
        &db,
        &["--batch-size", "500", "--max-rows-per-sec", "40000"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Wait until the run is part-way through tweets, then kill it outright.
    let mut copied_at_kill = 0i64;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT rows_copied FROM cutover.checkpoints WHERE table_name = 'tweets'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some(n) = n.filter(|n| *n >= 20_000) {
            copied_at_kill = n;
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        copied_at_kill > 0 && (copied_at_kill as usize) < N,
        "killed mid-table"
    );
    let paused: bool = sqlx::query_scalar(
        "SELECT coalesce('autovacuum_vacuum_insert_threshold=-1' = ANY(reloptions), false) FROM pg_class WHERE relname = 'tweets'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        paused,
        "insert-triggered vacuums are off for the table being loaded"
    );
    let (copied, in_table): (i64, i64) = sqlx::query_as(
        "SELECT rows_copied, (SELECT count(*) FROM tweets) FROM cutover.checkpoints WHERE table_name = 'tweets'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(copied, in_table, "the checkpoint commits with its rows");
    assert!((copied as usize) < N);

    let out = cutover_bin(&dir, &path, &db, &["--batch-size", "5000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reconciliation: ok"), "{stdout}");
    let (n, distinct, cp): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id), (SELECT rows_copied FROM cutover.checkpoints WHERE table_name = 'tweets') FROM tweets",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((n, distinct, cp), (N as i64, N as i64, N as i64));
    // The resumed run switched autovacuum back on for every table.
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND reloptions IS NOT NULL
           AND relnamespace = 'public'::regnamespace",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0, "autovacuum settings restored");
}

#[tokio::test]
async fn a_second_backfill_is_refused_while_one_runs() {
    let dir = TempDir::new();
    let path = messy_db(&dir);
    let db = dualwrite_db().await;
    let mut holder = connect(&db).await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(backfill::LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let out = cutover_bin(&dir, &path, &db, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another backfill is running"), "{stderr}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The library refuses the same way.
    let err = backfill::run(
        options(&path, &db, Policy::RejectRow),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("another backfill is running"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_times_out_and_never_holds_up_sqlite_writers() {
    let dir = TempDir::new();
    let path = big_db(&dir, 2_000);
    let db = dualwrite_db().await;
    // Hold tweets locked in PostgreSQL so every batch's COPY blocks.
    let mut blocker = connect(&db).await;
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE tweets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let mut opts = options(&path, &db, Policy::RejectRow);
    opts.batch_size = 1000;
    opts.statement_timeout = Duration::from_millis(200);
    let run = tokio::spawn(backfill::run(opts, std::future::pending()));

    // Wait until a batch is stuck behind the lock.
    let mut watcher = connect(&db).await;
    let mut stuck = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if n > 0 {
            stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stuck, "a batch blocks on the locked table");

    // While PostgreSQL hangs, the application can still write SQLite: no
    // batch holds its write lock.
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        let c = Connection::open(p).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at) VALUES ('during', 'u1', 'written while PG hung', '2024-01-01 00:00:00')",
            [],
        )
        .unwrap();
    })
    .await
    .unwrap();
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    let summary = run.await.unwrap().unwrap();
    assert!(summary.reconciled(), "{summary:#?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tweets")
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    assert_eq!(n, 2_001);
}

/// Each copied table's secondary B-tree indexes are dropped for its copy and
/// built again once it is copied (with `defer_full_text` the GIN one too),
/// every one present and valid when the run reports done; one a killed run
/// left dropped is built too. By default the GIN index stays in place,
/// `defer_indexes = false` keeps all of them, and a run with few rows left
/// (under `defer_min_rows`) drops none.
#[tokio::test]
async fn each_tables_indexes_are_dropped_for_its_copy_and_built_again() {
    let dir = TempDir::new();
    let path = big_db(&dir, 1_000);
    let db = dualwrite_db().await;
    let mut conn = connect(&db).await;
    let list = "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1";
    let oid = "SELECT 'idx_tweets_text'::regclass::oid::bigint";
    let invalid = "SELECT count(*) FROM pg_index WHERE NOT (indisvalid AND indisready)";
    let before: Vec<String> = sqlx::query_scalar(list).fetch_all(&mut conn).await.unwrap();
    let gin_before: i64 = sqlx::query_scalar(oid).fetch_one(&mut conn).await.unwrap();
    // As a killed run would leave it: one index dropped and recorded.
    sqlx::query("INSERT INTO cutover.deferred_indexes (index_name, table_name, definition) SELECT indexname, tablename, indexdef FROM pg_indexes WHERE indexname = 'idx_tweets_created'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DROP INDEX idx_tweets_created")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut opts = options(&path, &db, Policy::RejectRow);
    opts.defer_min_rows = 0;
    opts.defer_full_text = true;
    opts.batch_size = 200;
    opts.tables = Some(vec!["users".into(), "tweets".into()]);
    let summary = backfill(opts.clone()).await;
    assert!(summary.reconciled(), "{summary:#?}");
    let mut rebuilt = summary.indexes_rebuilt.clone();
    rebuilt.sort();
    assert_eq!(
        rebuilt,
        [
            "idx_tweets_created",
            "idx_tweets_text",
            "idx_tweets_user_created"
        ]
    );
    let gin_after: i64 = sqlx::query_scalar(oid).fetch_one(&mut conn).await.unwrap();
    assert_ne!(gin_after, gin_before, "the GIN index was built again");
    let after: Vec<String> = sqlx::query_scalar(list).fetch_all(&mut conn).await.unwrap();
    assert_eq!(after, before);
    let bad: i64 = sqlx::query_scalar(invalid)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(bad, 0, "every index valid");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.deferred_indexes")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // A second copy (the checkpoints say done: reset them) with the
    // full-text index kept in place (the default).
    let reset = "TRUNCATE tweets; DELETE FROM cutover.checkpoints WHERE table_name = 'tweets'; ANALYZE tweets";
    sqlx::raw_sql(reset).execute(&mut conn).await.unwrap();
    opts.defer_full_text = false;
    let summary = backfill(opts.clone()).await;
    let mut rebuilt = summary.indexes_rebuilt.clone();
    rebuilt.sort();
    assert_eq!(rebuilt, ["idx_tweets_created", "idx_tweets_user_created"]);
    let gin_kept: i64 = sqlx::query_scalar(oid).fetch_one(&mut conn).await.unwrap();
    assert_eq!(gin_kept, gin_after, "the GIN index stayed in place");

    // All kept in place.
    sqlx::raw_sql(reset).execute(&mut conn).await.unwrap();
    opts.defer_indexes = false;
    let summary = backfill(opts.clone()).await;
    assert!(summary.indexes_rebuilt.is_empty(), "{summary:#?}");

    // Few rows left against what PostgreSQL holds: none dropped.
    sqlx::raw_sql("DELETE FROM tweets WHERE id IN (SELECT id FROM tweets ORDER BY id LIMIT 10); DELETE FROM cutover.checkpoints WHERE table_name = 'tweets'; ANALYZE tweets")
        .execute(&mut conn)
        .await
        .unwrap();
    opts.defer_indexes = true;
    opts.defer_min_rows = 10_000;
    let summary = backfill(opts).await;
    assert!(summary.indexes_rebuilt.is_empty(), "{summary:#?}");
    let after: Vec<String> = sqlx::query_scalar(list).fetch_all(&mut conn).await.unwrap();
    assert_eq!(after, before);
}

/// Batches of a round load side by side and commit in order: when the first
/// fails, the one beside it (already loaded) rolls back too, the round is
/// retried, and the table ends with every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_rolls_back_the_batches_loaded_beside_it() {
    let dir = TempDir::new();
    let path = big_db(&dir, 2_000);
    let db = dualwrite_db().await;
    let mut conn = connect(&db).await;
    // The first tweet fails once, as a live write racing the batch would.
    sqlx::raw_sql(
        "CREATE SEQUENCE fired;
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             -- (A sequence, not a table: it survives the rollback.)
             IF nextval('fired') = 1 THEN
                 -- The batch of the second row sees it before it fails.
                 PERFORM pg_sleep(0.3);
                 RAISE unique_violation USING MESSAGE = 'injected failure';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_once BEFORE INSERT ON tweets FOR EACH ROW
             WHEN (NEW.id = '1000000000000') EXECUTE FUNCTION fail_once();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut o = options(&path, &db, Policy::RejectRow);
    o.batch_size = 500;
    o.jobs = 3;
    let s = backfill(o).await;
    assert!(s.reconciled(), "{s:#?}");
    let fired: i64 = sqlx::query_scalar("SELECT last_value FROM fired")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fired, 2,
        "the injected failure happened once, then the retry passed"
    );
    let tweets = s.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!((tweets.copied, tweets.rejected_total()), (2_000, 0));
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM tweets")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (2_000, 2_000), "no gap, no duplicate");
    let (copied, last): (i64, String) = sqlx::query_as(
        "SELECT rows_copied, last_key FROM cutover.checkpoints WHERE table_name = 'tweets'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((copied, last.as_str()), (2_000, "2000"));
    // The full-text index's pending list, grown large for the load, was
    // merged when the table was done: nothing is left to clean.
    let left: i64 = sqlx::query_scalar(
        "SELECT gin_clean_pending_list(x.indexrelid)
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam
         WHERE x.indrelid = 'tweets'::regclass AND a.amname = 'gin'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0, "GIN pending list merged at the end of the table");
}
