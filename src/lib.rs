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
//! - `generate`: a legacy database with realistic and messy rows (`cutover generate`).
//! - `audit`: what a legacy file holds and what each policy would copy or reject.
//! - `settings`: connection settings (flags > environment > `.env.migration`)
//!   and the store factory.
//! - `error`: the one error enum.
//! - `backfill`, `rejects`: the bulk copy SQLite → PostgreSQL and its rejects ledger.
//! - `verify`: both databases compared table by table; repair.
//! - `export`: PostgreSQL → a new legacy SQLite file (the way back).
//! - `backup`: an online, consistent copy of the live SQLite file.
//! - `image`, `changes`, `outbox`: row images on either side, the keys a
//!   write changed, and the outboxes that record them.
//! - `authority`: the (epoch, stage, fallback) row on both sides that
//!   orders every process's writes.
//! - `dual`, `shadow`, `stage`, `cutover`: the dual store, shadow-read
//!   comparison, the stage and its persistence, the handle an application embeds.
//! - `metrics`: metric names and the Prometheus exporter.
//! - `pgserver`: a restartable throwaway PostgreSQL (demo, fault tests).
//! - `failpoint`: named points where a test can stop the process (fault tests).
//! - `demo`: the whole cutover under simulated traffic.

pub mod audit;
pub mod authority;
pub mod backfill;
pub mod backup;
pub mod changes;
pub mod convert;
pub mod cutover;
pub mod demo;
pub mod dual;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod generate;
pub mod image;
#[cfg(feature = "internals")]
pub mod internals;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod pg;
pub mod pgserver;
pub mod rejects;
pub mod row;
pub(crate) mod sequences;
pub mod settings;
pub mod shadow;
pub mod sqlite;
pub mod stage;
pub mod store;
pub mod tables;
pub mod verify;

pub use crate::cutover::{Cutover, CutoverConfig};
pub use error::{Backend, DbErrorKind, Error, Result};
pub use model::*;
pub use pg::PgStore;
pub use settings::Settings;
pub use sqlite::SqliteStore;
pub use store::Store;
