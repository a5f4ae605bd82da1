//! Every legacy row accounted for as what it is: "already present" only by
//! primary key; a row whose other unique value PostgreSQL holds under
//! another key is rejected as `unique_violation`, never counted as copied.

mod common;

use common::{TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions};
use cutover::convert::RejectReason;
use cutover::row::Policy;

/// A legacy file with the plan's schema in `dir`, open for the test's rows.
fn legacy_file(dir: &TempDir) -> (std::path::PathBuf, rusqlite::Connection) {
    let path = dir.file("legacy.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    (path, c)
}

/// Backfill options for a file with no application beside it: reject-row,
/// forced (the stage stays `off`), no progress bar.
fn options(path: &std::path::Path, db: &TestDb) -> BackfillOptions {
    let mut o = BackfillOptions::new(path, db.settings.clone());
    o.policy = Policy::RejectRow;
    o.force = true;

    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_held_under_another_id_is_a_unique_violation_not_already_present() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('u1', 'one'), ('u2', 'taken'), ('u3', 'three');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES
           ('t1', 'u1', 'a', '2024-01-01 00:00:00'),
           ('t2', 'u2', 'b', '2024-01-01 00:00:00'),
           ('t3', 'u2', 'c', '2024-01-01 00:00:00');",
    )
    .unwrap();
    drop(c);
    let pool = db.pool().await;
    // PostgreSQL holds u3 (a live write: already present) and the username
    // `taken` under another id.
    sqlx::raw_sql(
        "INSERT INTO users (id, username) VALUES ('u3', 'three'), ('someone_else', 'taken')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let o = options(&path, &db);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let users = summary.tables.iter().find(|t| t.table == "users").unwrap();
    assert_eq!(users.copied, 2, "u1 written, u3 already present: {users:?}");
    assert_eq!(users.already_present, 1, "{users:?}");
    assert_eq!(
        users.rejected.get(&RejectReason::UniqueViolation),
        Some(&1),
        "{users:?}"
    );
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.copied, 1);
    assert_eq!(tweets.rejected.get(&RejectReason::Orphan), Some(&2));

    let rejected: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT row_key, column_name, reason FROM cutover.rejects WHERE table_name = 'users'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rejected,
        vec![(
            "u2".to_string(),
            "username".to_string(),
            "unique_violation".to_string()
        )]
    );
    let present: Vec<String> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(present, vec!["someone_else", "u1", "u3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_rows_with_the_same_key_text_keep_two_ledger_entries() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    // A TEXT key and a BLOB key with the same bytes, both with a bad date:
    // two rows, two rejects, two original images.
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES
           ('abc', 'u1', 'text key', 'not a date'),
           (X'616263', 'u1', 'blob key', 'not a date either');",
    )
    .unwrap();
    drop(c);
    let o = options(&path, &db);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.total_rejected, 2, "{tweets:?}");
    let pool = db.pool().await;
    let entries: Vec<(i64, String)> = sqlx::query_as(
        "SELECT source_rowid, original::text FROM cutover.rejects WHERE table_name = 'tweets' ORDER BY source_rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].1.contains("text key"), "{entries:?}");
    assert!(entries[1].1.contains("blob key"), "{entries:?}");
    // A rerun records nothing twice.
    let o = options(&path, &db);
    backfill::run(o, std::future::pending()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.rejects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_predicts_the_backfill_at_postgresql_s_timestamp_boundary() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute("INSERT INTO users (id, username) VALUES ('u1', 'one')", [])
        .unwrap();
    // Epoch milliseconds at PostgreSQL's lowest timestamp (4714-11-24 BC)
    // and one millisecond before it.
    let lowest_ms = cutover::convert::PG_MIN_TIMESTAMP_MICROS / 1000;
    for (id, ms) in [("t_lowest", lowest_ms), ("t_before", lowest_ms - 1)] {
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at) VALUES (?1, 'u1', 'x', ?2)",
            (id, ms),
        )
        .unwrap();
    }
    drop(c);
    let report = cutover::audit::audit(&path).unwrap();
    let predicted = report
        .tables
        .iter()
        .find(|t| t.table == "tweets")
        .unwrap()
        .predicted
        .iter()
        .find(|p| p.policy == "reject-row")
        .unwrap()
        .clone();
    let o = options(&path, &db);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(
        (predicted.copied, predicted.rejected),
        (tweets.copied, tweets.total_rejected),
        "audit {predicted:?} vs backfill {tweets:?}"
    );
    assert_eq!((tweets.copied, tweets.total_rejected), (1, 1));
    let pool = db.pool().await;
    let rejected: String =
        sqlx::query_scalar("SELECT row_key FROM cutover.rejects WHERE table_name = 'tweets'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rejected, "t_before");
}

