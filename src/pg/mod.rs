//! The target side: `PgStore` over a PostgreSQL pool, and the schema.
//!
//! Mirrors `sqlite/`: `store.rs` implements `Store` (the queries),
//! `row.rs` decodes rows, `write.rs` is the write transaction with its
//! change capture (as `sqlite/lock.rs` is SQLite's), `error.rs` maps native
//! errors into the shared `DbErrorKind`; `connect.rs` opens the pool and
//! explains a failed first connection, and `warm.rs` hands a finished
//! call's connection to the next call (sqlx would ping it on its way back
//! to the pool); `migrate.rs` applies `migrations/postgres`.

mod capture;
mod connect;
mod error;
mod migrate;
mod row;
mod store;
mod warm;
mod write;

pub use connect::{preflight, CONNECT_TIMEOUT};
pub use migrate::{
    migrate, require_capture, require_current, state as schema_state, SchemaReport, SchemaState,
};
pub use store::PgStore;
pub(crate) use write::with_ready;
