//! cutover: move a live application from SQLite to PostgreSQL with zero
//! downtime and a working way back.
//!
//! The application talks to a [`Store`]; during the transition it embeds the
//! library and uses a store that writes both databases and reads from the
//! side the current stage names, while the backfill copies the history.
//!
//! # Layout
//!
//! - `model`: domain types (users, tweets, analyses, funnel, referrals, jobs).
//! - `store`: the `Store` trait, every query of the application.
//! - `sqlite`: `SqliteStore`, the legacy file through rusqlite.
//! - `pg`: `PgStore`, PostgreSQL through a sqlx pool; the schema migrations.
//! - `convert`: legacy SQLite values → domain values, exactly or rejected.
//! - `tables`: the ten tables' shapes, described once.
//! - `settings`: connection settings (flags > environment > `.env.migration`)
//!   and the store factory.
//! - `error`: the one error enum.
//! - `backfill`: the copy SQLite → PostgreSQL (keyset batches under SQLite's
//!   write lock, binary `COPY`, checkpoints, rejects).
//! - `rejects`: the `cutover.rejects` ledger of rows and values not copied as they were.

pub mod backfill;
pub mod convert;
pub mod error;
pub mod model;
pub mod pg;
pub mod rejects;
pub mod row;
pub mod settings;
pub mod sqlite;
pub mod store;
pub mod tables;

pub use error::{Backend, DbErrorKind, Error, Result};
pub use model::*;
pub use pg::PgStore;
pub use settings::Settings;
pub use sqlite::SqliteStore;
pub use store::Store;
