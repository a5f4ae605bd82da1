//! The PostgreSQL schema: `cutover::pg::migrate` builds exactly the plan's
//! tables, a second run changes nothing, and `cutover schema` works from the
//! command line (and fails clearly, without the password, when PostgreSQL
//! cannot be reached).

mod common;

use std::process::Command;

use common::TestDb;
use sqlx::{PgPool, Row};

/// The ```sql block under "3. **Create PostgreSQL Schema**" of the plan, as written there.
fn plan_schema_sql() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/legacy/migration-plan.md");
    let plan = std::fs::read_to_string(path).expect("read legacy/migration-plan.md");
    let mut lines = plan
        .lines()
        .skip_while(|l| !l.contains("3. **Create PostgreSQL Schema**"));
    assert!(lines.next().is_some(), "the plan has no schema step");
    let mut lines = lines.skip_while(|l| l.trim() != "```sql");
    assert!(
        lines.next().is_some(),
        "the schema step has no ```sql block"
    );
    let block: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!block.is_empty(), "the ```sql block is empty");
    block.join("\n")
}

/// One sorted, comparable description of the tables' catalog entries.
#[derive(Debug, PartialEq)]
struct Catalog {
    columns: Vec<String>,
    constraints: Vec<String>,
    indexes: Vec<String>,
    sequences: Vec<String>,
}

/// The catalog of the tables in `schemas`, restricted to `tables` when given.
async fn catalog(pool: &PgPool, schemas: &[&str], tables: Option<&[&str]>) -> Catalog {
    let schemas: Vec<String> = schemas.iter().map(|s| s.to_string()).collect();
    let tables: Option<Vec<String>> = tables.map(|t| t.iter().map(|s| s.to_string()).collect());
    let text_rows = |sql: &'static str| {
        let schemas = schemas.clone();
        let tables = tables.clone();
        async move {
            let rows = sqlx::query(sql)
                .bind(&schemas)
                .bind(&tables)
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("catalog query failed: {e}\n{sql}"));
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<String>>()
        }
    };
    // $2 NULL means every table of the schemas.
    let columns = text_rows(
        "SELECT concat_ws(' | ', n.nspname, c.relname, a.attnum::text, a.attname, \
                format_type(a.atttypid, a.atttypmod), a.atttypmod::text, \
                CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'NULL' END, \
                coalesce(pg_get_expr(d.adbin, d.adrelid), '<no default>')) \
         FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r' \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = ANY($1) AND ($2::text[] IS NULL OR c.relname = ANY($2)) \
           AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY n.nspname, c.relname, a.attnum",
    )
    .await;
    let constraints = text_rows(
        "SELECT concat_ws(' | ', n.nspname, c.relname, con.conname, con.contype::text, \
                pg_get_constraintdef(con.oid)) \
         FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($1) AND ($2::text[] IS NULL OR c.relname = ANY($2)) \
         ORDER BY 1",
    )
    .await;
    // The part of the definition after the table (method, keys, predicate).
    let indexes = text_rows(
        "SELECT concat_ws(' | ', n.nspname, c.relname, i.relname, \
                CASE WHEN x.indisunique THEN 'UNIQUE' ELSE '' END, \
                substring(pg_get_indexdef(x.indexrelid) FROM ' USING .*$')) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class c ON c.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($1) AND ($2::text[] IS NULL OR c.relname = ANY($2)) \
         ORDER BY 1",
    )
    .await;
    let sequences = text_rows(
        "SELECT concat_ws(' | ', sn.nspname, s.relname, 'owned by', t.relname, a.attname, \
                format_type(q.seqtypid, NULL), q.seqstart::text, q.seqincrement::text, \
                q.seqmin::text, q.seqmax::text, q.seqcache::text, q.seqcycle::text) \
         FROM pg_class s \
         JOIN pg_namespace sn ON sn.oid = s.relnamespace \
         JOIN pg_sequence q ON q.seqrelid = s.oid \
         JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid \
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
         JOIN pg_class t ON t.oid = d.refobjid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
         WHERE s.relkind = 'S' AND n.nspname = ANY($1) \
           AND ($2::text[] IS NULL OR t.relname = ANY($2)) \
         ORDER BY 1",
    )
    .await;
    Catalog {
        columns,
        constraints,
        indexes,
        sequences,
    }
}

