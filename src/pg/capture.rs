//! The change-capture triggers, generated from the declared schema
//! (`tables::Schema`): every table gets `cutover_capture`, calling the one
//! generic `cutover.capture()` function (migration 0008) with the table's
//! name, its key column and its nullable JSON columns. `cutover schema`
//! installs them after the migrations; a table whose trigger already has
//! those arguments is left alone (no lock taken on a live table).

use sqlx::PgPool;

use crate::error::Result;
use crate::tables::{Kind, Schema, Table};

/// The trigger's arguments a table needs: name, key, nullable JSON columns.
pub(crate) fn arguments(t: &Table) -> Vec<String> {
    let mut args = vec![t.name.to_string(), t.primary_key.to_string()];
    args.extend(
        t.columns
            .iter()
            .filter(|c| c.kind == Kind::Json && c.nullable)
            .map(|c| c.name.to_string()),
    );
    args
}

/// Each table's current `cutover_capture` arguments (None: no trigger).
pub(crate) async fn installed(
    pool: &PgPool,
    schema: &Schema,
) -> Result<Vec<(String, Option<Vec<String>>)>> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT c.relname::text, t.tgargs FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE t.tgname = 'cutover_capture' AND NOT t.tgisinternal
           AND n.nspname = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    Ok(schema
        .tables
        .iter()
        .map(|t| {
            let args = rows.iter().find(|r| r.0 == t.name).map(|r| {
                r.1.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            });
            (t.name.to_string(), args)
        })
        .collect())
}

/// Tables whose trigger is missing or has other arguments than the
/// declared schema gives.
pub(crate) async fn stale(pool: &PgPool, schema: &Schema) -> Result<Vec<&'static str>> {
    let now = installed(pool, schema).await?;
    Ok(schema
        .tables
        .iter()
        .filter(|t| {
            let want = arguments(t);
            !now.iter()
                .any(|(name, args)| name == t.name && args.as_ref() == Some(&want))
        })
        .map(|t| t.name)
        .collect())
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates or replaces the triggers that differ from the declared schema;
/// returns the tables changed.
pub(crate) async fn install(pool: &PgPool, schema: &Schema) -> Result<Vec<&'static str>> {
    let stale = stale(pool, schema).await?;
    if stale.is_empty() {
        return Ok(stale);
    }
    let mut tx = pool.begin().await?;
    for name in &stale {
        let t = schema.by_name(name).expect("a declared table");
        let args: Vec<String> = arguments(t).iter().map(|a| literal(a)).collect();
        let table = ident(t.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER IF EXISTS cutover_capture ON {table};
             CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON {table}
             FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
             EXECUTE FUNCTION cutover.capture({})",
            args.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(stale)
}
