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

// ----- the same application's queries through the dual store ---------------

use chrono::{DateTime, TimeZone, Utc};
use cutover::dual::{DualConfig, PgFuture, ReadQuery, WriteQuery};
use cutover::sqlite::SqliteOptions;
use cutover::{DualStore, PgStore, SqliteStore, Stage};
use serde_json::{json, Value};

fn bad_value(e: cutover::convert::ValueError) -> cutover::Error {
    cutover::Error::InvalidArgument(e.to_string())
}

/// Adds an author; answers the id the authoritative side handed out.
struct AddAuthor(&'static str);

impl WriteQuery for AddAuthor {
    type Output = i64;
    fn sqlite(&self, c: &Connection) -> cutover::Result<i64> {
        Ok(c.query_row(
            "INSERT INTO authors (name) VALUES (?1) RETURNING id",
            [self.0],
            |r| r.get(0),
        )?)
    }
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, i64> {
        Box::pin(async move {
            let id: i32 = sqlx::query_scalar("INSERT INTO authors (name) VALUES ($1) RETURNING id")
                .bind(self.0)
                .fetch_one(c)
                .await?;
            Ok(i64::from(id))
        })
    }
}

/// Writes a note (insert or replace).
struct SaveNote {
    id: &'static str,
    author_id: i64,
    body: Value,
    at: DateTime<Utc>,
}

impl WriteQuery for SaveNote {
    type Output = ();
    fn sqlite(&self, c: &Connection) -> cutover::Result<()> {
        c.execute(
            "INSERT INTO notes (id, author_id, body, written_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET author_id = excluded.author_id,
               body = excluded.body, written_at = excluded.written_at",
            (
                self.id,
                self.author_id,
                self.body.to_string(),
                cutover::convert::format_timestamp(&self.at),
            ),
        )?;
        Ok(())
    }
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO notes (id, author_id, body, written_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET author_id = excluded.author_id,
                   body = excluded.body, written_at = excluded.written_at",
            )
            .bind(self.id)
            .bind(self.author_id as i32)
            .bind(&self.body)
            .bind(self.at)
            .execute(c)
            .await?;
            Ok(())
        })
    }
}

