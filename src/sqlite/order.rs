//! The order lock: which writes may run while the authority holds still.
//!
//! A write with PostgreSQL authoritative (`live`, `rampdown`) needs the
//! authority not to move between reading it and finishing the write, but
//! it does not need to exclude other such writes: PostgreSQL orders them
//! (row locks, one sequence), and SQLite receives their images in version
//! order under its write lock. So those writes share this lock, and run
//! their PostgreSQL transactions side by side; whoever moves the authority
//! (a flip, a fallback, the return) takes it exclusively, which waits for
//! the writes in flight and holds off new ones (docs/DESIGN.md §3).
//!
//! Across processes it is an `flock` on `<db>-cutover.order`, shared or
//! exclusive. Linux lets new shared holders in while an exclusive one
//! waits, so a busy application would starve a flip: every taker (every
//! write, not only a process's first) first passes a turnstile (`<db>-cutover.turn`, exclusive, released at once),
//! which an exclusive taker holds while it waits. Inside a process a tokio
//! `RwLock` (write-preferring) counts the shared holders: the process
//! holds the shared `flock` while any of its tasks does (one open file,
//! so one `flock` per process).
//!
//! The order file also holds the authority generation: eight bytes that
//! every exclusive taker bumps as soon as it holds the lock. The authority
//! moves only under this lock, exclusive, so a shared holder that finds the
//! generation it last read the authority under may use what it read then
//! (no SQLite read on the write path); any other value sends it back to
//! SQLite's row.
//!
//! Lock order: this lock before SQLite's write lock (`lock.rs`), never the
//! other way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::lock::{flock, lock_file};
use crate::error::{Error, Result};

/// The order lock of one SQLite file, for this process.
#[derive(Clone)]
pub(crate) struct OrderLock {
    inner: Option<Arc<Files>>,
}

struct Files {
    rw: Arc<tokio::sync::RwLock<()>>,
    // How many tasks of this process hold the shared lock: the `flock` is
    // taken by the first (one at a time, `first`) and released by the last.
    holders: std::sync::Mutex<usize>,
    first: tokio::sync::Mutex<()>,
    order: Arc<File>,
    turn: Arc<File>,
}

impl OrderLock {
    pub(crate) fn for_path(path: &Path) -> Result<Self> {
        if path.as_os_str() == ":memory:" {
            return Ok(Self { inner: None });
        }
        Ok(Self {
            inner: Some(Arc::new(Files {
                rw: Arc::new(tokio::sync::RwLock::new(())),
                holders: std::sync::Mutex::new(0),
                first: tokio::sync::Mutex::new(()),
                order: lock_file(path, "-cutover.order")?,
                turn: lock_file(path, "-cutover.turn")?,
            })),
        })
    }

    /// Takes the lock shared (a write with PostgreSQL authoritative).
    ///
    /// `blocked` runs first when a task of this process holds or waits for
    /// the lock exclusively (a flip made here): the caller lets go of what
    /// that flip may need (its pooled connection) before it waits.
    pub(crate) async fn shared(&self, blocked: impl FnOnce()) -> Result<OrderGuard> {
        let Some(f) = &self.inner else {
            return Ok(OrderGuard(None));
        };
        let local = match f.rw.clone().try_read_owned() {
            Ok(local) => local,
            Err(_) => {
                blocked();
                f.rw.clone().read_owned().await
            }
        };
        // Every taker passes the turnstile, which an exclusive taker in
        // another process holds while it waits: joining this process's
        // shared hold without it would keep the hold alive under load and
        // starve the exclusive taker. (No task of this process holds the
        // turnstile for long: a local exclusive taker excludes `local`.)
        flock(&f.turn, File::try_lock, File::lock).await?;
        let _ = f.turn.unlock();
        if !f.join() {
            let _first = f.first.lock().await;
            if !f.join() {
                flock(&f.order, File::try_lock_shared, File::lock_shared).await?;
                *f.holders.lock().expect("order lock count") += 1;
            }
        }
        Ok(OrderGuard(Some(Held::Shared {
            files: f.clone(),
            _local: local,
        })))
    }

    /// The authority generation (see the module's doc); None without a
    /// lock file (`:memory:`). Read it holding the lock.
    pub(crate) fn generation(&self) -> Result<Option<u64>> {
        let Some(f) = &self.inner else {
            return Ok(None);
        };
        read_generation(&f.order).map(Some)
    }

    /// Takes the lock exclusively (a flip, a fallback, the return): waits
    /// for the shared holders of every process and holds off new ones, and
    /// bumps the authority generation.
    pub(crate) async fn exclusive(&self) -> Result<OrderGuard> {
        let Some(f) = &self.inner else {
            return Ok(OrderGuard(None));
        };
        // Every local shared holder is gone once this is granted: the
        // process holds no `flock` on the order file.
        let local = f.rw.clone().write_owned().await;
        flock(&f.turn, File::try_lock, File::lock).await?;
        if let Err(e) = flock(&f.order, File::try_lock, File::lock).await {
            let _ = f.turn.unlock();
            return Err(e);
        }
        let bumped = read_generation(&f.order).and_then(|g| {
            f.order
                .write_all_at(&g.wrapping_add(1).to_le_bytes(), 0)
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "the order lock file cannot be written (the authority generation): {e}"
                    ))
                })
        });
        if let Err(e) = bumped {
            let _ = f.order.unlock();
            let _ = f.turn.unlock();
            return Err(e);
        }
        Ok(OrderGuard(Some(Held::Exclusive {
            files: f.clone(),
            _local: local,
        })))
    }
}

impl Files {
    /// Joins this process's shared hold when it has one (the `flock` is
    /// taken already).
    fn join(&self) -> bool {
        let mut n = self.holders.lock().expect("order lock count");
        if *n > 0 {
            *n += 1;
            true
        } else {
            false
        }
    }
}

fn read_generation(f: &File) -> Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        match f.read_at(&mut b[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "the order lock file cannot be read (the authority generation): {e}"
                )))
            }
        }
    }
    // A new (empty) file reads as generation 0.
    Ok(if got == b.len() {
        u64::from_le_bytes(b)
    } else {
        0
    })
}

enum Held {
    Shared {
        files: Arc<Files>,
        _local: tokio::sync::OwnedRwLockReadGuard<()>,
    },
    Exclusive {
        files: Arc<Files>,
        _local: tokio::sync::OwnedRwLockWriteGuard<()>,
    },
}

/// The order lock, held until dropped.
pub(crate) struct OrderGuard(Option<Held>);

impl Drop for OrderGuard {
    fn drop(&mut self) {
        // The `flock`s are released before the local guard (a field,
        // dropped after this body), so a local exclusive taker never
        // starts while this process still holds the file shared.
        match &self.0 {
            None => {}
            Some(Held::Shared { files, .. }) => {
                let mut n = files.holders.lock().expect("order lock count");
                *n -= 1;
                if *n == 0 {
                    let _ = files.order.unlock();
                }
            }
            Some(Held::Exclusive { files, .. }) => {
                let _ = files.order.unlock();
                let _ = files.turn.unlock();
            }
        }
    }
}
