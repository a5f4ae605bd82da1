//! Domain types from the cells of one row, by column name, for both
//! stores: SQLite's converted legacy values (`sqlite/row.rs`) and
//! PostgreSQL's typed values (`pg/row.rs`) become the same `Cell`s, driven
//! by the table's description in `crate::tables`, and each domain type
//! takes its fields from them by name ([`FromCells`]). Queries select the
//! table's columns from its description ([`select`], [`with_columns`]), so
//! no column list is written twice and the order of `tables.rs` does not
//! matter to decoding.

use serde_json::Value;

use crate::model::*;
use crate::row::Cell;
use crate::tables::{self, Table};

/// The converted cells of one row, taken by column name.
pub(crate) struct Cells {
    table: &'static Table,
    cells: Vec<Cell>,
}

// The kind of each cell is guaranteed by `convert_value` (it yields the
// variant of the column's `Kind`, and `Null` only for nullable columns), so
// a mismatch below is a programming error in a `FromCells` impl, not bad data.
const KIND: &str = "cell kind is fixed by the column description";

impl Cells {
    /// The cells of one row of `table`, in its column order.
    pub(crate) fn new(table: &'static Table, cells: Vec<Cell>) -> Self {
        assert_eq!(cells.len(), table.columns.len(), "one cell per column");
        Self { table, cells }
    }

    fn take(&mut self, name: &str) -> Cell {
        let i = self
            .table
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.table.name));
        std::mem::replace(&mut self.cells[i], Cell::Null)
    }

    fn opt_text(&mut self, name: &str) -> Option<String> {
        match self.take(name) {
            Cell::Null => None,
            Cell::Text(s) => Some(s),
            _ => unreachable!("{KIND}"),
        }
    }

    fn text(&mut self, name: &str) -> String {
        self.opt_text(name).expect(KIND)
    }

    fn opt_ts(&mut self, name: &str) -> Option<Timestamp> {
        match self.take(name) {
            Cell::Null => None,
            Cell::Timestamp(t) => Some(t),
            _ => unreachable!("{KIND}"),
        }
    }

    fn ts(&mut self, name: &str) -> Timestamp {
        self.opt_ts(name).expect(KIND)
    }

    fn opt_json(&mut self, name: &str) -> Option<Value> {
        match self.take(name) {
            Cell::Null => None,
            Cell::Json(v) => Some(v),
            _ => unreachable!("{KIND}"),
        }
    }

    fn json(&mut self, name: &str) -> Value {
        self.opt_json(name).expect(KIND)
    }

    fn opt_int(&mut self, name: &str) -> Option<i32> {
        match self.take(name) {
            Cell::Null => None,
            Cell::Int(i) => Some(i),
            _ => unreachable!("{KIND}"),
        }
    }

    fn int(&mut self, name: &str) -> i32 {
        self.opt_int(name).expect(KIND)
    }

    fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name) {
            Cell::Null => None,
            Cell::Bool(b) => Some(b),
            _ => unreachable!("{KIND}"),
        }
    }

    fn status(&mut self, name: &str) -> JobStatus {
        match self.take(name) {
            Cell::Status(s) => s,
            _ => unreachable!("{KIND}"),
        }
    }
}

/// A domain type built from the converted cells of one row of `TABLE`.
pub(crate) trait FromCells: Sized {
    /// The table whose rows this type holds.
    const TABLE: &'static Table;
    /// Builds the value from the cells of one row of `TABLE`.
    fn from_cells(c: Cells) -> Self;
}

impl FromCells for User {
    const TABLE: &'static Table = &tables::USERS;
    fn from_cells(mut c: Cells) -> Self {
        User {
            id: c.text("id"),
            username: c.text("username"),
            profile_data: c.opt_json("profile_data"),
            profile_picture_url: c.opt_text("profile_picture_url"),
            last_scraped: c.opt_ts("last_scraped"),
            created_at: c.opt_ts("created_at"),
        }
    }
}

impl FromCells for Tweet {
    const TABLE: &'static Table = &tables::TWEETS;
    fn from_cells(mut c: Cells) -> Self {
        Tweet {
            id: c.text("id"),
            user_id: c.text("user_id"),
            text: c.text("text"),
            created_at: c.ts("created_at"),
            url: c.opt_text("url"),
            is_reply: c.opt_bool("is_reply"),
            metadata: c.opt_json("metadata"),
            created_in_db: c.opt_ts("created_in_db"),
        }
    }
}

impl FromCells for PersonalityAnalysis {
    const TABLE: &'static Table = &tables::PERSONALITY_ANALYSIS;
    fn from_cells(mut c: Cells) -> Self {
        PersonalityAnalysis {
            id: c.text("id"),
            user_id: c.text("user_id"),
            traits: c.json("traits"),
            interests: c.json("interests"),
            communication_style: c.json("communication_style"),
            analyzed_at: c.opt_ts("analyzed_at"),
        }
    }
}

impl FromCells for FunnelProgress {
    const TABLE: &'static Table = &tables::FUNNEL_PROGRESS;
    fn from_cells(mut c: Cells) -> Self {
        FunnelProgress {
            user_id: c.text("user_id"),
            current_command_index: c.opt_int("current_command_index"),
            completed_commands: c.opt_json("completed_commands"),
            command_responses: c.opt_json("command_responses"),
            last_updated: c.opt_ts("last_updated"),
        }
    }
}

impl FromCells for FunnelCompletion {
    const TABLE: &'static Table = &tables::FUNNEL_COMPLETION;
    fn from_cells(mut c: Cells) -> Self {
        FunnelCompletion {
            user_id: c.text("user_id"),
            completed_at: c.opt_ts("completed_at"),
            completion_data: c.opt_json("completion_data"),
        }
    }
}

