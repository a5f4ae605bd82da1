//! The library's one error type.
//!
//! Each backend maps its native failures into [`DbErrorKind`] (SQLite's
//! `SQLITE_CONSTRAINT_UNIQUE` and PostgreSQL's `23505` both become
//! `UniqueViolation`), so callers and the conformance suite see the same error
//! whichever database answered. Errors about data name the table, key and
//! column they concern. No variant ever carries a connection string.

use crate::convert::RejectReason;

/// Which database an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The legacy SQLite file.
    Sqlite,
    /// The PostgreSQL target.
    Postgres,
}

impl Backend {
    /// Lower-case name, as used in metric labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Backend-neutral classification of a database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// A UNIQUE or PRIMARY KEY constraint was violated.
    UniqueViolation,
    /// A FOREIGN KEY constraint was violated.
    ForeignKeyViolation,
    /// A CHECK constraint was violated.
    CheckViolation,
    /// A NOT NULL constraint was violated.
    NotNullViolation,
    /// The database could not be reached or the connection broke.
    Unavailable,
    /// The database is locked or busy (SQLite) / serialization failure.
    Busy,
    /// A statement ran past its timeout.
    Timeout,
    /// The server refused a value (a data exception: out of range, bad
    /// input for the type).
    InvalidData,
    /// Anything else.
    Other,
}

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A row the operation needs does not exist.
    #[error("{table}: no row with key {key:?}")]
    NotFound {
        /// Table searched.
        table: &'static str,
        /// Primary key looked for.
        key: String,
    },
    /// A row refers to a parent row that does not exist.
    #[error("{table}: row {key:?} refers to missing {parent_table} row {parent_key:?} (column {column})")]
    MissingParent {
        /// Table written.
        table: &'static str,
        /// Key of the row written.
        key: String,
        /// The foreign-key column.
        column: &'static str,
        /// The referenced table.
        parent_table: &'static str,
        /// The referenced key that is missing.
        parent_key: String,
    },
    /// PostgreSQL's COMMIT was cut by an outage: the write may or may not
    /// have been applied. If it was, its outbox entry reaches SQLite when
    /// PostgreSQL answers again (or is recorded in `cutover.conflicts` when
    /// SQLite changed the row meanwhile); it is never run again silently.
    #[error("{op}: connection lost during COMMIT, the write may or may not have been applied ({detail})")]
    OutcomeUnknown {
        /// The store call.
        op: &'static str,
        /// The connection error.
        detail: String,
    },
    /// A row with this key (or unique value) already exists.
    #[error("{table}: a row with {column} = {key:?} already exists")]
    Duplicate {
        /// Table written.
        table: &'static str,
        /// The unique column.
        column: &'static str,
        /// The duplicated value.
        key: String,
    },
    /// The referral code does not exist.
    #[error("referral_codes: unknown referral code {code:?}")]
    UnknownReferralCode {
        /// The code given.
        code: String,
    },
    /// A user tried to redeem their own code.
    #[error("referral_tracking: user {user_id:?} cannot redeem their own code {code:?}")]
    SelfReferral {
        /// The code given.
        code: String,
        /// The user, who owns the code.
        user_id: String,
    },
    /// The user was already referred once.
    #[error("referral_tracking: user {user_id:?} was already referred (column referred_user_id is unique)")]
    AlreadyReferred {
        /// The user.
        user_id: String,
    },
    /// A job or chunk is not in a state that allows the transition.
    #[error("{table}: row {key} is {status}, cannot {action}")]
    InvalidState {
        /// `analysis_queue` or `analysis_chunks`.
        table: &'static str,
        /// The job or chunk id.
        key: String,
        /// Its current status.
        status: String,
        /// What was attempted.
        action: &'static str,
    },
    /// An argument is out of its domain (e.g. a job with no chunks).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A stored value could not be converted to its domain type (docs/DESIGN.md §5).
    #[error("{table}: row {key:?}, column {column}: {reason}: {detail}")]
    InvalidValue {
        /// Table read.
        table: &'static str,
        /// Primary key of the row.
        key: String,
        /// Column holding the value.
        column: &'static str,
        /// Classification.
        reason: RejectReason,
        /// What was wrong, with the offending value (escaped).
        detail: String,
    },
    /// No connection became free within the pool's acquire timeout.
    #[error("{backend}: no connection available within {waited_ms} ms (pool of {max_connections} exhausted); raise the pool size or the acquire timeout")]
    PoolTimeout {
        /// The backend.
        backend: Backend,
        /// Configured acquire timeout.
        waited_ms: u64,
        /// Configured pool size.
        max_connections: u32,
    },
    /// A database failure, classified.
    #[error("{backend}: {kind:?}: {message}")]
    Database {
        /// Which database.
        backend: Backend,
        /// Classification.
        kind: DbErrorKind,
        /// The database's message (never contains credentials).
        message: String,
    },
    /// Settings are missing or wrong; the message says how to fix them.
    #[error("configuration: {0}")]
    Config(String),
    /// A file-system failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The database classification, when this is a database failure.
    pub fn db_kind(&self) -> Option<DbErrorKind> {
        match self {
            Error::Database { kind, .. } => Some(*kind),
            Error::PoolTimeout { .. } => Some(DbErrorKind::Unavailable),
            _ => None,
        }
    }

    /// True when the failure is about reaching the database, not about the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.db_kind(),
            Some(DbErrorKind::Unavailable) | Some(DbErrorKind::Timeout)
        )
    }
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
