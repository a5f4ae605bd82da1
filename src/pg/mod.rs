//! The target side: `PgStore` over a PostgreSQL pool, and the schema.
//!
//! Mirrors `sqlite/` file for file: `store.rs` implements `Store`, `error.rs`
//! maps native errors into the shared `DbErrorKind`; `migrate.rs` applies
//! `migrations/postgres`.

mod error;
mod migrate;
mod store;

pub use migrate::{migrate, require_current, state as schema_state, SchemaReport, SchemaState};
pub(crate) use store::with_ready;
pub use store::{preflight, PgStore, CONNECT_TIMEOUT};
