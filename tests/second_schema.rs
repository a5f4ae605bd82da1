//! The engine on another application's tables: a small schema declared
//! here (two tables, a foreign key, a JSON column, a serial id), with no
//! code of its own beyond the declaration and its DDL, goes through the
//! audit (the bad value found), the backfill (the bad row rejected with
//! table, key and column), verify (clean, then a divergence found and
//! repaired) and export back to a SQLite file that holds the same rows.

mod common;

use common::{TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions};
use cutover::convert::RejectReason;
use cutover::tables::{Column, ForeignKey, Kind, Schema, Table};
use cutover::verify::{self, VerifyOptions};
use rusqlite::Connection;

const AUTHORS: Table = Table {
    name: "authors",
    columns: &[
        Column {
            name: "id",
            kind: Kind::Int,
            nullable: false,
            max_len: None,
        },
        Column {
            name: "name",
            kind: Kind::Text,
            nullable: false,
            max_len: Some(40),
        },
    ],
    primary_key: "id",
    serial: true,
    foreign_keys: &[],
    unique: &["name"],
};

const NOTES: Table = Table {
    name: "notes",
    columns: &[
        Column {
            name: "id",
            kind: Kind::Text,
            nullable: false,
            max_len: Some(64),
        },
        Column {
            name: "author_id",
            kind: Kind::Int,
            nullable: false,
            max_len: None,
        },
        Column {
            name: "body",
            kind: Kind::Json,
            nullable: true,
            max_len: None,
        },
        Column {
            name: "written_at",
            kind: Kind::Timestamp,
            nullable: false,
            max_len: None,
        },
    ],
    primary_key: "id",
    serial: false,
    foreign_keys: &[ForeignKey {
        column: "author_id",
        parent_table: "authors",
        parent_column: "id",
    }],
    unique: &[],
};