/// Every column of the tweets matching `sql_where`, as storage class and
/// bytes.
fn quoted(path: &std::path::Path, sql_where: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare(&format!(
            "SELECT typeof(id) || ':' || hex(id) || '|' || typeof(user_id) || ':' || hex(user_id) || '|' || typeof(text) || ':' || hex(text) || '|' || typeof(created_at) || ':' || hex(created_at) || '|' || typeof(url) || ':' || hex(url) || '|' || typeof(is_reply) || ':' || hex(is_reply) || '|' || typeof(metadata) || ':' || hex(metadata) || '|' || typeof(created_in_db) || ':' || hex(created_in_db) \
             FROM tweets WHERE {sql_where} ORDER BY hex(id)"
        ))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_restores_the_rejected_legacy_rows_byte_for_byte() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO tweets (id, user_id, text, created_at, metadata) VALUES
           ('good', 'u1', 'fine', '2024-01-01 00:00:00', '{\"n\": 1}'),
           ('bad_date', 'u1', 'kept as is', 'yesterday', '{\"n\": 0.10}'),
           ('bad_text', 'u1', CAST(X'ff00fe' AS TEXT), '2024-01-01 00:00:00', NULL),
           ('orphan', 'nobody', 'no parent', '2024-01-01 00:00:00', NULL);",
    )
    .unwrap();
    drop(c);
    let o = options(&path, &db);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    let rejected = tweets.total_rejected;
    assert!(rejected >= 3, "{tweets:?}");
    let legacy_rejected = quoted(&path, "id IS NOT 'good'");
    assert_eq!(legacy_rejected.len() as u64, rejected);

    let out = dir.file("export.db");
    let report = cutover::export::export(&db.settings, &out, false)
        .await
        .unwrap();
    let t = report.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(
        (t.rows, t.restored, t.not_restored),
        (1, rejected, 0),
        "{t:?}"
    );
    assert_eq!(
        quoted(&out, "id IS NOT 'good'"),
        legacy_rejected,
        "the rejected rows come back byte for byte"
    );
    // Verify against the export still accounts for them (as rejects).
    let r = common::verify_once(&out, &db).await;
    assert!(r.clean, "{r:#?}");

    let out2 = dir.file("export-without.db");
    let report = cutover::export::export_with(&db.settings, &out2, false, false)
        .await
        .unwrap();
    let t = report.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!((t.rows, t.restored), (1, 0));
    assert!(quoted(&out2, "id IS NOT 'good'").is_empty());
}

/// A run that fails (here a trigger PostgreSQL runs raises an error that is
/// no row's fault) with `--defer-indexes`: every index it dropped is back
/// when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_with_defer_indexes_rebuilds_every_index() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES
           ('t1', 'u1', 'fine', '2024-01-01 00:00:00'),
           ('t2', 'u1', 'boom', '2024-01-01 00:00:00');",
    )
    .unwrap();
    drop(c);
    let pool = db.pool().await;
    sqlx::raw_sql(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.text = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON tweets FOR EACH ROW EXECUTE FUNCTION boom();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let indexes = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let before = indexes().await;
    let mut o = options(&path, &db);
    o.defer_indexes = true;
    o.defer_min_rows = 0;
    let r = backfill::run(o, std::future::pending()).await;
    assert!(r.is_err(), "the run failed: {r:?}");
    assert_eq!(indexes().await, before, "every index is back");
}

