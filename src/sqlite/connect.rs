//! Opening the legacy file: `SqliteStore`'s connections (one writer, two
//! readers under WAL), its locks (`lock.rs`, `order.rs`) and outbox switch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::write::install_change_capture;
use crate::error::Result;
use crate::tables::Schema;

/// Options for opening the SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a statement waits for SQLite's write lock before failing `Busy`.
    pub busy_timeout: Duration,
    /// The application's tables: what a new file is created with, and
    /// what the change capture watches (the Twitter application's by
    /// default).
    pub schema: &'static Schema,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
            schema: &crate::tables::TWITTER,
        }
    }
}

/// The legacy SQLite database as a `Store`.
#[derive(Clone)]
pub struct SqliteStore {
    pub(super) conn: tokio_rusqlite::Connection,
    // Reads go to their own connections (WAL lets them run beside the
    // writer), so a long read never delays a write or an outbox drain.
    pub(super) readers: Arc<Vec<tokio_rusqlite::Connection>>,
    pub(super) next_reader: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) outbox: Arc<AtomicBool>,
    pub(super) lock: crate::sqlite::lock::WriteLock,
    pub(super) order: crate::sqlite::order::OrderLock,
    pub(super) schema: &'static Schema,
}

/// Read connections per store.
const READERS: usize = 2;

impl SqliteStore {
    /// Opens `path` (creating the legacy schema when the file is new).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens `path` with options.
    ///
    /// Sets WAL and `synchronous=NORMAL` so readers never block the writer;
    /// leaves foreign keys off, as the legacy application always ran (the
    /// file holds orphans, and the store checks parents itself). A file with
    /// no table gets the schema's DDL; an existing file's tables are never
    /// altered.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let schema = options.schema;
        let conn = tokio_rusqlite::Connection::open(path.as_ref()).await?;
        conn.call(move |c| -> Result<()> {
            c.busy_timeout(options.busy_timeout)?;
            // journal_mode answers with a row, so it is read, not executed.
            let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            c.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;")?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tables: i64 = tx.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )?;
            if tables == 0 {
                tx.execute_batch(schema.sqlite_ddl)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        conn.call(move |c| install_change_capture(c, schema))
            .await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = tokio_rusqlite::Connection::open(path.as_ref()).await?;
            r.call(move |c| -> Result<()> {
                c.busy_timeout(options.busy_timeout)?;
                c.execute_batch("PRAGMA query_only=ON;")?;
                Ok(())
            })
            .await?;
            readers.push(r);
        }
        Ok(Self {
            conn,
            readers: Arc::new(readers),
            next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            outbox: Arc::new(AtomicBool::new(false)),
            lock: crate::sqlite::lock::WriteLock::for_path(path.as_ref())?,
            order: crate::sqlite::order::OrderLock::for_path(path.as_ref())?,
            schema,
        })
    }

    /// The application's tables this store was opened with.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// Takes SQLite's write lock for a whole dual write (see `lock.rs`):
    /// this process's writer slot, the cross-process lock file and
    /// `BEGIN IMMEDIATE`. The store's own writes made inside
    /// `lock::within` join the held transaction.
    pub async fn lock(&self) -> Result<crate::sqlite::Locked> {
        self.lock.acquire(&self.conn).await
    }

    /// Runs `f` as one write transaction under the write lock, in a
    /// single call on the connection's thread (`WriteLock::transact`).
    pub(crate) async fn transact<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.lock.transact(&self.conn, f).await
    }

    /// The order lock, shared: held by writes made with PostgreSQL
    /// authoritative, side by side (`order.rs`); `blocked` runs before
    /// waiting for a flip made in this process.
    pub(crate) async fn order_shared(
        &self,
        blocked: impl FnOnce(),
    ) -> Result<crate::sqlite::order::OrderGuard> {
        self.order.shared(blocked).await
    }

    /// The authority generation of the order lock (read holding it).
    pub(crate) fn order_generation(&self) -> Result<Option<u64>> {
        self.order.generation()
    }

    /// The order lock, exclusive: held by whoever moves the authority.
    pub(crate) async fn order_exclusive(&self) -> Result<crate::sqlite::order::OrderGuard> {
        self.order.exclusive().await
    }

    /// As `lock`, then runs `first` inside the new transaction in the same
    /// call (a failure of `first` releases the lock).
    pub(crate) async fn lock_then<R, F>(&self, first: F) -> Result<(crate::sqlite::Locked, R)>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.lock.acquire_then(&self.conn, first).await
    }

    /// Whether a task of this process holds the write lock now.
    pub fn slot_taken(&self) -> bool {
        self.lock.slot_taken()
    }

    /// Switches outbox recording on or off: when on, every write records the
    /// keys it changed in `_cutover_outbox` inside its own transaction.
    pub fn set_outbox(&self, on: bool) {
        self.outbox.store(on, AtomicOrdering::SeqCst);
    }

    /// Whether writes record their changes in the outbox.
    pub fn outbox_enabled(&self) -> bool {
        self.outbox.load(AtomicOrdering::SeqCst)
    }

    /// Creates the outbox and authority tables beside the legacy tables
    /// (which stay untouched).
    pub async fn ensure_outbox(&self) -> Result<()> {
        self.locked(|c| -> Result<()> {
            c.execute_batch(crate::outbox::SQLITE_DDL)?;
            c.execute_batch(crate::authority::SQLITE_DDL)?;
            Ok(())
        })
        .await
    }

    /// The underlying connection (for the backfill and export).
    pub fn connection(&self) -> &tokio_rusqlite::Connection {
        &self.conn
    }

    /// Runs `f` on one of the read connections (committed data only; never
    /// waits behind the writer).
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, AtomicOrdering::Relaxed) % self.readers.len();
        Ok(self.readers[i].call(move |c| f(c)).await?)
    }
}