const SQLITE_DDL: &str = "
    CREATE TABLE authors (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
    CREATE TABLE notes (
        id TEXT PRIMARY KEY,
        author_id INTEGER NOT NULL REFERENCES authors(id),
        body TEXT,
        written_at TIMESTAMP NOT NULL
    );";

const PG_DDL: &str = "
    CREATE TABLE authors (id SERIAL PRIMARY KEY, name VARCHAR(40) NOT NULL UNIQUE);
    CREATE TABLE notes (
        id VARCHAR(64) PRIMARY KEY,
        author_id INTEGER NOT NULL REFERENCES authors(id),
        body JSONB,
        written_at TIMESTAMP WITH TIME ZONE NOT NULL
    );";

static NOTES_APP: Schema = Schema {
    tables: &[&AUTHORS, &NOTES],
    sqlite_ddl: SQLITE_DDL,
};

fn legacy(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.file("notes.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(SQLITE_DDL).unwrap();
    c.execute_batch(
        r#"
        INSERT INTO authors (name) VALUES ('ada'), ('brian'), ('grace');
        INSERT INTO notes (id, author_id, body, written_at) VALUES
          ('n1', 1, '{"tags": ["a", "b"], "n": 12345678901234567890.5}', '2024-03-01 12:34:56'),
          ('n2', 1, NULL, '2024-03-01T12:34:56.789+02:00'),
          ('n3', 2, '{"x": 1}', 1709296496789),
          ('n4', 3, '{"broken": ', '2024-03-02 00:00:00'),
          ('n5', 3, '[]', 'Wed Oct 10 20:19:24 +0000 2018');
        "#,
    )
    .unwrap();
    path
}

/// Rows of a SQLite table as text, in key order.
fn rows(path: &std::path::Path, sql: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    let out = st
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    out
}

#[tokio::test]
async fn another_applications_schema_backfills_verifies_and_exports() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::raw_sql(PG_DDL).execute(&pool).await.unwrap();
    cutover::stage::set(
        &pool,
        &cutover::stage::Change {
            to: cutover::stage::Stage::DualWrite,
            force: false,
            by: "tests/second_schema.rs".into(),
            extra_pending: 0,
        },
    )
    .await
    .unwrap();
    let dir = TempDir::new();
    let path = legacy(&dir);

    // Audit: the schema's tables, the bad JSON value named.
    let audit = cutover::audit::audit_schema(&path, &NOTES_APP).unwrap();
    assert_eq!(
        audit
            .tables
            .iter()
            .map(|t| (t.table, t.rows))
            .collect::<Vec<_>>(),
        [("authors", 3), ("notes", 5)]
    );
    let body = audit.table("notes").unwrap().column("body").unwrap();
    assert_eq!(body.invalid_count(RejectReason::InvalidJson), 1);
    assert!(audit.unknown.is_empty(), "{:?}", audit.unknown);

    // Backfill: every table of the schema, nothing of the Twitter one.
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.schema = &NOTES_APP;
    o.batch_size = 2;
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    let by_table: Vec<_> = summary
        .tables
        .iter()
        .map(|t| (t.table, t.copied, t.rejected_total()))
        .collect();
    assert_eq!(by_table, [("authors", 3, 0), ("notes", 4, 1)]);
    let rejected = cutover::rejects::list(&mut pool.acquire().await.unwrap(), "notes")
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (
            rejected[0].row_key.as_str(),
            rejected[0].column.as_str(),
            rejected[0].reason
        ),
        ("n4", "body", RejectReason::InvalidJson)
    );
    let (n, big): (i64, String) = sqlx::query_as("SELECT count(*), max(body->>'n') FROM notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((n, big.as_str()), (4, "12345678901234567890.5"));
    // The serial id's sequence is past the copied ids.
    let next: i32 = sqlx::query_scalar("INSERT INTO authors (name) VALUES ('new') RETURNING id")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(next > 3, "the sequence hands out {next}");
    sqlx::query("DELETE FROM authors WHERE name = 'new'")
        .execute(&pool)
        .await
        .unwrap();

    // Verify: clean; then a row changed behind the engine's back is found
    // and repaired from SQLite (authoritative in dualwrite).
    let mut vo = VerifyOptions::new(&path, db.settings.clone());
    vo.schema = &NOTES_APP;
    vo.settle = std::time::Duration::ZERO;
    let report = verify::verify(&vo).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.tables.len(), 2);
    sqlx::query("UPDATE notes SET body = '{\"x\": 2}' WHERE id = 'n3'")
        .execute(&pool)
        .await
        .unwrap();
    let report = verify::verify(&vo).await.unwrap();
    assert!(!report.clean);
    let notes = report.tables.iter().find(|t| t.table == "notes").unwrap();
    assert_eq!(notes.divergent_rows(), 1);
    vo.repair = true;
    let report = verify::verify(&vo).await.unwrap();
    assert!(report.clean, "{report:?}");

    // Export: a new SQLite file with the schema's DDL and the same rows,
    // the rejected one restored byte for byte.
    let out = dir.file("exported.db");
    let exported = cutover::export::export_schema(&db.settings, &out, false, true, &NOTES_APP)
        .await
        .unwrap();
    assert_eq!(
        exported.tables.iter().map(|t| t.table).collect::<Vec<_>>(),
        ["authors", "notes"]
    );
    for sql in [
        "SELECT id, name FROM authors ORDER BY id",
        "SELECT id, author_id FROM notes ORDER BY id",
    ] {
        assert_eq!(rows(&out, sql), rows(&path, sql), "{sql}");
    }
    assert_eq!(
        rows(&out, "SELECT body FROM notes WHERE id = 'n4'"),
        rows(&path, "SELECT body FROM notes WHERE id = 'n4'")
    );
    // And the exported file verifies clean against PostgreSQL.
    let mut vo = VerifyOptions::new(&out, db.settings.clone());
    vo.schema = &NOTES_APP;
    vo.settle = std::time::Duration::ZERO;
    let report = verify::verify(&vo).await.unwrap();
    assert!(
        report.tables.iter().all(|t| t.divergent_rows() == 0),
        "{report:?}"
    );
}
