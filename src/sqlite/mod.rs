//! The legacy side: `SqliteStore` over the application's SQLite file.
//!
//! Mirrors `pg/` file for file: `store.rs` implements `Store`, `error.rs`
//! maps native errors into the shared `DbErrorKind`.

mod error;
pub mod lock;
pub(crate) mod order;
mod row;
mod store;

pub use lock::Locked;
pub use store::{SqliteOptions, SqliteStore};

/// The legacy schema, exactly as the old application created it.
pub const LEGACY_SCHEMA: &str = include_str!("../../legacy/sqlite-schema.sql");
