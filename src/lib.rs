//! cutover: move a live application from SQLite to PostgreSQL with zero
//! downtime and a working way back.
//!
//! The application talks to a [`Store`]. During the move it embeds a
//! [`Cutover`]: a [`DualStore`] that writes both databases in one order
//! across every process and reads from the side the current [`Stage`]
//! names, an outbox replayer, a stage watcher and a heartbeat that
//! `cutover status` lists. The operator moves the stage with the `cutover`
//! command (`cutover stage set live`); every process follows. The design
//! contract is `docs/DESIGN.md`, the code map `ARCHITECTURE.md`.
//!
//! # Embedding
//!
//! ```toml
//! cutover = { path = "…", default-features = false }   # the library alone
//! ```
//!
//! ```no_run
//! use cutover::{Cutover, CutoverConfig, Settings, Store};
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! // Logs (a fallback to SQLite is a WARN) through any `tracing`
//! // subscriber, metrics through one call before the store starts.
//! cutover::metrics::install_exporter("127.0.0.1:9464".parse()?)?;
//!
//! // SQLITE_PATH, DATABASE_URL or the PG_* variables, `.env.migration`.
//! let settings = Settings::resolve(&Default::default())?;
//! let config = CutoverConfig::new(
//!     settings.require_sqlite()?.to_path_buf(),
//!     settings.require_postgres()?.clone(),
//! );
//! // Refuses until the operator ran `cutover schema` (or set
//! // `config.migrate = true`): the application's role needs no DDL rights.
//! let cutover = Cutover::start(config).await?;
//! let store = cutover.store();
//! let user = store.get_user("12345").await?;
//! # let _ = user;
//! // On exit: waits for the copies in flight.
//! cutover.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` is the same as a program.
//!
//! # Features
//!
//! - `cli` (default): the `cutover` command and its tools (demo, generate,
//!   a throwaway PostgreSQL), with clap, indicatif, anyhow and the rest of
//!   the command's stack. An application turns it off.
//!
//! # Modules
//!
//! - [`store`], [`model`]: the `Store` trait (every query of the
//!   application) and its domain types; [`sqlite`] and [`pg`] implement it.
//! - [`dual`], [`stage`]: the dual store and the stages; [`Cutover`] owns it.
//! - [`backfill`], [`verify`], [`export`], [`backup`], [`audit`]: the
//!   operator's jobs, which the command runs; [`progress`] is how they
//!   report progress.
//! - [`status`]: the whole migration at a glance and the heartbeats.
//! - [`convert`], [`tables`]: the legacy values' conversion rules and the
//!   tables' shapes.
//! - [`settings`]: connection settings and the store factory.
//! - [`metrics`]: metric names and the Prometheus exporter.
//! - [`error`]: the one error enum.

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
mod decode;
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