impl FromCells for ReferralCode {
    const TABLE: &'static Table = &tables::REFERRAL_CODES;
    fn from_cells(mut c: Cells) -> Self {
        ReferralCode {
            code: c.text("code"),
            owner_user_id: c.text("owner_user_id"),
            usage_count: c.opt_int("usage_count"),
            created_at: c.opt_ts("created_at"),
        }
    }
}

impl FromCells for Referral {
    const TABLE: &'static Table = &tables::REFERRAL_TRACKING;
    fn from_cells(mut c: Cells) -> Self {
        Referral {
            id: c.int("id"),
            referral_code: c.text("referral_code"),
            referrer_user_id: c.text("referrer_user_id"),
            referred_user_id: c.text("referred_user_id"),
            used_at: c.opt_ts("used_at"),
        }
    }
}

impl FromCells for ReferralUsage {
    const TABLE: &'static Table = &tables::REFERRAL_USAGE_LOG;
    fn from_cells(mut c: Cells) -> Self {
        ReferralUsage {
            id: c.int("id"),
            referral_code: c.text("referral_code"),
            used_by_user_id: c.text("used_by_user_id"),
            used_at: c.opt_ts("used_at"),
        }
    }
}

impl FromCells for Job {
    const TABLE: &'static Table = &tables::ANALYSIS_QUEUE;
    fn from_cells(mut c: Cells) -> Self {
        Job {
            job_id: c.int("job_id"),
            user_id: c.text("user_id"),
            status: c.status("status"),
            priority: c.opt_int("priority"),
            total_chunks: c.int("total_chunks"),
            processed_chunks: c.opt_int("processed_chunks"),
            created_at: c.opt_ts("created_at"),
            started_at: c.opt_ts("started_at"),
            completed_at: c.opt_ts("completed_at"),
            error: c.opt_text("error"),
        }
    }
}

impl FromCells for Chunk {
    const TABLE: &'static Table = &tables::ANALYSIS_CHUNKS;
    fn from_cells(mut c: Cells) -> Self {
        Chunk {
            chunk_id: c.int("chunk_id"),
            job_id: c.opt_int("job_id"),
            chunk_index: c.int("chunk_index"),
            tweet_count: c.int("tweet_count"),
            status: c.status("status"),
            started_at: c.opt_ts("started_at"),
            completed_at: c.opt_ts("completed_at"),
            result: c.opt_json("result"),
            error: c.opt_text("error"),
        }
    }
}

/// `SELECT <every column in order> FROM <table> <rest>`.
pub(crate) fn select<T: FromCells>(rest: &str) -> String {
    format!(
        "SELECT {} FROM {} {rest}",
        T::TABLE.column_list(),
        T::TABLE.name
    )
}

/// `text` with every `{cols}` replaced by `T`'s columns, in the table's
/// order (for an `INSERT … RETURNING {cols}` or a `SELECT {cols} FROM t
/// AS x …`).
pub(crate) fn with_columns<T: FromCells>(text: &str) -> String {
    text.replace("{cols}", &T::TABLE.column_list())
}

/// A query text built once per call site by [`with_columns`], as the
/// `&'static str` sqlx takes without `AssertSqlSafe`.
macro_rules! query_text {
    ($t:ty, $text:expr) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| crate::decode::with_columns::<$t>($text))
            .as_str()
    }};
}
pub(crate) use query_text;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Kind;

    /// A value for each column of `table`, distinct per column.
    fn sample(table: &Table) -> Vec<Cell> {
        let base = crate::model::now();
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.kind {
                Kind::Text => Cell::Text(c.name.to_string()),
                Kind::Timestamp => Cell::Timestamp(base + chrono::Duration::seconds(i as i64)),
                Kind::Bool => Cell::Bool(i % 2 == 0),
                Kind::Json => Cell::Json(serde_json::json!({ "column": c.name })),
                Kind::Int => Cell::Int(100 + i as i32),
                Kind::Status => Cell::Status(JobStatus::Processing),
            })
            .collect()
    }

    fn json_of(cell: &Cell) -> Value {
        match cell {
            Cell::Null => Value::Null,
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Timestamp(t) => serde_json::to_value(t).unwrap(),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Json(v) => v.clone(),
            Cell::Int(i) => Value::from(*i),
            Cell::Status(s) => serde_json::to_value(s).unwrap(),
        }
    }

    /// Every field of `T` comes from the column of its name, whatever the
    /// order of the table's description: decoding the same row described
    /// with its columns reversed gives the same value.
    fn check<T: FromCells + serde::Serialize + PartialEq + std::fmt::Debug>() {
        let table = T::TABLE;
        let cells = sample(table);
        let value = T::from_cells(Cells::new(table, cells.clone()));
        let json = serde_json::to_value(&value).unwrap();
        for (c, cell) in table.columns.iter().zip(&cells) {
            assert_eq!(json[c.name], json_of(cell), "{}.{}", table.name, c.name);
        }
        let reversed: Vec<_> = table.columns.iter().rev().copied().collect();
        let reordered: &'static Table = Box::leak(Box::new(Table {
            columns: Box::leak(reversed.into_boxed_slice()),
            ..*table
        }));
        let again = T::from_cells(Cells::new(reordered, cells.into_iter().rev().collect()));
        assert_eq!(
            again, value,
            "{} decoded in another column order",
            table.name
        );
    }

    #[test]
    fn every_type_takes_each_field_from_its_column_in_any_order() {
        check::<User>();
        check::<Tweet>();
        check::<PersonalityAnalysis>();
        check::<FunnelProgress>();
        check::<FunnelCompletion>();
        check::<ReferralCode>();
        check::<Referral>();
        check::<ReferralUsage>();
        check::<Job>();
        check::<Chunk>();
    }
}