fn ten_tables() -> Vec<&'static str> {
    cutover::tables::ALL.iter().map(|t| t.name).collect()
}

fn print_diff(what: &str, a: &[String], b: &[String]) {
    for x in a.iter().filter(|x| !b.contains(x)) {
        eprintln!("{what}: only in the plan: {x}");
    }
    for x in b.iter().filter(|x| !a.contains(x)) {
        eprintln!("{what}: only after migrate: {x}");
    }
}

#[tokio::test]
async fn migrate_builds_exactly_the_plans_tables() {
    let plan_db = TestDb::new().await;
    let ours_db = TestDb::new().await;
    let plan_pool = plan_db.pool().await;
    let ours_pool = ours_db.pool().await;

    sqlx::raw_sql(sqlx::AssertSqlSafe(plan_schema_sql()))
        .execute(&plan_pool)
        .await
        .expect("apply the plan's SQL block");
    cutover::pg::migrate(&ours_pool).await.expect("migrate");

    let tables = ten_tables();
    let plan = catalog(&plan_pool, &["public"], Some(&tables)).await;
    let ours = catalog(&ours_pool, &["public"], Some(&tables)).await;

    // The snapshot must describe something, or equality proves nothing.
    for t in &tables {
        assert!(
            plan.columns
                .iter()
                .any(|c| c.starts_with(&format!("public | {t} | "))),
            "the plan's block did not create {t}"
        );
    }
    assert_eq!(plan.columns.len(), 60, "{:#?}", plan.columns);
    assert_eq!(plan.sequences.len(), 4, "{:#?}", plan.sequences);
    assert!(plan
        .indexes
        .iter()
        .any(|i| i.contains("idx_tweets_text") && i.contains("gin")));

    print_diff("column", &plan.columns, &ours.columns);
    print_diff("constraint", &plan.constraints, &ours.constraints);
    print_diff("index", &plan.indexes, &ours.indexes);
    print_diff("sequence", &plan.sequences, &ours.sequences);
    assert_eq!(plan, ours);

    plan_pool.close().await;
    ours_pool.close().await;
}

async fn applied_migrations(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .expect("count _sqlx_migrations")
}

#[tokio::test]
async fn a_second_migrate_changes_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    cutover::pg::migrate(&pool).await.expect("first migrate");
    let before = catalog(&pool, &["public", "cutover"], None).await;
    let n_before = applied_migrations(&pool).await;
    assert!(n_before >= 2, "both migrations are recorded");
    assert!(!before.columns.is_empty());

    cutover::pg::migrate(&pool).await.expect("second migrate");
    let after = catalog(&pool, &["public", "cutover"], None).await;
    assert_eq!(applied_migrations(&pool).await, n_before);
    assert_eq!(before, after);
    pool.close().await;
}

/// `cutover` with a clean environment, run from an empty directory so no
/// `.env.migration` of the developer's is read.
fn cutover_cmd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.current_dir(dir);
    for k in [
        "DATABASE_URL",
        "PG_HOST",
        "PG_PORT",
        "PG_USER",
        "PG_PASSWORD",
        "PG_DATABASE",
        "SQLITE_PATH",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

#[tokio::test]
async fn cutover_schema_runs_twice() {
    let db = TestDb::new().await;
    let dir = common::TempDir::new();
    let url = db.url();
    for run in 1..=2 {
        let out = cutover_cmd(dir.0.path())
            .args(["schema", "--postgres", &url])
            .output()
            .expect("run cutover");
        assert!(
            out.status.success(),
            "run {run}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pool = db.pool().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_name = ANY($1)",
    )
    .bind(ten_tables())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 10);
    pool.close().await;
}

#[test]
fn cutover_schema_reports_unreachable_postgres_without_the_password() {
    let dir = common::TempDir::new();
    let out = cutover_cmd(dir.0.path())
        .args([
            "schema",
            "--postgres",
            "postgres://u:secretpw@127.0.0.1:1/db",
        ])
        .output()
        .expect("run cutover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("secretpw"), "password leaked: {stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("127.0.0.1:1"),
        "the error should say which server could not be reached: {stderr}"
    );
}
