//! SQLite's write lock.
//!
//! With SQLite authoritative it is the one order every process on the file
//! shares (docs/DESIGN.md §3): a write takes it before it touches either database
//! and keeps it until SQLite has the write and its outbox entry. With
//! PostgreSQL authoritative the order lock (`order.rs`) orders the writes
//! and this lock orders their landing in SQLite. It is taken in three
//! steps:
//!
//! 1. this process's writer slot (a FIFO tokio mutex), because the store has
//!    one write connection and an open transaction on it belongs to one task;
//! 2. an exclusive `flock` on a file beside the database (`<db>-cutover.lock`).
//!    SQLite's busy handler retries with sleeps of up to 100 ms, so under
//!    contention the process that just released would take the lock again
//!    before the others wake: a blocked `flock` is woken by the kernel the
//!    moment the lock is free, which keeps processes from starving;
//! 3. `BEGIN IMMEDIATE` on the write connection: SQLite's own lock, which
//!    also orders writers that do not use cutover (the legacy application,
//!    a backfill batch).
//!
//! Dropped without `commit`, a `Locked` rolls back on a task of its own and
//! only then frees the slot, so the next writer never starts inside it.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use crate::error::{Error, Result};

tokio::task_local! {
    static HELD: ();
}

/// Runs `f` as part of a write that holds the lock already: the store's own
/// writes inside it run as savepoints of the held transaction instead of
/// taking the lock again.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    HELD.scope((), f).await
}

/// Whether the current task runs inside `within`.
pub(crate) fn is_held() -> bool {
    HELD.try_with(|_| ()).is_ok()
}

/// The parts of the lock a store keeps: its writer slot and lock file.
#[derive(Clone)]
pub(crate) struct WriteLock {
    slot: Arc<tokio::sync::Mutex<()>>,
    file: Option<Arc<File>>,
}

impl WriteLock {
    /// The lock for the database at `path` (no lock file for `:memory:`).
    pub(crate) fn for_path(path: &Path) -> Result<Self> {
        let file = if path.as_os_str() == ":memory:" {
            None
        } else {
            Some(lock_file(path, "-cutover.lock")?)
        };
        Ok(Self {
            slot: Arc::new(tokio::sync::Mutex::new(())),
            file,
        })
    }

    /// Whether a task holds the slot now.
    pub(crate) fn slot_taken(&self) -> bool {
        self.slot.try_lock().is_err()
    }

    /// Takes the slot, the file lock and `BEGIN IMMEDIATE` on `conn`.
    pub(crate) async fn acquire(&self, conn: &tokio_rusqlite::Connection) -> Result<Locked> {
        self.acquire_then(conn, |_| Ok(())).await.map(|(l, ())| l)
    }

    /// As `acquire`, then runs `first` inside the new transaction in the
    /// same call on the connection's thread (one hop fewer); a failure of
    /// `first` rolls back and releases the lock.
    pub(crate) async fn acquire_then<R, F>(
        &self,
        conn: &tokio_rusqlite::Connection,
        first: F,
    ) -> Result<(Locked, R)>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        tracing::trace!("write lock: waiting for the slot");
        let slot = self.slot.clone().lock_owned().await;
        tracing::trace!("write lock: slot taken");
        let file = match &self.file {
            None => None,
            Some(f) => {
                flock(f, File::try_lock, File::lock).await?;
                Some(FileGuard(f.clone()))
            }
        };
        let r = conn
            .call(move |c| -> Result<R> {
                c.execute_batch("BEGIN IMMEDIATE")?;
                match first(c) {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        let _ = c.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            })
            .await?;
        tracing::trace!("write lock: held");
        Ok((
            Locked {
                conn: conn.clone(),
                open: true,
                slot: Some(slot),
                file,
            },
            r,
        ))
    }
}

impl WriteLock {
    /// Takes the slot and the file lock, then runs `f` between `BEGIN
    /// IMMEDIATE` and `COMMIT` in one call on the connection's thread (a
    /// failure of `f` or of the commit rolls back). The short way for a
    /// transaction that needs nothing from the runtime in between.
    pub(crate) async fn transact<R, F>(&self, conn: &tokio_rusqlite::Connection, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let _slot = self.slot.clone().lock_owned().await;
        let _file = match &self.file {
            None => None,
            Some(file) => {
                flock(file, File::try_lock, File::lock).await?;
                Some(FileGuard(file.clone()))
            }
        };
        conn.call(move |c| -> Result<R> {
            c.execute_batch("BEGIN IMMEDIATE")?;
            let out = f(c).and_then(|v| {
                c.execute_batch("COMMIT")?;
                Ok(v)
            });
            if out.is_err() && !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            out
        })
        .await
        .map_err(Into::into)
    }
}

/// Opens (creating it) the lock file beside the database at `path`, named
/// `<db><suffix>`; read-only when it cannot be written (an `flock` needs no
/// write permission).
pub(super) fn lock_file(path: &Path, suffix: &str) -> Result<Arc<File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&name)
        .or_else(|_| File::open(&name))
        .map(Arc::new)
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot open the lock file {}: {e}",
                Path::new(&name).display()
            ))
        })
}

fn lock_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("lock file: {e}"))
}

/// A blocking `flock` call (`wait`), run off the runtime's threads unless
/// `try_it` succeeds at once.
pub(super) async fn flock(
    f: &Arc<File>,
    try_it: fn(&File) -> std::result::Result<(), std::fs::TryLockError>,
    wait: fn(&File) -> std::io::Result<()>,
) -> Result<()> {
    match try_it(f) {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            let f = f.clone();
            tokio::task::spawn_blocking(move || wait(&f))
                .await
                .map_err(lock_err)?
                .map_err(lock_err)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

struct FileGuard(Arc<File>);

impl Drop for FileGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// SQLite's write lock, held: an open `BEGIN IMMEDIATE` transaction on the
/// store's write connection that no other task of this process can enter.
pub struct Locked {
    conn: tokio_rusqlite::Connection,
    open: bool,
    slot: Option<tokio::sync::OwnedMutexGuard<()>>,
    file: Option<FileGuard>,
}

impl Locked {
    /// Runs `f` inside the held transaction.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.conn.call(f).await?)
    }

    /// Commits and releases the lock.
    pub async fn commit(mut self) -> Result<()> {
        let r = self
            .conn
            .call(|c| -> Result<()> {
                c.execute_batch("COMMIT")?;
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            // Drop rolls back what is left.
            Err(e) => Err(e.into()),
        }
    }

    /// Rolls back and releases the lock.
    pub async fn rollback(mut self) {
        let _ = self
            .conn
            .call(|c| -> Result<()> {
                if !c.is_autocommit() {
                    c.execute_batch("ROLLBACK")?;
                }
                Ok(())
            })
            .await;
        self.open = false;
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let conn = self.conn.clone();
        let slot = self.slot.take();
        let file = self.file.take();
        let rollback = async move {
            let _ = conn
                .call(|c| -> Result<()> {
                    if !c.is_autocommit() {
                        c.execute_batch("ROLLBACK")?;
                    }
                    Ok(())
                })
                .await;
            drop(file);
            drop(slot);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(rollback);
            }
            Err(_) => {
                // No runtime left: the connection's thread rolls back when
                // the connection closes; the slot goes with it.
            }
        }
    }
}
