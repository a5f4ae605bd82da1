//! Finding 6: schema drift is never dropped silently. A table or a column in
//! the legacy file that `cutover::tables::ALL` does not describe is listed by
//! the audit (with its counts), makes the backfill refuse, naming it, and is
//! only left behind when the operator names it in `--ignore-unknown`; that
//! acknowledgement is recorded in `cutover.acknowledged_drift` and in the
//! backfill's summary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{copied, text, TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions};
use serde_json::{json, Value};

/// A legacy file as the application and the dual store leave it, plus what
/// the schema does not know: a column `users.nickname` (2 of 3 rows
/// non-NULL), a column `tweets.lang` (NULL everywhere) and a table `notes`
/// (2 rows). A view and an index are not tables: they are not reported.
fn drifted_file(dir: &TempDir) -> PathBuf {
    let path = dir.file("legacy.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    c.execute_batch(cutover::outbox::SQLITE_DDL).unwrap();
    c.execute_batch(cutover::authority::SQLITE_DDL).unwrap();
    c.execute_batch(
        "ALTER TABLE users ADD COLUMN nickname TEXT;
         ALTER TABLE tweets ADD COLUMN lang TEXT;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         CREATE INDEX notes_body ON notes (body);
         CREATE VIEW tweet_counts AS SELECT user_id, count(*) AS n FROM tweets GROUP BY user_id;
         INSERT INTO users (id, username, nickname) VALUES
           ('u1', 'one', 'Uno'), ('u2', 'two', NULL), ('u3', 'three', 'Tres');
         INSERT INTO tweets (id, user_id, text, created_at) VALUES
           ('t1', 'u1', 'hello', '2024-01-01 00:00:00'),
           ('t2', 'u3', 'bye', '2024-01-02 00:00:00');
         INSERT INTO notes (body) VALUES ('a'), ('b');
         INSERT INTO analysis_queue (user_id, total_chunks) VALUES ('u1', 1);
         INSERT INTO _cutover_outbox (table_name, row_key) VALUES ('users', 'u1');
         INSERT INTO _cutover_authority (id, epoch, stage) VALUES (1, 1, 'off');",
    )
    .unwrap();
    path
}

/// The unknowns as the audit's JSON lists them: (name, rows, non-NULL).
fn unknowns(report: &Value) -> Vec<(String, u64, Option<u64>)> {
    report["unknown"]
        .as_array()
        .unwrap_or_else(|| panic!("the audit lists no `unknown`: {report}"))
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["rows"].as_u64().unwrap(),
                u["non_null"].as_u64(),
            )
        })
        .collect()
}

fn expected() -> Vec<(String, u64, Option<u64>)> {
    vec![
        ("notes".to_string(), 2, None),
        ("users.nickname".to_string(), 3, Some(2)),
        ("tweets.lang".to_string(), 2, Some(0)),
    ]
}

fn cutover(dir: &TempDir, sqlite: &Path, db: Option<&TestDb>, args: &[&str]) -> Output {
    common::cutover_cmd(dir.0.path(), sqlite, db, args)
        .output()
        .unwrap()
}

