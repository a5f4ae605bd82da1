//! The shape of the ten tables, described once.
//!
//! Copy, compare, verify, audit and export all walk these descriptions
//! instead of repeating per-table code: a column's [`Kind`] says how its
//! legacy value is converted (see `convert`), how it is written to
//! PostgreSQL and how it is compared.

/// How a column's values are typed on the PostgreSQL side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `VARCHAR(255)` / `TEXT`.
    Text,
    /// `TIMESTAMP WITH TIME ZONE`.
    Timestamp,
    /// `BOOLEAN`.
    Bool,
    /// `JSONB`.
    Json,
    /// `INTEGER`.
    Int,
    /// `VARCHAR(50)` restricted to the job status CHECK set.
    Status,
}

/// One column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name (same on both sides).
    pub name: &'static str,
    /// Value kind.
    pub kind: Kind,
    /// Whether PostgreSQL allows NULL.
    pub nullable: bool,
    /// Maximum length in characters for `VARCHAR(n)`.
    pub max_len: Option<u32>,
}

/// A foreign key: `column` references `parent_table(parent_column)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing column.
    pub column: &'static str,
    /// The referenced table.
    pub parent_table: &'static str,
    /// The referenced column (its primary key).
    pub parent_column: &'static str,
}

/// One table of the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Table name (same on both sides).
    pub name: &'static str,
    /// Columns in the plan's order.
    pub columns: &'static [Column],
    /// The primary-key column.
    pub primary_key: &'static str,
    /// True when the key is a SERIAL / AUTOINCREMENT integer.
    pub serial: bool,
    /// Foreign keys of the PostgreSQL schema.
    pub foreign_keys: &'static [ForeignKey],
    /// Single-column UNIQUE constraints other than the key.
    pub unique: &'static [&'static str],
}

impl Table {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The position of the primary-key column.
    pub fn key_index(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.name == self.primary_key)
            .expect("primary key is a column")
    }

    /// The primary-key column.
    pub fn key_column(&self) -> &'static Column {
        self.column(self.primary_key)
            .expect("primary key is a column")
    }

    /// Comma-separated column list, in order.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        kind,
        nullable,
        max_len: None,
    }
}

const fn varchar(name: &'static str, len: u32, nullable: bool) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable,
        max_len: Some(len),
    }
}

const fn fk(
    column: &'static str,
    parent_table: &'static str,
    parent_column: &'static str,
) -> ForeignKey {
    ForeignKey {
        column,
        parent_table,
        parent_column,
    }
}

use Kind::*;

/// `users`.
pub const USERS: Table = Table {
    name: "users",
    columns: &[
        varchar("id", 255, false),
        varchar("username", 255, false),
        col("profile_data", Json, true),
        col("profile_picture_url", Text, true),
        col("last_scraped", Timestamp, true),
        col("created_at", Timestamp, true),
    ],
    primary_key: "id",
    serial: false,
    foreign_keys: &[],
    unique: &["username"],
};

/// `tweets`.
pub const TWEETS: Table = Table {
    name: "tweets",
    columns: &[
        varchar("id", 255, false),
        varchar("user_id", 255, false),
        col("text", Text, false),
        col("created_at", Timestamp, false),
        col("url", Text, true),
        col("is_reply", Bool, true),
        col("metadata", Json, true),
        col("created_in_db", Timestamp, true),
    ],
    primary_key: "id",
    serial: false,
    foreign_keys: &[fk("user_id", "users", "id")],
    unique: &[],
};

/// `personality_analysis`.
pub const PERSONALITY_ANALYSIS: Table = Table {
    name: "personality_analysis",
    columns: &[
        varchar("id", 255, false),
        varchar("user_id", 255, false),
        col("traits", Json, false),
        col("interests", Json, false),
        col("communication_style", Json, false),
        col("analyzed_at", Timestamp, true),
    ],
    primary_key: "id",
    serial: false,
    foreign_keys: &[fk("user_id", "users", "id")],
    unique: &[],
};

/// `funnel_progress`.
pub const FUNNEL_PROGRESS: Table = Table {
    name: "funnel_progress",
    columns: &[
        varchar("user_id", 255, false),
        col("current_command_index", Int, true),
        col("completed_commands", Json, true),
        col("command_responses", Json, true),
        col("last_updated", Timestamp, true),
    ],
    primary_key: "user_id",
    serial: false,
    foreign_keys: &[fk("user_id", "users", "id")],
    unique: &[],
};

/// `funnel_completion`.
pub const FUNNEL_COMPLETION: Table = Table {
    name: "funnel_completion",
    columns: &[
        varchar("user_id", 255, false),
        col("completed_at", Timestamp, true),
        col("completion_data", Json, true),
    ],
    primary_key: "user_id",
    serial: false,
    foreign_keys: &[fk("user_id", "users", "id")],
    unique: &[],
};

/// `referral_codes`.
pub const REFERRAL_CODES: Table = Table {
    name: "referral_codes",
    columns: &[
        varchar("code", 255, false),
        varchar("owner_user_id", 255, false),
        col("usage_count", Int, true),
        col("created_at", Timestamp, true),
    ],
    primary_key: "code",
    serial: false,
    foreign_keys: &[fk("owner_user_id", "users", "id")],
    unique: &[],
};

