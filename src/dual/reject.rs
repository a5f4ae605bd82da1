//! Legacy rows the application changed that PostgreSQL cannot take.

use crate::changes::Change;
use crate::error::{Error, Result};
use crate::image::{self, Key};
use crate::outbox;

use super::DualStore;

impl DualStore {
    /// A foreign-key failure is only lag while a parent table still has
    /// entries waiting in the SQLite outbox: then the entry stays and is
    /// retried after them.
    pub(super) async fn parent_pending(&self, c: &Change, e: &Error) -> bool {
        if e.db_kind() != Some(crate::DbErrorKind::ForeignKeyViolation) {
            return false;
        }
        let Some(table) = self.schema().by_name(c.table) else {
            return false;
        };
        let parents: Vec<&'static str> =
            table.foreign_keys.iter().map(|f| f.parent_table).collect();
        self.sqlite_rw(move |conn| outbox::sqlite_any_in_tables(conn, &parents))
            .await
            .unwrap_or(true)
    }

    /// A legacy row the application changed that PostgreSQL cannot take
    /// (its value cannot be converted exactly, or its parent was rejected by
    /// the backfill): it is recorded in `cutover.rejects` like any backfill
    /// reject, with its original image, and its outbox entry is cleared, so
    /// one bad legacy row never blocks the outbox behind it.
    pub(super) async fn reject_change(&self, c: &Change, e: &Error) -> Result<()> {
        let table = self.schema().by_name(c.table).expect("checked by apply");
        let key = Key::parse(table, &c.key)?;
        let (reason, column, detail) = match e {
            Error::InvalidValue {
                reason,
                column,
                detail,
                ..
            } => (*reason, column.to_string(), detail.clone()),
            Error::Database {
                kind: crate::DbErrorKind::ForeignKeyViolation,
                message,
                ..
            } => (
                crate::convert::RejectReason::Orphan,
                table
                    .foreign_keys
                    .first()
                    .map(|f| f.column)
                    .unwrap_or("")
                    .to_string(),
                message.clone(),
            ),
            Error::Database {
                kind: crate::DbErrorKind::CheckViolation,
                message,
                ..
            } => (
                crate::convert::RejectReason::CheckViolation,
                String::new(),
                message.clone(),
            ),
            Error::Database {
                kind: crate::DbErrorKind::InvalidData,
                message,
                ..
            } => (
                crate::convert::RejectReason::Refused,
                String::new(),
                message.clone(),
            ),
            other => (
                crate::convert::RejectReason::NotNull,
                String::new(),
                other.to_string(),
            ),
        };
        let (k, cc) = (key.clone(), c.clone());
        let (original, hw) = self
            .sqlite_rw(move |conn| -> Result<(serde_json::Value, Option<i64>)> {
                let sql = format!(
                    "SELECT {} FROM {} WHERE {} = ?1",
                    table.column_list(),
                    table.name,
                    table.primary_key
                );
                let key_value = match &k {
                    Key::Text(s) => rusqlite::types::Value::Text(s.clone()),
                    Key::Int(i) => rusqlite::types::Value::Integer(*i as i64),
                };
                let mut stmt = conn.prepare(&sql)?;
                let mut rows = stmt.query([key_value])?;
                let original = match rows.next()? {
                    Some(r) => {
                        let raws: Vec<crate::convert::Raw<'_>> = (0..table.columns.len())
                            .map(|i| r.get_ref(i).map(Into::into))
                            .collect::<rusqlite::Result<_>>()?;
                        crate::row::original_image(table, &raws)
                    }
                    None => serde_json::json!({}),
                };
                Ok((original, outbox::sqlite_high_water(conn, &cc)?))
            })
            .await?;
        let mut conn = self.inner.pg.pool().acquire().await?;
        crate::rejects::insert(
            &mut conn,
            &[crate::rejects::RejectRecord {
                table: table.name.to_string(),
                row_key: c.key.clone(),
                source_rowid: None,
                column,
                reason,
                detail: format!("changed by the application during the move: {detail}"),
                policy: crate::row::Policy::RejectRow,
                row_copied: false,
                original,
            }],
        )
        .await?;
        // Whatever older copy PostgreSQL holds is no longer the row's image.
        image::pg_delete(self.inner.pg.pool(), table, &key)
            .await
            .ok();
        if let Some(hw) = hw {
            let cc = c.clone();
            self.inner
                .sqlite
                .locked(move |conn| outbox::sqlite_clear(conn, &cc, hw))
                .await?;
        }
        if reason == crate::convert::RejectReason::Orphan
            && self.routing().stage == crate::stage::Stage::DualWrite
        {
            // Expected while the backfill has not brought the parents yet.
            tracing::info!(table = c.table, key = %c.key, "row recorded in cutover.rejects as an orphan: its parent is not in PostgreSQL (not copied yet, or rejected)");
        } else {
            tracing::warn!(table = c.table, key = %c.key, reason = %reason, "legacy row changed by the application cannot be copied; recorded in cutover.rejects");
        }
        Ok(())
    }
}
