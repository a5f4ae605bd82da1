//! The values the generator draws from: owned values to bind, the
//! timestamp forms and the vocabulary.

use chrono::{DateTime, Datelike, Timelike};
use rand::rngs::StdRng;
use rand::Rng;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::tables::Table;

/// A value to bind, owned; `Bytes` is TEXT whose bytes need not be UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Blob(Vec<u8>),
}

impl ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            V::Null => ValueRef::Null,
            V::Int(i) => ValueRef::Integer(*i),
            V::Real(f) => ValueRef::Real(*f),
            V::Text(s) => ValueRef::Text(s.as_bytes()),
            V::Bytes(b) => ValueRef::Text(b),
            V::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl V {
    pub(super) fn text_bytes(&self) -> Vec<u8> {
        match self {
            V::Text(s) => s.as_bytes().to_vec(),
            V::Bytes(b) | V::Blob(b) => b.clone(),
            V::Int(i) => i.to_string().into_bytes(),
            V::Real(f) => f.to_string().into_bytes(),
            V::Null => Vec::new(),
        }
    }
}

/// Which timestamp forms a column gets, as weights for
/// [SQL datetime, ISO 8601, Twitter, epoch millis].
pub(super) type TsMix = [u32; 4];
/// Columns the database filled (`CURRENT_TIMESTAMP`), and later JavaScript.
pub(super) const DB_TS: TsMix = [60, 28, 0, 12];
/// Tweet times came from the Twitter API, sometimes re-serialised by the app.
pub(super) const TWEET_TS: TsMix = [10, 30, 45, 15];

/// 2015-01-01 .. 2026-01-01, in milliseconds.
pub(super) const T0_MS: i64 = 1_420_070_400_000;
pub(super) const SPAN_MS: i64 = 347_155_200_000;

pub(super) const WORDS: &[&str] = &[
    "the", "just", "really", "data", "coffee", "today", "launch", "thread", "love", "ship",
    "build", "rust", "morning", "weekend", "team", "news", "think", "great", "new", "why",
    "finally", "release", "bug", "deploy", "music", "game", "city", "rain", "book", "friends",
    "long", "day", "tomorrow", "never", "always", "maybe", "open", "source", "sql", "learn",
];
pub(super) const EMOJI: &[&str] = &[
    "😀",
    "🚀",
    "🔥",
    "❤️",
    "👍🏽",
    "🇫🇷",
    "👨‍👩‍👧",
    "🎉",
    "☕",
    "🤔",
    "✨",
    "🙏🏿",
];
pub(super) const RTL: &[&str] = &["مرحبا", "بالعالم", "شكرا", "שלום", "עולם", "תודה", "سلام"];
pub(super) const COMBINING: &[&str] = &[
    "cafe\u{301}",
    "nai\u{308}ve",
    "Z\u{351}\u{34b}a\u{36b}lgo",
    "n\u{303}o",
    "e\u{300}\u{316}",
    "Åström",
];
pub(super) const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Zoë", "Renée", "Søren", "José", "محمد", "יעל", "Ngọc", "Dmitri",
    "美咲", "Aarav", "Chloé", "Björk",
];
pub(super) const PLACES: &[&str] = &[
    "Berlin",
    "São Paulo",
    "Tōkyō",
    "القاهرة",
    "Tel Aviv",
    "Montréal",
    "Lagos",
    "",
];
pub(super) const GARBAGE_TS: &[&str] = &[
    "yesterday",
    "N/A",
    "",
    "0000-00-00 00:00:00",
    "2018-13-45 25:61:00",
    "2021-02-30T10:00:00Z",
    "Wed Oct 10 20:19:24 2018",
    "Thu Oct 10 20:19:24 +0000 2018",
    "not a date",
    "12/31/2020",
];
pub(super) const BOOL_WORDS: &[&str] = &["true", "false", "yes", "t", "TRUE", "No", "f", "False"];
pub(super) const BAD_STATUS: &[&str] = &["done", "cancelled", "running", "PENDING", "queued"];
pub(super) const COMMANDS: &[&str] = &["start", "analyze", "compare", "share", "invite", "finish"];

pub(super) fn insert_sql(t: &Table) -> String {
    let marks = vec!["?"; t.columns.len()].join(", ");
    format!(
        "INSERT INTO {} ({}) VALUES ({marks})",
        t.name,
        t.column_list()
    )
}

pub(super) fn index_of(t: &Table, column: &str) -> usize {
    t.columns
        .iter()
        .position(|c| c.name == column)
        .expect("generator names a column of the table")
}

pub(super) fn user_id(i: u64) -> String {
    (100_000 + i * 7).to_string()
}

pub(super) fn alnum(rng: &mut StdRng, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

pub(super) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Renders an instant the way the legacy application stored it: 0 SQLite's
/// `CURRENT_TIMESTAMP` (seconds), 1 JavaScript's `toISOString()`, 2 the
/// Twitter API, 3 epoch milliseconds as an INTEGER.
pub(super) fn render_timestamp(ms: i64, form: usize) -> V {
    let t = DateTime::from_timestamp_millis(ms).expect("generated instants are in range");
    let (y, mo, d) = (t.year(), t.month(), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    match form {
        0 => V::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")),
        1 => V::Text(format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
            ms.rem_euclid(1000)
        )),
        2 => V::Text(format!(
            "{} {} {d:02} {h:02}:{mi:02}:{s:02} +0000 {y:04}",
            WEEKDAYS[t.weekday().num_days_from_monday() as usize],
            MONTHS[mo as usize - 1]
        )),
        _ => V::Int(ms),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{self, Raw};

    #[test]
    fn rendered_timestamps_parse_back_to_the_instant() {
        for ms in [T0_MS, 1_539_202_764_789, T0_MS + SPAN_MS - 1] {
            for form in 0..4 {
                let v = render_timestamp(ms, form);
                let raw = match &v {
                    V::Text(s) => Raw::Text(s.as_bytes()),
                    V::Int(i) => Raw::Integer(*i),
                    _ => unreachable!(),
                };
                let t = convert::timestamp("t", raw).unwrap().unwrap();
                let want = match form {
                    0 | 2 => ms - ms.rem_euclid(1000),
                    _ => ms,
                };
                assert_eq!(t.timestamp_millis(), want, "form {form}: {v:?}");
            }
        }
    }
}
