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

tokio::task_local! {
    static CAPTURED: RefCell<Vec<Change>>;
}

/// Runs `f` and returns what it produced with the changes stores reported
/// while it ran, in the order they were made (parents before children on
/// insert, children before parents on delete).
pub async fn capture<F: Future>(f: F) -> (F::Output, Vec<Change>) {
    CAPTURED
        .scope(RefCell::new(Vec::new()), async move {
            let out = f.await;
            let changes = CAPTURED.with(|c| c.take());
            (out, changes)
        })
        .await
}

/// Reports committed changes to the enclosing `capture`, if any.
pub fn report(changes: Vec<Change>) {
    let _ = CAPTURED.try_with(|c| c.borrow_mut().extend(changes));
}
