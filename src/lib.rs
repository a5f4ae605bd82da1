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

/// Modules the crate's own tests reach into (feature `internals`, which
/// only they enable); private otherwise. Items there used only by the
/// tests are not dead code.
macro_rules! internal {
    ($($(#[$m:meta])* $name:ident;)*) => {$(
        $(#[$m])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$m])*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code)]
        pub(crate) mod $name;
    )*};
}

pub mod audit;
pub mod backfill;
pub mod backup;
pub mod convert;
mod cutover;
pub mod dual;
pub mod error;
pub mod export;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod progress;
pub mod settings;
pub mod sqlite;
pub mod stage;
pub mod status;
pub mod store;
pub mod tables;
pub mod verify;

internal! {
    authority;
    changes;
    failpoint;
    image;
    outbox;
    rejects;
    row;
    shadow;
}
pub(crate) mod sequences;

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;

// The command's tools: not part of the library an application embeds.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod demo;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod generate;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod pgserver;

pub use crate::cutover::{Cutover, CutoverConfig};
pub use dual::{DualConfig, DualStore};
pub use error::{Backend, DbErrorKind, Error, Result};
pub use model::*;
pub use pg::PgStore;
pub use settings::PgSettings;
pub use settings::Settings;
pub use sqlite::SqliteStore;
pub use stage::Stage;
pub use store::Store;
