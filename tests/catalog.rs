//! The declared schema (`cutover::tables`) against what the migrations
//! build on PostgreSQL and what the legacy SQLite schema holds: columns in
//! order, types, nullability, lengths, keys, serial keys, foreign keys and
//! unique columns. Drift between the code and either schema fails here.

mod common;

use std::collections::BTreeSet;

use cutover::tables::{Kind, Table, ALL};

fn pg_type(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Text | Kind::Status => &["character varying", "text"],
        Kind::Timestamp => &["timestamp with time zone"],
        Kind::Bool => &["boolean"],
        Kind::Json => &["jsonb"],
        Kind::Int => &["integer"],
    }
}

fn sqlite_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text | Kind::Status | Kind::Json => "TEXT",
        Kind::Timestamp => "DATETIME",
        Kind::Bool => "BOOLEAN",
        Kind::Int => "INTEGER",
    }
}

/// The declared length: `max_len`, and `VARCHAR(50)` for a job status.
fn declared_len(t: &Table, c: &cutover::tables::Column) -> Option<i32> {
    let _ = t;
    c.max_len
        .map(|n| n as i32)
        .or((c.kind == Kind::Status).then_some(50))
}

fn fks(t: &Table) -> BTreeSet<(String, String, String)> {
    t.foreign_keys
        .iter()
        .map(|f| {
            (
                f.column.to_string(),
                f.parent_table.to_string(),
                f.parent_column.to_string(),
            )
        })
        .collect()
}

/// What one schema (`side`) shows against the declaration, the same checks
/// for PostgreSQL's catalog and the legacy SQLite schema.
struct Drift {
    side: &'static str,
    problems: Vec<String>,
}

impl Drift {
    fn new(side: &'static str) -> Self {
        Self {
            side,
            problems: Vec::new(),
        }
    }

    fn push(&mut self, p: String) {
        self.problems.push(p);
    }

    /// The set of tables.
    fn tables(&mut self, found: BTreeSet<String>) {
        let declared: BTreeSet<String> = ALL.iter().map(|t| t.name.to_string()).collect();
        if found != declared {
            let side = self.side;
            self.push(format!("tables: {side} {found:?}, declared {declared:?}"));
        }
    }

    /// Column names in order; false when they differ (the per-column
    /// checks then have nothing to pair).
    fn column_names<'a>(&mut self, t: &Table, found: impl Iterator<Item = &'a str>) -> bool {
        let names: Vec<&str> = found.collect();
        let want: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
        if names != want {
            self.push(format!("{}: columns {names:?}, declared {want:?}", t.name));
        }
        names == want
    }

    fn foreign_keys(&mut self, t: &Table, found: BTreeSet<(String, String, String)>) {
        if found != fks(t) {
            self.push(format!(
                "{}: foreign keys {found:?}, declared {:?}",
                t.name,
                fks(t)
            ));
        }
    }

    fn unique(&mut self, t: &Table, found: BTreeSet<String>) {
        let want: BTreeSet<String> = t.unique.iter().map(|s| s.to_string()).collect();
        if found != want {
            self.push(format!("{}: unique {found:?}, declared {want:?}", t.name));
        }
    }

    fn assert_none(self) {
        assert!(
            self.problems.is_empty(),
            "{} schema drift:\n{}",
            self.side,
            self.problems.join("\n")
        );
    }
}

/// name, data type, nullable ("YES"/"NO"), character length, default.
type CatalogColumn = (String, String, String, Option<i32>, Option<String>);

#[tokio::test]
async fn the_declared_schema_is_the_migrated_postgresql_catalog() {
    let db = common::TestDb::migrated().await;
    let pool = db.pool().await;
    let mut problems = Drift::new("catalog");

    let tables: BTreeSet<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    problems.tables(tables);

    for t in ALL {
        let cols: Vec<CatalogColumn> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text,
                    character_maximum_length::int, column_default::text
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(t.name)
        .fetch_all(&pool)
        .await
        .unwrap();
        if !problems.column_names(t, cols.iter().map(|c| c.0.as_str())) {
            continue;
        }
        for (c, (name, ty, nullable, len, default)) in t.columns.iter().zip(&cols) {
            if !pg_type(c.kind).contains(&ty.as_str()) {
                problems.push(format!(
                    "{}.{name}: type {ty}, declared {:?}",
                    t.name, c.kind
                ));
            }
            if (nullable == "YES") != c.nullable {
                problems.push(format!(
                    "{}.{name}: nullable {nullable}, declared nullable {}",
                    t.name, c.nullable
                ));
            }
            if *len != declared_len(t, c) {
                problems.push(format!(
                    "{}.{name}: length {len:?}, declared {:?}",
                    t.name,
                    declared_len(t, c)
                ));
            }
            let serial = default
                .as_deref()
                .is_some_and(|d| d.starts_with("nextval("));
            if *name == t.primary_key && serial != t.serial {
                problems.push(format!(
                    "{}: serial key {serial}, declared {}",
                    t.name, t.serial
                ));
            }
        }

        let pk: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::regclass AND i.indisprimary",
        )
        .bind(t.name)
        .fetch_all(&pool)
        .await
        .unwrap();
        if pk != [t.primary_key] {
            problems.push(format!(
                "{}: primary key {pk:?}, declared {}",
                t.name, t.primary_key
            ));
        }

        let catalog_fks: BTreeSet<(String, String, String)> = sqlx::query_as(
            "SELECT a.attname::text, p.relname::text, pa.attname::text
             FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             JOIN pg_class p ON p.oid = c.confrelid
             JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1]
             WHERE c.conrelid = $1::regclass AND c.contype = 'f'",
        )
        .bind(t.name)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        problems.foreign_keys(t, catalog_fks);

        let unique: BTreeSet<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             WHERE c.conrelid = $1::regclass AND c.contype = 'u' AND cardinality(c.conkey) = 1",
        )
        .bind(t.name)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        problems.unique(t, unique);
    }
    problems.assert_none();
}

