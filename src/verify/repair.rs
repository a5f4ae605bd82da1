//! `--repair`: rewrite divergent rows on the non-authoritative side.
//!
//! Extras are deleted children first, then authoritative images are upserted
//! parents first, so foreign keys hold at every step; all of it in one
//! transaction per database, so a failure leaves the side as it was.

use sqlx::PgPool;

use super::side::legacy_value;
use super::Fix;
use crate::error::{Backend, Error, Result};
use crate::row::{Cell, OwnedRaw};
use crate::tables::{self, Table};

fn order(schema: &tables::Schema, t: &Table) -> usize {
    schema
        .tables
        .iter()
        .position(|x| x.name == t.name)
        .unwrap_or(usize::MAX)
}

/// Applies the fixes; returns (rows written, rows deleted).
pub(crate) async fn apply(
    schema: &tables::Schema,
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    authority: Backend,
    fixes: &[Fix],
) -> Result<(u64, u64)> {
    let mut deletes: Vec<&Fix> = fixes
        .iter()
        .filter(|f| matches!(f, Fix::Delete(..)))
        .collect();
    let mut upserts: Vec<&Fix> = fixes
        .iter()
        .filter(|f| matches!(f, Fix::Upsert(..)))
        .collect();
    let table_of = |f: &Fix| match f {
        Fix::Upsert(t, _) | Fix::Delete(t, _) => order(schema, t),
    };
    deletes.sort_by_key(|f| std::cmp::Reverse(table_of(f)));
    upserts.sort_by_key(|f| table_of(f));
    let ordered: Vec<Fix> = deletes.into_iter().chain(upserts).cloned().collect();
    let n_del = fixes
        .iter()
        .filter(|f| matches!(f, Fix::Delete(..)))
        .count() as u64;
    let n_up = fixes.len() as u64 - n_del;
    match authority {
        Backend::Sqlite => apply_pg(pool, &ordered).await?,
        Backend::Postgres => sqlite.call(move |c| apply_sqlite(c, &ordered)).await?,
    }
    tracing::info!(written = n_up, deleted = n_del, target = %match authority {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }, "repaired");
    Ok((n_up, n_del))
}

fn named(table: &Table, key: &str, e: impl std::fmt::Display, backend: Backend) -> Error {
    Error::Database {
        backend,
        kind: crate::error::DbErrorKind::Other,
        message: format!("repairing {} row {key:?}: {e}", table.name),
    }
}

fn key_text(table: &Table, cells: &[Cell]) -> String {
    match &cells[table.key_index()] {
        Cell::Text(s) => s.clone(),
        Cell::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

async fn apply_pg(pool: &PgPool, fixes: &[Fix]) -> Result<()> {
    let mut tx = pool.begin().await?;
    let mut serial_touched: Vec<&Table> = Vec::new();
    for f in fixes {
        match f {
            Fix::Delete(t, raw) => {
                let sql = format!("DELETE FROM {} WHERE {} = $1", t.name, t.primary_key);
                let q = sqlx::query(sqlx::AssertSqlSafe(sql));
                let q = match raw {
                    OwnedRaw::Integer(i) => q.bind(i32::try_from(*i).unwrap_or(i32::MAX)),
                    OwnedRaw::Text(b) | OwnedRaw::Blob(b) => {
                        q.bind(String::from_utf8_lossy(b).into_owned())
                    }
                    other => q.bind(format!("{other:?}")),
                };
                q.execute(&mut *tx).await.map_err(|e| {
                    named(t, &crate::row::key_text(raw.as_raw()), e, Backend::Postgres)
                })?;
            }
            Fix::Upsert(t, cells) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(crate::image::upsert_sql(t, true)));
                for (c, cell) in t.columns.iter().zip(cells) {
                    q = crate::image::bind_cell(q, c.kind, cell);
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| named(t, &key_text(t, cells), e, Backend::Postgres))?;
                if t.serial && !serial_touched.iter().any(|x| x.name == t.name) {
                    serial_touched.push(t);
                }
            }
        }
    }
    // Ids written explicitly: move the sequence past them, never back.
    for t in serial_touched {
        crate::sequences::pg_raise(&mut tx, t, 0).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn apply_sqlite(c: &mut rusqlite::Connection, fixes: &[Fix]) -> Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for f in fixes {
        match f {
            Fix::Delete(t, raw) => {
                // Text keys are bound as bytes and cast back, so a key that
                // is not UTF-8 still matches exactly.
                let (param, key): (&str, rusqlite::types::Value) = match raw {
                    OwnedRaw::Null => ("?1", rusqlite::types::Value::Null),
                    OwnedRaw::Integer(i) => ("?1", (*i).into()),
                    OwnedRaw::Real(f) => ("?1", (*f).into()),
                    OwnedRaw::Text(b) => {
                        ("CAST(?1 AS TEXT)", rusqlite::types::Value::Blob(b.clone()))
                    }
                    OwnedRaw::Blob(b) => ("?1", rusqlite::types::Value::Blob(b.clone())),
                };
                tx.execute(
                    &format!("DELETE FROM {} WHERE {} = {param}", t.name, t.primary_key),
                    [key],
                )
                .map_err(|e| named(t, &crate::row::key_text(raw.as_raw()), e, Backend::Sqlite))?;
            }
            Fix::Upsert(t, cells) => {
                let values: Vec<rusqlite::types::Value> = cells.iter().map(legacy_value).collect();
                tx.execute(
                    &crate::image::upsert_sql(t, false),
                    rusqlite::params_from_iter(values),
                )
                .map_err(|e| named(t, &key_text(t, cells), e, Backend::Sqlite))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