/// Deletes a note; answers whether there was one.
struct DeleteNote(&'static str);

impl WriteQuery for DeleteNote {
    type Output = bool;
    fn sqlite(&self, c: &Connection) -> cutover::Result<bool> {
        Ok(c.execute("DELETE FROM notes WHERE id = ?1", [self.0])? > 0)
    }
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, bool> {
        Box::pin(async move {
            let n = sqlx::query("DELETE FROM notes WHERE id = $1")
                .bind(self.0)
                .execute(c)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }
}

#[derive(Debug, PartialEq, serde::Serialize)]
struct Note {
    id: String,
    author_id: i64,
    body: Option<Value>,
    written_at: DateTime<Utc>,
}

/// One note by id, read the same way from either side.
struct GetNote(&'static str);

impl ReadQuery for GetNote {
    type Output = Option<Note>;
    const TABLE: &'static str = "notes";
    fn sqlite(&self, c: &Connection) -> cutover::Result<Option<Note>> {
        let mut st =
            c.prepare("SELECT id, author_id, body, written_at FROM notes WHERE id = ?1")?;
        let mut rows = st.query([self.0])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(Note {
            id: r.get(0)?,
            author_id: r.get(1)?,
            body: cutover::convert::json("body", r.get_ref(2)?.into()).map_err(bad_value)?,
            written_at: cutover::convert::timestamp("written_at", r.get_ref(3)?.into())
                .map_err(bad_value)?
                .expect("not null"),
        }))
    }
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, Option<Note>> {
        Box::pin(async move {
            let row: Option<(String, i32, Option<Value>, DateTime<Utc>)> =
                sqlx::query_as("SELECT id, author_id, body, written_at FROM notes WHERE id = $1")
                    .bind(self.0)
                    .fetch_optional(c)
                    .await?;
            Ok(row.map(|(id, author_id, body, written_at)| Note {
                id,
                author_id: i64::from(author_id),
                body,
                written_at,
            }))
        })
    }
}

async fn save(d: &DualStore, id: &'static str, author_id: i64, body: Value, at: DateTime<Utc>) {
    let note = SaveNote {
        id,
        author_id,
        body,
        at,
    };
    d.write("save_note", note).await.unwrap();
}

async fn pg_note(pool: &sqlx::PgPool, id: &str) -> Option<(i32, Value)> {
    sqlx::query_as("SELECT author_id, body FROM notes WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

fn sqlite_note(path: &std::path::Path, id: &str) -> Option<(i64, String)> {
    let c = Connection::open(path).unwrap();
    c.query_row(
        "SELECT author_id, body FROM notes WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

async fn verify_clean(path: &std::path::Path, db: &TestDb) {
    let mut vo = VerifyOptions::new(path, db.settings.clone());
    vo.schema = &NOTES_APP;
    vo.settle = std::time::Duration::from_millis(200);
    let report = verify::verify(&vo).await.unwrap();
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn another_applications_queries_dual_write_in_every_stage() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::raw_sql(PG_DDL).execute(&pool).await.unwrap();
    let dir = TempDir::new();
    let path = dir.file("notes.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SQLITE_DDL).unwrap();
        c.execute_batch(
            r#"INSERT INTO authors (name) VALUES ('ada'), ('brian');
               INSERT INTO notes VALUES ('n1', 1, '{"v": 1}', '2024-03-01 12:34:56'),
                                        ('n2', 2, NULL, 1709296496789);"#,
        )
        .unwrap();
    }
    let sqlite = SqliteStore::open_with(
        &path,
        SqliteOptions {
            schema: &NOTES_APP,
            ..SqliteOptions::default()
        },
    )
    .await
    .unwrap();
    let pg = PgStore::connect(&db.settings)
        .await
        .unwrap()
        .with_schema(&NOTES_APP);
    assert_eq!(pg.install_capture().await.unwrap(), ["authors", "notes"]);
    assert!(pg.install_capture().await.unwrap().is_empty());
    // A store opened for other tables is refused.
    let twitter_pg = PgStore::connect(&db.settings).await.unwrap();
    let other = SqliteStore::open_with(
        &path,
        SqliteOptions {
            schema: &NOTES_APP,
            ..SqliteOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(DualStore::open(other, twitter_pg, DualConfig::default())
        .await
        .is_err());
    let d = DualStore::open(
        sqlite,
        pg,
        DualConfig {
            shadow_sample_rate: 1.0,
            ..DualConfig::default()
        },
    )
    .await
    .unwrap();
    let at = |s: u32| Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, s).unwrap();

    // off: SQLite only.
    assert_eq!(d.stage(), Stage::Off);
    let carol = d.write("add_author", AddAuthor("carol")).await.unwrap();
    assert_eq!(carol, 3);
    save(&d, "off1", carol, json!({"stage": "off"}), at(1)).await;
    assert!(sqlite_note(&path, "off1").is_some());
    assert!(pg_note(&pool, "off1").await.is_none());

    // dualwrite: SQLite authoritative, each change copied to PostgreSQL
    // (a note whose author is not there yet waits in the outbox).
    d.set_stage(Stage::DualWrite, false, "tests").await.unwrap();
    let dave = d.write("add_author", AddAuthor("dave")).await.unwrap();
    assert_eq!(dave, 4);
    save(&d, "dw1", dave, json!({"stage": "dualwrite"}), at(2)).await;
    assert_eq!(
        pg_note(&pool, "dw1").await,
        Some((4, json!({"stage": "dualwrite"})))
    );
    save(&d, "n1", 1, json!({"v": 2}), at(3)).await;
    assert!(d.write("delete_note", DeleteNote("n2")).await.unwrap());

    // The history: backfilled while the dual store runs; then both sides
    // hold the same rows.
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.schema = &NOTES_APP;
    let summary = backfill::run(o, std::future::pending()).await.unwrap();
    assert_eq!(summary.tables.len(), 2);
    verify_clean(&path, &db).await;
    assert_eq!(pg_note(&pool, "n1").await, Some((1, json!({"v": 2}))));
    assert!(pg_note(&pool, "n2").await.is_none());

    // shadow: reads compared with PostgreSQL's answers.
    d.set_stage(Stage::Shadow, false, "tests").await.unwrap();
    save(&d, "sh1", 2, json!([1, 2]), at(4)).await;
    for id in ["n1", "off1", "dw1", "sh1", "gone"] {
        let got = d.read("get_note", GetNote(id)).await.unwrap();
        assert_eq!(got.is_some(), id != "gone", "{id}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let c = loop {
        let c = d.counters();
        if c.comparisons >= 5 || std::time::Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(c.comparisons, 5, "{c:?}");
    assert_eq!(c.mismatches_real, 0, "{c:?}");

    // live: the gates judged on this schema's tables (both backfilled, a
    // clean verify after dual writes began, nothing pending), no force.
    verify_clean(&path, &db).await;
    d.set_stage(Stage::Live, false, "tests").await.unwrap();
    // PostgreSQL hands out ids now: past every id SQLite handed out.
    let erin = d.write("add_author", AddAuthor("erin")).await.unwrap();
    assert!(erin > dave, "PostgreSQL handed out {erin}");
    save(&d, "live1", erin, json!({"stage": "live"}), at(5)).await;
    assert!(d.write("delete_note", DeleteNote("dw1")).await.unwrap());
    d.settle().await;
    assert_eq!(
        sqlite_note(&path, "live1"),
        Some((erin, r#"{"stage":"live"}"#.to_string()))
    );
    assert!(sqlite_note(&path, "dw1").is_none());
    let got = d.read("get_note", GetNote("live1")).await.unwrap().unwrap();
    assert_eq!(got.written_at, at(5));
    verify_clean(&path, &db).await;

    // rampdown: still copied back to SQLite.
    d.set_stage(Stage::Rampdown, false, "tests").await.unwrap();
    save(&d, "rd1", erin, json!({"stage": "rampdown"}), at(6)).await;
    d.settle().await;
    assert!(sqlite_note(&path, "rd1").is_some());
    verify_clean(&path, &db).await;

    // complete: PostgreSQL only.
    d.set_stage(Stage::Complete, false, "tests").await.unwrap();
    save(&d, "done1", erin, json!({"stage": "complete"}), at(7)).await;
    assert!(pg_note(&pool, "done1").await.is_some());
    assert!(sqlite_note(&path, "done1").is_none());
    let c = d.counters();
    assert_eq!((c.failed_calls, c.secondary_failures), (0, 0), "{c:?}");
}

#[tokio::test]
async fn an_application_starts_the_cutover_handle_on_its_own_tables() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::raw_sql(PG_DDL).execute(&pool).await.unwrap();
    let dir = TempDir::new();
    let path = dir.file("notes.db");
    let mut config = cutover::CutoverConfig::new(&path, db.settings.clone());
    config.schema = &NOTES_APP;
    // The capture of its tables is not installed yet: refused, naming how.
    let err = cutover::Cutover::start(config.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("authors, notes") && err.contains("install_capture"),
        "{err}"
    );
    // With `migrate` it installs them; a new file gets the schema's DDL.
    config.migrate = true;
    let c = cutover::Cutover::start(config).await.unwrap();
    let store = c.store();
    assert_eq!(store.schema().tables.len(), 2);
    c.set_stage(Stage::DualWrite, false).await.unwrap();
    let id = store.write("add_author", AddAuthor("ada")).await.unwrap();
    store
        .write(
            "save_note",
            SaveNote {
                id: "h1",
                author_id: id,
                body: json!({"via": "Cutover"}),
                at: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            },
        )
        .await
        .unwrap();
    c.shutdown().await;
    assert_eq!(
        pg_note(&pool, "h1").await,
        Some((id as i32, json!({"via": "Cutover"})))
    );
    assert!(sqlite_note(&path, "h1").is_some());
}

// ----- several processes on the second schema ---------------------------------

const NOTE_WRITERS: u64 = 4;

/// A child process: a `Cutover` on the notes schema whose writers save,
/// update and delete their own notes (and two notes every process
/// updates) until the stop file appears, logging each acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by several_processes_write_the_second_schema_across_flips"]
async fn notes_child() {
    let (Ok(path), Ok(url), Ok(id), Ok(log), Ok(stop)) = (
        std::env::var("NOTES_SQLITE"),
        std::env::var("NOTES_URL"),
        std::env::var("NOTES_ID"),
        std::env::var("NOTES_LOG"),
        std::env::var("NOTES_STOP"),
    ) else {
        return;
    };
    let mut config = cutover::CutoverConfig::new(
        &path,
        cutover::settings::PgSettings::from_url(&url).unwrap(),
    );
    config.schema = &NOTES_APP;
    config.stage_poll = std::time::Duration::from_millis(200);
    config.replay_interval = std::time::Duration::from_millis(100);
    config.dual.shadow_sample_rate = 0.2;
    let c = cutover::Cutover::start(config).await.unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(std::fs::File::create(log).unwrap()));
    eprintln!("notes child {id} ready");
    let mut tasks = Vec::new();
    for w in 0..NOTE_WRITERS {
        let (d, log, stop, id) = (c.store(), log.clone(), stop.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            use std::io::Write;
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            let mut i = 0u64;
            while !std::path::Path::new(&stop).exists() {
                i += 1;
                let note = leak(format!("p{id}w{w}n{i}"));
                let body = json!({"p": id, "w": w, "i": i});
                let (line, r) = if i.is_multiple_of(5) {
                    let gone = leak(format!("p{id}w{w}n{}", i - 2));
                    let r = d.write("delete_note", DeleteNote(gone)).await.map(|_| ());
                    (json!({"deleted": gone}), r)
                } else {
                    let target = if i.is_multiple_of(3) {
                        leak(format!("hot{}", i % 2))
                    } else {
                        note
                    };
                    let save = SaveNote {
                        id: target,
                        author_id: 1,
                        body: body.clone(),
                        at: Utc::now(),
                    };
                    let r = d.write("save_note", save).await;
                    (json!({"saved": target, "body": body}), r)
                };
                let line = match r {
                    Ok(()) => line,
                    Err(e) => json!({"failed": e.to_string()}),
                };
                writeln!(log.lock().unwrap(), "{line}").unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_write_the_second_schema_across_flips() {
    use std::collections::BTreeMap;
    use std::io::BufRead;
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::raw_sql(PG_DDL).execute(&pool).await.unwrap();
    let dir = TempDir::new();
    let path = dir.file("notes.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SQLITE_DDL).unwrap();
        c.execute_batch("INSERT INTO authors (name) VALUES ('ada');")
            .unwrap();
    }
    let mut config = cutover::CutoverConfig::new(&path, db.settings.clone());
    config.schema = &NOTES_APP;
    config.migrate = true;
    let parent = cutover::Cutover::start(config).await.unwrap();
    parent.set_stage(Stage::DualWrite, false).await.unwrap();
    let mut o = BackfillOptions::new(&path, db.settings.clone());
    o.schema = &NOTES_APP;
    backfill::run(o, std::future::pending()).await.unwrap();

    let stop = dir.file("stop");
    let mut children = Vec::new();
    for id in 0..2 {
        let log = dir.file(&format!("child{id}.log"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "notes_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NOTES_SQLITE", &path)
            .env("NOTES_URL", db.url())
            .env("NOTES_ID", id.to_string())
            .env("NOTES_LOG", &log)
            .env("NOTES_STOP", &stop)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(|l| l.ok())
            {
                if line.contains("ready") {
                    let _ = tx.send(());
                }
                if line.contains("panicked") || line.contains("ERROR") {
                    eprintln!("child: {line}");
                }
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the child started");
        children.push((child, log));
    }

    // Flips while they write: dualwrite → shadow → live ⇄ shadow → live → rampdown.
    for to in [
        Stage::Shadow,
        Stage::Live,
        Stage::Shadow,
        Stage::Live,
        Stage::Rampdown,
    ] {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        parent.set_stage(to, true).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    std::fs::File::create(&stop).unwrap();
    for (child, _) in &mut children {
        assert!(child.wait().unwrap().success());
    }
    // A flip under the lock drains both outboxes.
    parent.set_stage(Stage::Live, true).await.unwrap();
    parent.shutdown().await;

    // Every acknowledged write of a writer's own notes is the final state
    // on both sides; the shared notes are compared by verify.
    let mut want: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut acked = 0;
    for (_, log) in &children {
        for line in std::io::BufReader::new(std::fs::File::open(log).unwrap()).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            assert!(v.get("failed").is_none(), "a write failed: {v}");
            acked += 1;
            if let Some(id) = v["saved"].as_str() {
                if !id.starts_with("hot") {
                    want.insert(id.to_string(), Some(v["body"].clone()));
                }
            } else if let Some(id) = v["deleted"].as_str() {
                want.insert(id.to_string(), None);
            }
        }
    }
    assert!(acked > 50, "only {acked} writes");
    let mut missing = Vec::new();
    for (id, body) in &want {
        let pg = pg_note(&pool, id).await.map(|(_, b)| b);
        let sqlite =
            sqlite_note(&path, id).map(|(_, b)| serde_json::from_str::<Value>(&b).unwrap());
        if pg != *body || sqlite != *body {
            missing.push(format!(
                "{id}: acknowledged {body:?}, PostgreSQL {pg:?}, SQLite {sqlite:?}"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {}: {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)]
    );
    verify_clean(&path, &db).await;
    eprintln!("{acked} acknowledged writes, {} notes checked", want.len());
}