/// A value PostgreSQL refuses that no conversion rule foresees (here a
/// CHECK constraint the legacy schema lacks, and a numeric overflow): the
/// batch is split until the row is alone, and that row is rejected as
/// `refused` with PostgreSQL's message; the rest of the table is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgresql_refuses_is_isolated_and_rejected_not_a_stopped_table() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute("INSERT INTO users (id, username) VALUES ('u1', 'one')", [])
        .unwrap();
    for i in 0..40 {
        let text = if i == 17 {
            "boom".to_string()
        } else {
            format!("fine {i}")
        };
        c.execute(
            "INSERT INTO tweets (id, user_id, text, created_at) VALUES (?1, 'u1', ?2, '2024-01-01 00:00:00')",
            (format!("t{i:02}"), text),
        )
        .unwrap();
    }
    drop(c);
    let pool = db.pool().await;
    sqlx::query("ALTER TABLE tweets ADD CONSTRAINT no_boom CHECK (text <> 'boom')")
        .execute(&pool)
        .await
        .unwrap();
    let mut o = options(&path, &db);
    o.batch_size = 16;
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.copied, 39, "{tweets:?}");
    assert_eq!(
        tweets.rejected.get(&RejectReason::Refused),
        Some(&1),
        "{tweets:?}"
    );
    assert!(summary.reconciled(), "{summary:#?}");
    let (key, detail): (String, String) =
        sqlx::query_as("SELECT row_key, detail FROM cutover.rejects WHERE reason = 'refused'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(key, "t17");
    assert!(detail.contains("no_boom"), "{detail}");
    let r = common::verify_once(&path, &db).await;
    assert!(r.clean, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_key_and_a_text_key_with_the_same_bytes_copy_one_row_and_verify_clean() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    // The lower rowid holds a blob key, the higher one a text key with the
    // same bytes: one key in PostgreSQL. One row is copied, the other is a
    // reject, and verify compares PostgreSQL's row with the one copied.
    c.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata) VALUES
           (X'72', 'u1', '', 239874422, NULL, 0, '[1E+2, -0, 1.50]'),
           ('r', 'u1', 'later', 1315132937, NULL, 'yes', 933338062506426298);",
    )
    .unwrap();
    drop(c);
    let o = options(&path, &db);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(
        tweets.source_rows,
        Some(tweets.total_copied + tweets.total_rejected),
        "{tweets:?}"
    );
    let r = common::verify_once(&path, &db).await;
    let pool = db.pool().await;
    let held: Vec<(String, String)> = sqlx::query_as("SELECT id, text FROM tweets")
        .fetch_all(&pool)
        .await
        .unwrap();
    let rejects: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT source_rowid, column_name, reason FROM cutover.rejects ORDER BY source_rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        r.clean,
        "{r:#?}\nPostgreSQL: {held:?}\nrejects: {rejects:?}\n{tweets:?}"
    );
}

/// In `dualwrite`, a row whose parent the application wrote after the
/// parent's table was copied (its copy still in flight) waits for that copy
/// instead of being recorded as an orphan; a parent that never lands in
/// PostgreSQL leaves its child an orphan after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_parent_copy_is_in_flight_waits_for_it_instead_of_being_an_orphan() {
    use cutover::dual::{DualConfig, DualStore};
    use cutover::internals::Internals;
    use cutover::stage::Stage;

    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let (path, c) = legacy_file(&dir);
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES ('t1', 'u1', 'a', '2024-01-01 00:00:00');",
    )
    .unwrap();
    drop(c);
    // The application runs in dualwrite (the backfill's own stage).
    let d = DualStore::forced(
        cutover::SqliteStore::open(&path).await.unwrap(),
        cutover::PgStore::connect(&db.settings).await.unwrap(),
        Stage::DualWrite,
        DualConfig::default(),
    )
    .await
    .unwrap();
    drop(d);
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.policy = Policy::RejectRow;
    o.tables = Some(vec!["users".into()]);
    backfill::run(o, std::future::pending()).await.unwrap();

    // After users was copied: two users written in SQLite whose copies have
    // not reached PostgreSQL, each with a tweet.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('late', 'late'), ('never', 'never');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES
           ('t_late', 'late', 'b', '2024-01-01 00:00:00'),
           ('t_never', 'never', 'c', '2024-01-01 00:00:00');",
    )
    .unwrap();
    drop(c);
    let pool = db.pool().await;
    let landing = {
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            sqlx::query("INSERT INTO users (id, username) VALUES ('late', 'late')")
                .execute(&pool)
                .await
                .unwrap();
        })
    };
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.policy = Policy::RejectRow;
    o.tables = Some(vec!["tweets".into()]);
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    landing.await.unwrap();
    let tweets = summary.tables.iter().find(|t| t.table == "tweets").unwrap();
    let rejected: Vec<String> = sqlx::query_scalar(
        "SELECT row_key FROM cutover.rejects WHERE table_name = 'tweets' ORDER BY row_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rejected,
        vec!["t_never".to_string()],
        "only the tweet whose parent never landed is an orphan: {tweets:?}"
    );
    let copied: Vec<String> = sqlx::query_scalar("SELECT id FROM tweets ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(copied, vec!["t1".to_string(), "t_late".to_string()]);
    assert_eq!(
        tweets.source_rows,
        Some(tweets.total_copied + tweets.total_rejected)
    );
}
