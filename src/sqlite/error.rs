//! rusqlite errors → the shared `Error`.

use crate::error::{Backend, DbErrorKind, Error};

/// Classifies a rusqlite error.
pub(crate) fn kind(e: &rusqlite::Error) -> DbErrorKind {
    use rusqlite::ffi::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => DbErrorKind::UniqueViolation,
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => DbErrorKind::ForeignKeyViolation,
                rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => DbErrorKind::CheckViolation,
                rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => DbErrorKind::NotNullViolation,
                _ => DbErrorKind::Other,
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => DbErrorKind::Busy,
            ErrorCode::CannotOpen | ErrorCode::NotADatabase => DbErrorKind::Unavailable,
            _ => DbErrorKind::Other,
        },
        _ => DbErrorKind::Other,
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database {
            backend: Backend::Sqlite,
            kind: kind(&e),
            message: e.to_string(),
        }
    }
}

fn closed(e: &str) -> Error {
    Error::Database {
        backend: Backend::Sqlite,
        kind: DbErrorKind::Unavailable,
        message: format!("the SQLite connection is closed{e}"),
    }
}

impl From<tokio_rusqlite::Error<rusqlite::Error>> for Error {
    fn from(e: tokio_rusqlite::Error<rusqlite::Error>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e.into(),
            tokio_rusqlite::Error::Close((_, e)) => closed(&format!(": {e}")),
            _ => closed(""),
        }
    }
}

/// Closures run on the connection thread return the crate's `Error` directly.
impl From<tokio_rusqlite::Error<Error>> for Error {
    fn from(e: tokio_rusqlite::Error<Error>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e,
            tokio_rusqlite::Error::Close((_, e)) => closed(&format!(": {e}")),
            _ => closed(""),
        }
    }
}