#[test]
fn the_declared_schema_is_the_legacy_sqlite_schema() {
    let c = rusqlite::Connection::open_in_memory().unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    let mut problems = Drift::new("legacy");

    let tables: BTreeSet<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    problems.tables(tables);

    for t in ALL {
        // (name, declared type, not null, primary-key position)
        let cols: Vec<(String, String, bool, i64)> = c
            .prepare(&format!("PRAGMA table_info(\"{}\")", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(5)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if !problems.column_names(t, cols.iter().map(|c| c.0.as_str())) {
            continue;
        }
        for (col, (name, ty, not_null, pk)) in t.columns.iter().zip(&cols) {
            if !ty.eq_ignore_ascii_case(sqlite_type(col.kind)) {
                problems.push(format!(
                    "{}.{name}: type {ty}, declared {:?}",
                    t.name, col.kind
                ));
            }
            // SQLite does not make a primary key NOT NULL; PostgreSQL does.
            if *pk == 0 && *not_null == col.nullable {
                problems.push(format!(
                    "{}.{name}: NOT NULL {not_null}, declared nullable {}",
                    t.name, col.nullable
                ));
            }
            if (*pk > 0) != (*name == t.primary_key) {
                problems.push(format!("{}.{name}: primary key position {pk}", t.name));
            }
        }
        let sql: String = c
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [t.name],
                |r| r.get(0),
            )
            .unwrap();
        if sql.to_ascii_uppercase().contains("AUTOINCREMENT") != t.serial {
            problems.push(format!(
                "{}: AUTOINCREMENT differs from serial {}",
                t.name, t.serial
            ));
        }

        let legacy_fks: BTreeSet<(String, String, String)> = c
            .prepare(&format!("PRAGMA foreign_key_list(\"{}\")", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(3)?, r.get(2)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        problems.foreign_keys(t, legacy_fks);

        let mut unique = BTreeSet::new();
        let indexes: Vec<(String, bool, String)> = c
            .prepare(&format!("PRAGMA index_list(\"{}\")", t.name))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (index, is_unique, origin) in indexes {
            if !is_unique || origin != "u" {
                continue;
            }
            let cols: Vec<String> = c
                .prepare(&format!("PRAGMA index_info(\"{index}\")"))
                .unwrap()
                .query_map([], |r| r.get(2))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            if cols.len() == 1 {
                unique.insert(cols[0].clone());
            }
        }
        problems.unique(t, unique);
    }
    problems.assert_none();
}

/// Each table's `cutover_capture` trigger arguments, from the catalog.
async fn capture_args(pool: &sqlx::PgPool) -> std::collections::BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT c.relname::text, t.tgargs FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE t.tgname = 'cutover_capture' AND NOT t.tgisinternal",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, a)| {
            (
                t,
                a.split(|b| *b == 0)
                    .filter(|x| !x.is_empty())
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_capture_triggers_follow_the_declared_schema() {
    let db = common::TestDb::migrated().await;
    let pool = db.pool().await;
    // Every declared table is captured with its key and its nullable JSON
    // columns (whose SQL NULL the notes must tell from JSON null).
    let args = capture_args(&pool).await;
    for t in ALL {
        let mut want = vec![t.name.to_string(), t.primary_key.to_string()];
        want.extend(
            t.columns
                .iter()
                .filter(|c| c.kind == Kind::Json && c.nullable)
                .map(|c| c.name.to_string()),
        );
        assert_eq!(args.get(t.name), Some(&want), "{}", t.name);
    }
    assert_eq!(args.len(), ALL.len(), "{args:?}");

    // A trigger gone (or changed by hand) is found, named, and put back by
    // `cutover schema` (pg::migrate) from the declaration.
    sqlx::query("DROP TRIGGER cutover_capture ON tweets")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER cutover_capture ON users;
         CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON users
         FOR EACH ROW EXECUTE FUNCTION cutover.capture('users', 'id')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let e = cutover::pg::require_current(&pool)
        .await
        .expect_err("a missing capture trigger is refused");
    let msg = e.to_string();
    assert!(
        msg.contains("tweets") && msg.contains("cutover schema"),
        "{msg}"
    );
    let report = cutover::pg::migrate(&pool).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(
        report.capture_installed,
        vec!["users".to_string(), "tweets".to_string()],
        "{report:?}"
    );
    cutover::pg::require_current(&pool).await.unwrap();
    assert_eq!(capture_args(&pool).await, args);
}
