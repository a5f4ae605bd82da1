//! An application's own queries through the dual store: the engine under
//! the Twitter application's `Store`, open to any schema.
//!
//! An application declares its tables (`tables::Schema`), opens both
//! stores with it, and writes each of its operations once per database as
//! a [`WriteQuery`] or a [`ReadQuery`]. The dual store runs them in the
//! same order, under the same locks, with the same change capture, outbox,
//! fallback and shadow comparison as the Twitter application's operations
//! (`routes.rs`): the rows a write changed are found by the capture
//! triggers of the schema's tables and copied to the other side as their
//! current image; nothing here knows the application's columns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::changes::capture;
use crate::error::{Backend, Result};
use crate::pg::PgStore;
use crate::shadow::Policy;
use crate::sqlite::SqliteStore;
use crate::store::Store;

use super::routes::routed_read;
use super::routing::{other_side_of, Routing};
use super::write::{routed_write, runs_again, BUSY_RETRIES};
use super::DualStore;

/// What a [`WriteQuery::postgres`] or [`ReadQuery::postgres`] returns.
pub type PgFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// One application write, given for both databases. Each side runs it
/// inside a write transaction of its own making (a savepoint of SQLite's
/// held transaction; a PostgreSQL transaction whose capture is on): the
/// query writes, it never begins or commits. A failed write leaves nothing
/// on either side. It may run on PostgreSQL more than once when PostgreSQL
/// aborts it as busy (nothing committed), and on SQLite when PostgreSQL is
/// unreachable (fallback).
pub trait WriteQuery: Send + Sync + 'static {
    /// What the write answers.
    type Output: Send + 'static;
    /// The write on SQLite.
    fn sqlite(&self, c: &rusqlite::Connection) -> Result<Self::Output>;
    /// The write on PostgreSQL.
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, Self::Output>;
}

/// One application read, given for both databases. The authoritative side
/// answers; in `shadow` and `live` a sample is read from the other side too
/// and compared as [`ReadQuery::policy`] says, so both sides' answers must
/// serialize alike for the same rows.
pub trait ReadQuery: Send + Sync + 'static {
    /// What the read answers.
    type Output: serde::Serialize + Send + 'static;
    /// The table the read is about (metrics and mismatch reports).
    const TABLE: &'static str;
    /// How the two sides' answers are compared.
    fn policy(&self) -> Policy {
        Policy::Exact
    }
    /// The read on SQLite (a read connection: committed rows only).
    fn sqlite(&self, c: &rusqlite::Connection) -> Result<Self::Output>;
    /// The read on PostgreSQL.
    fn postgres<'c>(&'c self, c: &'c mut sqlx::PgConnection) -> PgFuture<'c, Self::Output>;
}

/// One side of the dual store, as the routed operations see it.
#[derive(Clone, Copy)]
pub(crate) enum Side<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

impl<'a> Side<'a> {
    /// The side as the Twitter application's `Store`.
    pub(crate) fn store(self) -> &'a dyn Store {
        match self {
            Side::Sqlite(s) => s,
            Side::Postgres(p) => p,
        }
    }

    /// Runs an application write in the side's write transaction, its
    /// changes captured.
    pub(crate) async fn write<W: WriteQuery>(self, w: &Arc<W>) -> Result<W::Output> {
        match self {
            Side::Sqlite(s) => {
                let w = Arc::clone(w);
                s.write(move |c| w.sqlite(c)).await
            }
            Side::Postgres(p) => p.run_write(&**w).await,
        }
    }

    /// Runs an application read.
    pub(crate) async fn read<R: ReadQuery>(self, r: &Arc<R>) -> Result<R::Output> {
        match self {
            Side::Sqlite(s) => {
                let r = Arc::clone(r);
                s.read(move |c| r.sqlite(c)).await
            }
            Side::Postgres(p) => p.run_read(&**r).await,
        }
    }
}

impl DualStore {
    /// Runs an application's write (see [`WriteQuery`]) in the one order of
    /// docs/DESIGN.md §3: on the authoritative side first, its changed rows
    /// copied to the other side, exactly as the `Store` operations' writes.
    /// `op` names it in metrics and logs.
    pub async fn write<W: WriteQuery>(&self, op: &'static str, w: W) -> Result<W::Output> {
        let w = Arc::new(w);
        routed_write!(self, op, |s| s.write(&w))
    }

    /// Runs an application's read (see [`ReadQuery`]) on the side the
    /// routing names, sampled for shadow comparison in `shadow` and `live`.
    pub async fn read<R: ReadQuery>(&self, op: &'static str, r: R) -> Result<R::Output> {
        let policy = r.policy();
        routed_read!(self, op, R::TABLE, policy, [r: Arc<R> = Arc::new(r)], |s| s.read(&r))
    }
}
