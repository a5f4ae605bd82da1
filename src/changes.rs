//! Which rows a write changed: the stores' outbox hook.
//!
//! A store's write transaction knows the keys it touches. When the store's
//! outbox is switched on it records those keys in its outbox table inside
//! the same transaction (so a crash after commit loses nothing), and it
//! reports them here so the caller that wrapped the write in [`capture`]
//! can apply exactly those rows to the other side straight away.
//! Stores know nothing of stages: they only record and report.

use std::cell::RefCell;
use std::future::Future;

/// One changed row: its table and primary key as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Table name.
    pub table: &'static str,
    /// Primary key as text.
    pub key: String,
}

impl Change {
    /// A change to `table` row `key`.
    pub fn new(table: &'static str, key: impl ToString) -> Self {
        Self {
            table,
            key: key.to_string(),
        }
    }
}

/// The image a PostgreSQL write committed for one row, as its capture
/// trigger noted it inside the transaction, with the id of its outbox entry. The secondary apply copies
/// it as is, without reaching PostgreSQL again (so it still reaches SQLite
/// when PostgreSQL went away right after the commit); it is skipped when
/// SQLite records a newer version of the row, and an image older than
/// `outbox::APPLY_WINDOW` is not trusted (the current image is read instead).
#[derive(Debug, Clone)]
pub struct Carried {
    /// Highest outbox entry id of the row in that transaction.
    pub outbox_id: i64,
    /// The row as committed (None: deleted).
    pub image: Option<crate::image::Image>,
    /// No later than the image was taken (the transaction's BEGIN): it is
    /// copied as is only within `outbox::APPLY_WINDOW` of this.
    pub read_at: std::time::Instant,
}

/// What a write reported.
#[derive(Debug, Default)]
pub struct Captured {
    /// Changed rows in the order they were made.
    pub changes: Vec<Change>,
    /// Committed images, when the store read them.
    pub carried: std::collections::HashMap<Change, Carried>,
    /// The store sent its COMMIT: an error after this leaves the write's
    /// outcome unknown.
    pub commit_sent: bool,
}

tokio::task_local! {
    static CAPTURED: RefCell<Captured>;
}

/// Runs `f` and returns what it produced with the changes stores reported
/// while it ran, in the order they were made (parents before children on
/// insert, children before parents on delete).
pub async fn capture<F: Future>(f: F) -> (F::Output, Captured) {
    CAPTURED
        .scope(RefCell::new(Captured::default()), async move {
            let out = f.await;
            let captured = CAPTURED.with(|c| c.take());
            (out, captured)
        })
        .await
}

/// Reports committed changes to the enclosing `capture`, if any.
pub fn report(changes: Vec<Change>) {
    let _ = CAPTURED.try_with(|c| c.borrow_mut().changes.extend(changes));
}

/// Notes that the store is sending its COMMIT (see `Captured::commit_sent`).
pub fn commit_sent() {
    let _ = CAPTURED.try_with(|c| c.borrow_mut().commit_sent = true);
}

/// Reports committed changes with their committed images, where the store
/// has them (the apply reads the others back).
pub fn report_carried(changes: Vec<(Change, Option<Carried>)>) {
    let _ = CAPTURED.try_with(|c| {
        let mut c = c.borrow_mut();
        for (ch, carried) in changes {
            c.changes.push(ch.clone());
            if let Some(carried) = carried {
                c.carried.insert(ch, carried);
            }
        }
    });
}
