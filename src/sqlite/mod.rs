//! The legacy side: `SqliteStore` over the application's SQLite file.
//!
//! Mirrors `pg/` file for file: `connect.rs` opens the file (a writer and
//! two readers) and holds the store's locks and outbox switch, `write.rs`
//! is the write transaction with its change capture (as `pg/write.rs`),
//! `row.rs` decodes rows, `store.rs` implements `Store` (the queries),
//! `error.rs` maps native errors into the shared `DbErrorKind`; `lock.rs`
//! and `order.rs` are SQLite's write lock and the order lock across
//! processes.

mod connect;
mod error;
pub mod lock;
pub(crate) mod order;
mod row;
mod store;
mod write;

pub use connect::{SqliteOptions, SqliteStore};
pub use lock::Locked;

/// The legacy schema, exactly as the old application created it.
pub const LEGACY_SCHEMA: &str = include_str!("../../legacy/sqlite-schema.sql");
