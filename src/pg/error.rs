//! sqlx errors → the shared `Error`.
//!
//! SQLSTATEs become `DbErrorKind`s; `PoolTimedOut` becomes `Error::PoolTimeout`
//! carrying the pool's configured limits (`PoolLimits::map`), so a caller can
//! tell "the pool is exhausted" from "the database is down".

use std::time::Duration;

use crate::error::{Backend, DbErrorKind, Error};

/// Classifies a sqlx error by SQLSTATE.
pub(crate) fn kind(e: &sqlx::Error) -> DbErrorKind {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => DbErrorKind::UniqueViolation,
            Some("23503") => DbErrorKind::ForeignKeyViolation,
            Some("23514") => DbErrorKind::CheckViolation,
            Some("23502") => DbErrorKind::NotNullViolation,
            Some("57014") => DbErrorKind::Timeout,
            Some("40001") | Some("40P01") | Some("55P03") => DbErrorKind::Busy,
            Some(c) if c.starts_with("22") => DbErrorKind::InvalidData,
            Some(c) if c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03" => {
                DbErrorKind::Unavailable
            }
            _ => DbErrorKind::Other,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DbErrorKind::Unavailable,
        sqlx::Error::PoolTimedOut => DbErrorKind::Unavailable,
        _ => DbErrorKind::Other,
    }
}

/// The constraint a database error names, with its classification, when the
/// failure is a constraint violation. Stores use it as the backstop for races
/// that slip past their explicit checks (two transactions inserting the same
/// key at once).
pub(crate) fn violated_constraint(e: &sqlx::Error) -> Option<(DbErrorKind, &str)> {
    match e {
        sqlx::Error::Database(db) => {
            let k = kind(e);
            match k {
                DbErrorKind::UniqueViolation
                | DbErrorKind::ForeignKeyViolation
                | DbErrorKind::CheckViolation
                | DbErrorKind::NotNullViolation => db.constraint().map(|c| (k, c)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The configured pool limits, kept by the store so that a `PoolTimedOut`
/// can be reported with the numbers an operator has to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Configured acquire timeout.
    pub acquire_timeout: Duration,
    /// Configured pool size.
    pub max_connections: u32,
}

impl PoolLimits {
    /// Maps a sqlx error, turning `PoolTimedOut` into `Error::PoolTimeout`.
    pub(crate) fn map(&self, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::PoolTimedOut => Error::PoolTimeout {
                backend: Backend::Postgres,
                waited_ms: u64::try_from(self.acquire_timeout.as_millis()).unwrap_or(u64::MAX),
                max_connections: self.max_connections,
            },
            other => other.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Without the pool at hand its limits are unknown (`PoolLimits::map`
            // is used wherever they are known): said so, not reported as zeros.
            sqlx::Error::PoolTimedOut => Error::Database {
                backend: Backend::Postgres,
                kind: DbErrorKind::Unavailable,
                message: "no connection became free within the pool's acquire timeout (the server answers: the pool is busy)".into(),
            },
            e => Error::Database {
                backend: Backend::Postgres,
                kind: kind(&e),
                message: e.to_string(),
            },
        }
    }
}
