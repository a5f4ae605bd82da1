//! The dual store's machinery, for this crate's own tests and benches
//! (feature `internals`, which only they enable): a stage forced without
//! the gates, outbox drains, single copies and the two stores underneath.
//! An application moves stages with `Cutover::set_stage` /
//! `DualStore::set_stage` and never needs these.

#![allow(async_fn_in_trait)]

use std::time::Duration;

use crate::changes::Change;
use crate::dual::{DualConfig, DualStore};
use crate::error::{Backend, Result};
use crate::pg::PgStore;
use crate::sqlite::SqliteStore;
use crate::stage::Stage;

/// What the tests reach inside a `DualStore`.
pub trait Internals: Sized {
    /// A dual store over both stores, moved to `stage` by a forced flip
    /// when the authority says otherwise.
    async fn forced(
        sqlite: SqliteStore,
        pg: PgStore,
        stage: Stage,
        config: DualConfig,
    ) -> Result<Self>;
    /// Moves every process to `to`, bypassing the go-live gates; returns
    /// the pause writers saw.
    async fn switch(&self, to: Stage) -> Result<Duration>;
    /// Applies the outbox entries of `side` pending now (see the replayer).
    async fn drain(&self, side: Backend, batch: i64) -> Result<u64>;
    /// Copies one changed row from `from` to the other side.
    async fn apply(&self, c: &Change, from: Backend) -> Result<()>;
    /// Clears the PostgreSQL outbox entries applied so far.
    async fn flush_clears(&self) -> Result<()>;
    /// The SQLite store underneath.
    fn sqlite(&self) -> &SqliteStore;
    /// The PostgreSQL store underneath.
    fn pg(&self) -> &PgStore;
}

impl Internals for DualStore {
    async fn forced(
        sqlite: SqliteStore,
        pg: PgStore,
        stage: Stage,
        config: DualConfig,
    ) -> Result<Self> {
        DualStore::forced(sqlite, pg, stage, config).await
    }
    async fn switch(&self, to: Stage) -> Result<Duration> {
        DualStore::switch(self, to).await
    }
    async fn drain(&self, side: Backend, batch: i64) -> Result<u64> {
        DualStore::drain(self, side, batch).await
    }
    async fn apply(&self, c: &Change, from: Backend) -> Result<()> {
        DualStore::apply(self, c, from).await
    }
    async fn flush_clears(&self) -> Result<()> {
        DualStore::flush_clears(self).await
    }
    fn sqlite(&self) -> &SqliteStore {
        DualStore::sqlite(self)
    }
    fn pg(&self) -> &PgStore {
        DualStore::pg(self)
    }
}
