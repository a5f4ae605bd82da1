//! The messy legacy values the generator plants, and the report of what
//! it wrote.

use serde::Serialize;

use crate::convert::RejectReason;

/// A kind of messy legacy value the generator plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Messy {
    /// A timestamp in no accepted form (`yesterday`, `2021-02-30T10:00:00Z`, ...).
    GarbageTimestamp,
    /// A boolean spelled as a word (`true`, `yes`, `t`, ...); valid.
    BooleanWord,
    /// A boolean that is none of the accepted forms (`maybe`, 2).
    InvalidBoolean,
    /// `''` in a JSON column.
    EmptyJson,
    /// JSON cut short.
    TruncatedJson,
    /// JSON holding a `\u0000` escape (parses, but `jsonb` refuses it).
    JsonNulEscape,
    /// Text holding a NUL character.
    NulChar,
    /// Text whose bytes are not UTF-8.
    InvalidUtf8,
    /// Integer text in an INTEGER column (SQLite's affinity stores an integer).
    IntegerText,
    /// An integral real in an INTEGER column (SQLite's affinity stores an integer).
    IntegralReal,
    /// An integer outside PostgreSQL's 32-bit `integer`.
    OutOfRangeInteger,
    /// A job or chunk status outside the CHECK set.
    BadStatus,
    /// A reference to a parent row that does not exist.
    Orphan,
    /// Two keys that differ in SQLite and are equal in PostgreSQL.
    KeyCollision,
    /// A username longer than `VARCHAR(255)`.
    LongUsername,
    /// NULL in a primary key (SQLite allows it for non-integer keys).
    NullKey,
}

impl Messy {
    /// Every kind, in a stable order.
    pub const ALL: [Messy; 16] = [
        Messy::GarbageTimestamp,
        Messy::BooleanWord,
        Messy::InvalidBoolean,
        Messy::EmptyJson,
        Messy::TruncatedJson,
        Messy::JsonNulEscape,
        Messy::NulChar,
        Messy::InvalidUtf8,
        Messy::IntegerText,
        Messy::IntegralReal,
        Messy::OutOfRangeInteger,
        Messy::BadStatus,
        Messy::Orphan,
        Messy::KeyCollision,
        Messy::LongUsername,
        Messy::NullKey,
    ];

    /// Stable name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Messy::GarbageTimestamp => "garbage_timestamp",
            Messy::BooleanWord => "boolean_word",
            Messy::InvalidBoolean => "invalid_boolean",
            Messy::EmptyJson => "empty_json",
            Messy::TruncatedJson => "truncated_json",
            Messy::JsonNulEscape => "json_nul_escape",
            Messy::NulChar => "nul_char",
            Messy::InvalidUtf8 => "invalid_utf8",
            Messy::IntegerText => "integer_text",
            Messy::IntegralReal => "integral_real",
            Messy::OutOfRangeInteger => "out_of_range_integer",
            Messy::BadStatus => "bad_status",
            Messy::Orphan => "orphan",
            Messy::KeyCollision => "key_collision",
            Messy::LongUsername => "long_username",
            Messy::NullKey => "null_key",
        }
    }

    /// The reject reason a value of this kind earns, or None when it converts.
    pub fn reason(self) -> Option<RejectReason> {
        match self {
            Messy::GarbageTimestamp => Some(RejectReason::InvalidTimestamp),
            Messy::InvalidBoolean => Some(RejectReason::InvalidBoolean),
            Messy::EmptyJson | Messy::TruncatedJson | Messy::JsonNulEscape => {
                Some(RejectReason::InvalidJson)
            }
            Messy::NulChar => Some(RejectReason::NulChar),
            Messy::InvalidUtf8 => Some(RejectReason::InvalidUtf8),
            Messy::OutOfRangeInteger => Some(RejectReason::InvalidInteger),
            Messy::BadStatus | Messy::LongUsername => Some(RejectReason::CheckViolation),
            Messy::Orphan => Some(RejectReason::Orphan),
            Messy::KeyCollision => Some(RejectReason::UniqueViolation),
            Messy::NullKey => Some(RejectReason::NotNull),
            Messy::BooleanWord | Messy::IntegerText | Messy::IntegralReal => None,
        }
    }
}

/// How many values of one kind were planted in one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planted {
    /// Table.
    pub table: &'static str,
    /// Column.
    pub column: &'static str,
    /// Kind of messy value.
    pub kind: Messy,
    /// Number of rows carrying it.
    pub count: u64,
}

/// What `generate` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerateReport {
    /// Rows per table, in `tables::ALL` order.
    pub rows: Vec<(&'static str, u64)>,
    /// Messy values planted, by table, column and kind (sorted).
    pub planted: Vec<Planted>,
}

impl GenerateReport {
    /// Rows written to `table`.
    pub fn rows_in(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }

    /// Messy values of `kind` planted anywhere.
    pub fn planted_total(&self, kind: Messy) -> u64 {
        self.planted
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.count)
            .sum()
    }

    /// Messy values of `kind` planted in `table.column`.
    pub fn planted_in(&self, table: &str, column: &str, kind: Messy) -> u64 {
        self.planted
            .iter()
            .filter(|p| p.table == table && p.column == column && p.kind == kind)
            .map(|p| p.count)
            .sum()
    }
}
