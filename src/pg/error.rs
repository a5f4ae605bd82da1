//! sqlx errors → the shared `Error`.

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

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database {
            backend: Backend::Postgres,
            kind: kind(&e),
            message: e.to_string(),
        }
    }
}