/// `referral_tracking`.
pub const REFERRAL_TRACKING: Table = Table {
    name: "referral_tracking",
    columns: &[
        col("id", Int, false),
        varchar("referral_code", 255, false),
        varchar("referrer_user_id", 255, false),
        varchar("referred_user_id", 255, false),
        col("used_at", Timestamp, true),
    ],
    primary_key: "id",
    serial: true,
    foreign_keys: &[
        fk("referrer_user_id", "users", "id"),
        fk("referred_user_id", "users", "id"),
    ],
    unique: &["referred_user_id"],
};

/// `referral_usage_log`.
pub const REFERRAL_USAGE_LOG: Table = Table {
    name: "referral_usage_log",
    columns: &[
        col("id", Int, false),
        varchar("referral_code", 255, false),
        varchar("used_by_user_id", 255, false),
        col("used_at", Timestamp, true),
    ],
    primary_key: "id",
    serial: true,
    foreign_keys: &[
        fk("referral_code", "referral_codes", "code"),
        fk("used_by_user_id", "users", "id"),
    ],
    unique: &[],
};

/// `analysis_queue`.
pub const ANALYSIS_QUEUE: Table = Table {
    name: "analysis_queue",
    columns: &[
        col("job_id", Int, false),
        varchar("user_id", 255, false),
        col("status", Status, false),
        col("priority", Int, true),
        col("total_chunks", Int, false),
        col("processed_chunks", Int, true),
        col("created_at", Timestamp, true),
        col("started_at", Timestamp, true),
        col("completed_at", Timestamp, true),
        col("error", Text, true),
    ],
    primary_key: "job_id",
    serial: true,
    foreign_keys: &[fk("user_id", "users", "id")],
    unique: &[],
};

/// `analysis_chunks`.
pub const ANALYSIS_CHUNKS: Table = Table {
    name: "analysis_chunks",
    columns: &[
        col("chunk_id", Int, false),
        col("job_id", Int, true),
        col("chunk_index", Int, false),
        col("tweet_count", Int, false),
        col("status", Status, false),
        col("started_at", Timestamp, true),
        col("completed_at", Timestamp, true),
        col("result", Json, true),
        col("error", Text, true),
    ],
    primary_key: "chunk_id",
    serial: true,
    foreign_keys: &[fk("job_id", "analysis_queue", "job_id")],
    unique: &[],
};

/// All ten tables, parents before children (the order of copy and export).
pub const ALL: [&Table; 10] = [
    &USERS,
    &TWEETS,
    &PERSONALITY_ANALYSIS,
    &FUNNEL_PROGRESS,
    &FUNNEL_COMPLETION,
    &REFERRAL_CODES,
    &REFERRAL_TRACKING,
    &REFERRAL_USAGE_LOG,
    &ANALYSIS_QUEUE,
    &ANALYSIS_CHUNKS,
];

/// A table of the Twitter application by name (`TWITTER.by_name`).
pub fn by_name(name: &str) -> Option<&'static Table> {
    TWITTER.by_name(name)
}

/// An application's tables: what the dual store captures and copies, and
/// what backfill, verify and export copy, compare and write back. The
/// Twitter application's is [`TWITTER`]; another application declares its
/// own (its tables and its SQLite DDL) and hands it to
/// `CutoverConfig::schema` (or `SqliteOptions::schema` and
/// `PgStore::with_schema`), `BackfillOptions::schema`,
/// `VerifyOptions::schema` and `export::export_schema`; its operations go
/// through `DualStore::write` and `read`.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The tables, parents before children (the order of copy and export).
    pub tables: &'static [&'static Table],
    /// The SQLite DDL that creates them (an export's new file).
    pub sqlite_ddl: &'static str,
}

impl Schema {
    /// A table by name.
    pub fn by_name(&self, name: &str) -> Option<&'static Table> {
        self.tables.iter().copied().find(|t| t.name == name)
    }

    /// The tables named (all when `None`), in the schema's order; an
    /// unknown name is an error that lists the tables.
    pub fn select(&self, names: Option<&[String]>) -> crate::error::Result<Vec<&'static Table>> {
        let Some(names) = names else {
            return Ok(self.tables.to_vec());
        };
        if let Some(n) = names.iter().find(|n| self.by_name(n).is_none()) {
            let known: Vec<&str> = self.tables.iter().map(|t| t.name).collect();
            return Err(crate::error::Error::InvalidArgument(format!(
                "unknown table {n:?}; the tables are {}",
                known.join(", ")
            )));
        }
        Ok(self
            .tables
            .iter()
            .copied()
            .filter(|t| names.iter().any(|n| n == t.name))
            .collect())
    }
}

/// The Twitter application's ten tables and its legacy SQLite schema.
pub const TWITTER: Schema = Schema {
    tables: &ALL,
    sqlite_ddl: crate::sqlite::LEGACY_SCHEMA,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        for (i, t) in ALL.iter().enumerate() {
            for fk in t.foreign_keys {
                let p = ALL.iter().position(|x| x.name == fk.parent_table).unwrap();
                assert!(p < i, "{} before {}", fk.parent_table, t.name);
                assert!(t.column(fk.column).is_some());
            }
            assert!(t.column(t.primary_key).is_some());
        }
    }
}