#[test]
fn audit_lists_an_extra_table_and_extra_columns_with_their_counts() {
    let dir = TempDir::new();
    let path = drifted_file(&dir);

    let report = cutover::audit::audit(&path).unwrap();
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(unknowns(&v), expected(), "{}", v["unknown"]);
    let nickname = &v["unknown"][1];
    assert_eq!(nickname["kind"], json!("column"));
    assert_eq!(nickname["table"], json!("users"));
    assert_eq!(nickname["column"], json!("nickname"));
    assert_eq!(v["unknown"][0]["kind"], json!("table"));

    // The CLI: JSON and text, exit 1 while anything is unacknowledged.
    let out = cutover(&dir, &path, None, &["audit", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(unknowns(&v), expected());

    let out = cutover(&dir, &path, None, &["audit"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for line in [
        "table `notes` (2 rows)",
        "column `users.nickname` (2 of 3 rows non-NULL)",
        "column `tweets.lang` (0 of 2 rows non-NULL)",
        "--ignore-unknown",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    // Named, they are still listed, and the audit exits 0.
    let out = cutover(
        &dir,
        &path,
        None,
        &[
            "audit",
            "--json",
            "--ignore-unknown",
            "notes,users.nickname,tweets.lang",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(unknowns(&v), expected());
}

#[test]
fn the_application_s_schema_and_the_dual_store_s_tables_are_no_drift() {
    let dir = TempDir::new();
    // The generator's file.
    let generated = dir.file("generated.db");
    let o = cutover::generate::GenerateOptions {
        users: 20,
        tweets: 100,
        dirty: 0.2,
        seed: 7,
    };
    cutover::generate::generate(&generated, &o).unwrap();
    let v = serde_json::to_value(cutover::audit::audit(&generated).unwrap()).unwrap();
    assert_eq!(v["unknown"], json!([]), "{}", v["unknown"]);

    // The legacy schema with the dual store's own tables (and sqlite_sequence).
    let path = dir.file("legacy.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    c.execute_batch(cutover::outbox::SQLITE_DDL).unwrap();
    c.execute_batch(cutover::authority::SQLITE_DDL).unwrap();
    c.execute_batch(
        "INSERT INTO users (id, username) VALUES ('u1', 'one');
         INSERT INTO analysis_queue (user_id, total_chunks) VALUES ('u1', 1);
         ANALYZE;",
    )
    .unwrap();
    drop(c);
    let v = serde_json::to_value(cutover::audit::audit(&path).unwrap()).unwrap();
    assert_eq!(v["unknown"], json!([]), "{}", v["unknown"]);
    let out = cutover(&dir, &path, None, &["audit"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_refuses_naming_every_unknown_and_copies_nothing() {
    let dir = TempDir::new();
    let path = drifted_file(&dir);
    let db = TestDb::migrated().await;

    // The library.
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.force = true;
    let err = backfill::run(o, std::future::pending())
        .await
        .expect_err("the backfill must refuse a file holding what the schema does not describe");
    let msg = err.to_string();
    for part in [
        "table `notes` (2 rows)",
        "column `users.nickname` (2 of 3 rows non-NULL)",
        "column `tweets.lang` (0 of 2 rows non-NULL)",
        "nothing of it would be copied",
        "--ignore-unknown",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");

    // The CLI: an error (exit 2), the same names.
    let out = cutover(&dir, &path, Some(&db), &["backfill", "--force"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("table `notes` (2 rows)")
            && stderr.contains("column `users.nickname` (2 of 3 rows non-NULL)")
            && stderr.contains("--ignore-unknown"),
        "{stderr}"
    );
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_proceeds_when_every_unknown_is_named_and_records_it() {
    let dir = TempDir::new();
    let path = drifted_file(&dir);
    let db = TestDb::migrated().await;

    // Naming only some still refuses, naming the ones left.
    let out = cutover(
        &dir,
        &path,
        Some(&db),
        &["backfill", "--force", "--ignore-unknown", "notes"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("column `users.nickname` (2 of 3 rows non-NULL)")
            && stderr.contains("column `tweets.lang`")
            && !stderr.contains("table `notes`"),
        "{stderr}"
    );
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");

    // A name that is nothing unknown in the file is refused too (a typo
    // must not pass for an acknowledgement).
    let out = cutover(
        &dir,
        &path,
        Some(&db),
        &[
            "backfill",
            "--force",
            "--ignore-unknown",
            "notes,users.nickname,tweets.lang,users.nick",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("users.nick`"), "{stderr}");
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");

    // All of them named: the known data is copied, the rest left behind,
    // and the acknowledgement recorded and printed.
    let out = cutover(
        &dir,
        &path,
        Some(&db),
        &[
            "backfill",
            "--force",
            "--ignore-unknown",
            "notes,users.nickname,tweets.lang",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("left behind (--ignore-unknown): table `notes` (2 rows)")
            && stdout.contains("column `users.nickname` (2 of 3 rows non-NULL)"),
        "{stdout}"
    );
    let (users, tweets, _) = copied(&db).await;
    assert_eq!((users, tweets), (3, 2));
    let pool = db.pool().await;
    let recorded: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT name, rows, non_null FROM cutover.acknowledged_drift ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        vec![
            ("notes".to_string(), 2, None),
            ("tweets.lang".to_string(), 2, Some(0)),
            ("users.nickname".to_string(), 3, Some(2)),
        ]
    );

    // The library: the summary carries what was left behind; a rerun
    // (resuming, nothing left to copy) records it again, once.
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.force = true;
    o.ignore_unknown = vec!["users.nickname".into(), "tweets.lang".into()];
    let err = backfill::run(o.clone(), std::future::pending())
        .await
        .expect_err("`notes` is not named");
    assert!(err.to_string().contains("table `notes` (2 rows)"), "{err}");
    o.ignore_unknown.push("notes".into());
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let left: Vec<(&str, &str, u64, Option<u64>)> = summary
        .acknowledged_drift
        .iter()
        .map(|u| (u.name.as_str(), u.kind, u.rows, u.non_null))
        .collect();
    assert_eq!(
        left,
        vec![
            ("notes", "table", 2, None),
            ("users.nickname", "column", 3, Some(2)),
            ("tweets.lang", "column", 2, Some(0)),
        ]
    );
    assert!(summary.reconciled(), "{summary:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.acknowledged_drift")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
    pool.close().await;
}
