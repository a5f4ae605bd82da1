//! Legacy SQLite values → domain values, exactly or not at all (docs/DESIGN.md §5).
//!
//! The legacy file holds whatever the old application wrote: timestamps in
//! four formats, booleans as integers or words, JSON that does not parse,
//! text with NUL characters or bytes that are not UTF-8. Every reader of
//! legacy data (the SQLite store, the backfill, the audit, verify) goes
//! through this module, so a value is judged the same way everywhere.
//! Each function either returns the exact domain value or a [`ValueError`]
//! naming the column and the [`RejectReason`]; nothing is truncated,
//! rounded or guessed.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use crate::model::{JobStatus, Timestamp};

/// Why a legacy value (or row) cannot be copied as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The row's parent was rejected or never existed.
    Orphan,
    /// Not one of the accepted timestamp forms.
    InvalidTimestamp,
    /// Not one of the accepted boolean forms.
    InvalidBoolean,
    /// Not JSON, or JSON holding `\u0000` (which `jsonb` refuses).
    InvalidJson,
    /// Text holding a NUL character.
    NulChar,
    /// Text whose bytes are not UTF-8.
    InvalidUtf8,
    /// Not an integer, or outside the column's range.
    InvalidInteger,
    /// Outside the column's CHECK set.
    CheckViolation,
    /// NULL in a NOT NULL column.
    NotNull,
    /// A second row with the same unique value.
    UniqueViolation,
    /// PostgreSQL refused the row for a reason no rule here foresaw (its
    /// message is the detail); found by splitting the batch it was in.
    Refused,
}

impl RejectReason {
    /// Every reason, in a stable order.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Orphan,
        RejectReason::InvalidTimestamp,
        RejectReason::InvalidBoolean,
        RejectReason::InvalidJson,
        RejectReason::NulChar,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidInteger,
        RejectReason::CheckViolation,
        RejectReason::NotNull,
        RejectReason::UniqueViolation,
        RejectReason::Refused,
    ];

    /// The name stored in `cutover.rejects.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Orphan => "orphan",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::InvalidBoolean => "invalid_boolean",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NulChar => "nul_char",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidInteger => "invalid_integer",
            RejectReason::CheckViolation => "check_violation",
            RejectReason::NotNull => "not_null",
            RejectReason::UniqueViolation => "unique_violation",
            RejectReason::Refused => "refused",
        }
    }

    /// Parses a stored reason name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value as SQLite stores it, borrowed from a row. Text is kept as bytes
/// because legacy text is not always UTF-8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    /// SQL NULL.
    Null,
    /// `typeof` = integer.
    Integer(i64),
    /// `typeof` = real.
    Real(f64),
    /// `typeof` = text, as stored.
    Text(&'a [u8]),
    /// `typeof` = blob.
    Blob(&'a [u8]),
}

impl<'a> From<rusqlite::types::ValueRef<'a>> for Raw<'a> {
    fn from(v: rusqlite::types::ValueRef<'a>) -> Self {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Raw::Null,
            ValueRef::Integer(i) => Raw::Integer(i),
            ValueRef::Real(f) => Raw::Real(f),
            ValueRef::Text(t) => Raw::Text(t),
            ValueRef::Blob(b) => Raw::Blob(b),
        }
    }
}

impl Raw<'_> {
    /// SQLite's `typeof` name of the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Integer(_) => "integer",
            Raw::Real(_) => "real",
            Raw::Text(_) => "text",
            Raw::Blob(_) => "blob",
        }
    }

    /// A short printable rendering for error details: non-UTF-8 bytes and
    /// control characters escaped, long values cut with an ellipsis (the
    /// full original is kept elsewhere, byte for byte).
    pub fn describe(&self) -> String {
        const MAX: usize = 80;
        match self {
            Raw::Null => "NULL".into(),
            Raw::Integer(i) => i.to_string(),
            Raw::Real(f) => format!("{f:?}"),
            Raw::Text(b) | Raw::Blob(b) => {
                let s = String::from_utf8_lossy(b);
                let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
                if s.chars().count() > MAX {
                    out.push('…');
                }
                format!(
                    "{}{:?}",
                    if matches!(self, Raw::Blob(_)) {
                        "blob "
                    } else {
                        ""
                    },
                    out
                )
                .replace("\\\\", "\\")
            }
        }
    }
}

/// A legacy value that cannot be converted: the column and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}: {detail}")]
pub struct ValueError {
    /// The column the value came from.
    pub column: &'static str,
    /// Classification.
    pub reason: RejectReason,
    /// The offending value and what is wrong with it.
    pub detail: String,
}

fn bad(column: &'static str, reason: RejectReason, raw: &Raw<'_>, why: &str) -> ValueError {
    ValueError {
        column,
        reason,
        detail: format!("{} ({})", why, raw.describe()),
    }
}

/// Checks that a text value is UTF-8 without NUL and returns it.
fn utf8<'a>(column: &'static str, raw: &Raw<'a>, bytes: &'a [u8]) -> Result<&'a str, ValueError> {
    let s = std::str::from_utf8(bytes).map_err(|e| {
        bad(
            column,
            RejectReason::InvalidUtf8,
            raw,
            &format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    if let Some(pos) = s.find('\0') {
        return Err(bad(
            column,
            RejectReason::NulChar,
            raw,
            &format!("NUL character at byte {pos}"),
        ));
    }
    Ok(s)
}

/// A TEXT column. Integers and reals (which a TEXT-affinity column never
/// holds, but a hand-made file might) are invalid rather than re-rendered.
pub fn text(column: &'static str, raw: Raw<'_>) -> Result<Option<String>, ValueError> {
    match raw {
        Raw::Null => Ok(None),
        Raw::Text(b) => Ok(Some(utf8(column, &raw, b)?.to_owned())),
        Raw::Blob(b) => Ok(Some(utf8(column, &raw, b)?.to_owned())),
        Raw::Integer(i) => Ok(Some(i.to_string())),
        Raw::Real(_) => Err(bad(
            column,
            RejectReason::InvalidUtf8,
            &raw,
            "a real number in a text column has no exact text form",
        )),
    }
}

/// Values with |v| at or above this are epoch milliseconds, below it seconds.
pub const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

fn from_epoch(v: i64) -> Option<Timestamp> {
    if v.unsigned_abs() >= EPOCH_MILLIS_THRESHOLD as u64 {
        Utc.timestamp_millis_opt(v).single()
    } else {
        Utc.timestamp_opt(v, 0).single()
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `HH:MM:SS[.f{1,9}]`; refuses fractions finer than a microsecond
/// unless the extra digits are zero, since storing them would round.
fn parse_time(s: &str) -> Option<(NaiveTime, &str)> {
    let b = s.as_bytes();
    // Check the bytes before slicing: a multi-byte character inside
    // `HH:MM:SS` would otherwise put a slice end inside it (a panic).
    if b.len() < 8
        || !b[..8].iter().enumerate().all(|(i, c)| {
            if i == 2 || i == 5 {
                *c == b':'
            } else {
                c.is_ascii_digit()
            }
        })
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s[r].parse().ok() };
    let (h, m, sec) = (num(0..2)?, num(3..5)?, num(6..8)?);
    let mut rest = &s[8..];
    let mut micros = 0u32;
    if let Some(frac_and_more) = rest.strip_prefix('.') {
        let n = frac_and_more.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        let digits = &frac_and_more[..n];
        if n > 6 && digits[6..].bytes().any(|c| c != b'0') {
            return None;
        }
        let mut padded = digits[..n.min(6)].to_string();
        while padded.len() < 6 {
            padded.push('0');
        }
        micros = padded.parse().ok()?;
        rest = &frac_and_more[n..];
    }
    // Leap seconds (60) are refused: PostgreSQL would roll them over.
    let t = NaiveTime::from_hms_micro_opt(h, m, sec, micros)?;
    Some((t, rest))
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !s
        .bytes()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return None;
    }
    NaiveDate::from_ymd_opt(
        s[0..4].parse().ok()?,
        s[5..7].parse().ok()?,
        s[8..10].parse().ok()?,
    )
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    match s {
        "Z" | "z" => FixedOffset::east_opt(0),
        _ => {
            let b = s.as_bytes();
            if b.len() != 6 || b[3] != b':' {
                return None;
            }
            let sign = match b[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i32 = s[1..3]
                .parse()
                .ok()
                .filter(|_| s[1..3].bytes().all(|c| c.is_ascii_digit()))?;
            let mm: i32 = s[4..6]
                .parse()
                .ok()
                .filter(|_| s[4..6].bytes().all(|c| c.is_ascii_digit()))?;
            if hh > 23 || mm > 59 {
                return None;
            }
            FixedOffset::east_opt(sign * (hh * 3600 + mm * 60))
        }
    }
}

/// Which of the accepted forms a timestamp text is in (for the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimestampFormat {
    /// `YYYY-MM-DD HH:MM:SS[.fff]`, SQLite's CURRENT_TIMESTAMP.
    SqlDateTime,
    /// RFC 3339 / ISO 8601 with `T`.
    Iso8601,
    /// `Wed Oct 10 20:19:24 +0000 2018`.
    Twitter,
    /// Epoch seconds (integer or integer text).
    EpochSeconds,
    /// Epoch milliseconds (integer or integer text, |v| ≥ 10^11).
    EpochMillis,
}

impl TimestampFormat {
    /// Stable name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampFormat::SqlDateTime => "sql_datetime",
            TimestampFormat::Iso8601 => "iso8601",
            TimestampFormat::Twitter => "twitter",
            TimestampFormat::EpochSeconds => "epoch_seconds",
            TimestampFormat::EpochMillis => "epoch_millis",
        }
    }
}

fn epoch_format(v: i64) -> TimestampFormat {
    if v.unsigned_abs() >= EPOCH_MILLIS_THRESHOLD as u64 {
        TimestampFormat::EpochMillis
    } else {
        TimestampFormat::EpochSeconds
    }
}

/// Parses a timestamp text in one of the accepted forms.
pub fn parse_timestamp_text(s: &str) -> Option<(Timestamp, TimestampFormat)> {
    if is_integer_text(s) {
        let v: i64 = s.parse().ok()?;
        return from_epoch(v).map(|t| (t, epoch_format(v)));
    }
    if s.len() >= 19
        && (s.as_bytes()[10] == b' ' || s.as_bytes()[10] == b'T' || s.as_bytes()[10] == b't')
    {
        let sep = s.as_bytes()[10];
        if let Some(date) = s.get(..10).and_then(parse_date) {
            return parse_datetime_rest(s, sep, date);
        }
    }
    // Twitter: "Wed Oct 10 20:19:24 +0000 2018"; chrono checks the weekday.
    if s.len() == 30 {
        if let Ok(t) = DateTime::parse_from_str(s, "%a %b %d %H:%M:%S %z %Y") {
            return Some((t.with_timezone(&Utc), TimestampFormat::Twitter));
        }
    }
    None
}

fn parse_datetime_rest(s: &str, sep: u8, date: NaiveDate) -> Option<(Timestamp, TimestampFormat)> {
    {
        let (time, rest) = parse_time(s.get(11..)?)?;
        let naive = NaiveDateTime::new(date, time);
        if sep == b' ' {
            return rest
                .is_empty()
                .then(|| (Utc.from_utc_datetime(&naive), TimestampFormat::SqlDateTime));
        }
        let t = if rest.is_empty() {
            Utc.from_utc_datetime(&naive)
        } else {
            let off = parse_offset(rest)?;
            off.from_local_datetime(&naive)
                .single()?
                .with_timezone(&Utc)
        };
        Some((t, TimestampFormat::Iso8601))
    }
}

/// The form of a timestamp value, or None when it is invalid (for the audit).
pub fn timestamp_format(raw: Raw<'_>) -> Option<TimestampFormat> {
    // Only what `timestamp` accepts: PostgreSQL's lower bound included.
    let in_range = |t: Timestamp| t.timestamp_micros() >= PG_MIN_TIMESTAMP_MICROS;
    match raw {
        Raw::Integer(v) => from_epoch(v)
            .filter(|t| in_range(*t))
            .map(|_| epoch_format(v)),
        Raw::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => from_epoch(f as i64)
            .filter(|t| in_range(*t))
            .map(|_| epoch_format(f as i64)),
        Raw::Text(b) => std::str::from_utf8(b)
            .ok()
            .and_then(parse_timestamp_text)
            .filter(|(t, _)| in_range(*t))
            .map(|(_, f)| f),
        _ => None,
    }
}

/// A DATETIME column → `timestamptz` (UTC, microseconds).
pub fn timestamp(column: &'static str, raw: Raw<'_>) -> Result<Option<Timestamp>, ValueError> {
    let t = timestamp_value(column, raw)?;
    match t {
        Some(t) if t.timestamp_micros() < PG_MIN_TIMESTAMP_MICROS => Err(bad(
            column,
            RejectReason::InvalidTimestamp,
            &raw,
            &format!("{t} is before PostgreSQL's lowest timestamp (4714-11-24 BC)"),
        )),
        other => Ok(other),
    }
}

/// PostgreSQL's lowest `timestamptz`, 4714-11-24 00:00:00 BC, in
/// microseconds from the Unix epoch. (Its highest, in 294276 AD, lies past
/// anything a legacy value can name.)
pub const PG_MIN_TIMESTAMP_MICROS: i64 = -210_866_803_200_000_000;

fn timestamp_value(column: &'static str, raw: Raw<'_>) -> Result<Option<Timestamp>, ValueError> {
    let invalid = |why: &str| bad(column, RejectReason::InvalidTimestamp, &raw, why);
    match raw {
        Raw::Null => Ok(None),
        Raw::Integer(v) => from_epoch(v)
            .map(Some)
            .ok_or_else(|| invalid("epoch value out of range")),
        Raw::Real(f) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
                from_epoch(f as i64)
                    .map(Some)
                    .ok_or_else(|| invalid("epoch value out of range"))
            } else {
                Err(invalid("a fractional number is not an epoch timestamp"))
            }
        }
        Raw::Text(b) => {
            let s = std::str::from_utf8(b).map_err(|_| invalid("not UTF-8 text"))?;
            parse_timestamp_text(s)
                .map(|(t, _)| Some(t))
                .ok_or_else(|| invalid("not a recognised timestamp"))
        }
        Raw::Blob(_) => Err(invalid("a blob is not a timestamp")),
    }
}

/// A BOOLEAN column.
pub fn boolean(column: &'static str, raw: Raw<'_>) -> Result<Option<bool>, ValueError> {
    let invalid = || bad(column, RejectReason::InvalidBoolean, &raw, "not a boolean");
    match raw {
        Raw::Null => Ok(None),
        Raw::Integer(0) => Ok(Some(false)),
        Raw::Integer(1) => Ok(Some(true)),
        // Exact comparisons: only the integral values 0.0 and 1.0 are booleans.
        Raw::Real(f) if f.to_bits() == 0f64.to_bits() || f.to_bits() == (-0f64).to_bits() => {
            Ok(Some(false))
        }
        Raw::Real(f) if f.to_bits() == 1f64.to_bits() => Ok(Some(true)),
        Raw::Text(b) => match std::str::from_utf8(b)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Ok("1" | "true" | "t" | "yes") => Ok(Some(true)),
            Ok("0" | "false" | "f" | "no") => Ok(Some(false)),
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

/// PostgreSQL's `numeric` limits, which `jsonb` applies to every number:
/// at most this many digits before the decimal point…
pub const NUMERIC_MAX_INT_DIGITS: i64 = 131_072;
/// …and at most this many after it (the display scale).
pub const NUMERIC_MAX_SCALE: i64 = 16_383;

/// The parts of a JSON number's text: sign, integer digits, fraction
/// digits, exponent (None when it does not fit an i64).
fn number_parts(text: &str) -> (bool, &str, &str, Option<i64>) {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (
            &body[..i],
            body[i + 1..].trim_start_matches('+').parse::<i64>().ok(),
        ),
        None => (body, Some(0)),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    (neg, int_part, frac_part, exp)
}

/// Why `jsonb` refuses this JSON number (its text), if it does: PostgreSQL
/// reads it as `numeric`, whose scale and integer digits are bounded.
pub fn jsonb_number_problem(text: &str) -> Option<String> {
    let (_, int_part, frac_part, exp) = number_parts(text);
    let digits = format!("{int_part}{frac_part}");
    let significant = digits.trim_start_matches('0');
    let Some(exp) = exp else {
        return Some(format!("the number {text} has an exponent out of range"));
    };
    let scale = (frac_part.len() as i64).saturating_sub(exp).max(0);
    if scale > NUMERIC_MAX_SCALE {
        return Some(format!(
            "the number {} needs {scale} digits after the decimal point; PostgreSQL's numeric (jsonb) holds at most {NUMERIC_MAX_SCALE}",
            abbreviate(text)
        ));
    }
    if !significant.is_empty() {
        let leading_zeros = (digits.len() - significant.len()) as i64;
        let int_digits = (int_part.len() as i64).saturating_add(exp) - leading_zeros;
        if int_digits > NUMERIC_MAX_INT_DIGITS {
            return Some(format!(
                "the number {} has {int_digits} digits before the decimal point; PostgreSQL's numeric (jsonb) holds at most {NUMERIC_MAX_INT_DIGITS}",
                abbreviate(text)
            ));
        }
    }
    None
}

fn abbreviate(text: &str) -> String {
    if text.len() <= 40 {
        text.to_string()
    } else {
        format!("{}…({} characters)", &text[..30], text.len())
    }
}

/// How `numeric` (so `jsonb`) prints a number written as `text`: plain
/// decimal, with as many fraction digits as the text's fraction minus its
/// exponent (never fewer than zero). Exact: no binary floating point.
/// `text` must be within `jsonb`'s range (`jsonb_number_problem`).
pub fn numeric_text(text: &str) -> String {
    let (neg, int_part, frac_part, exp) = number_parts(text);
    let exp = exp.unwrap_or(0);
    let digits: String = format!("{int_part}{frac_part}");
    // The decimal point sits after `point` digits of `digits`.
    let point = int_part.len() as i64 + exp;
    let dscale = (frac_part.len() as i64 - exp).max(0);
    let mut int_digits = String::new();
    for i in 0..(point.max(0)) {
        int_digits.push(
            digits
                .as_bytes()
                .get(i as usize)
                .map_or('0', |&b| b as char),
        );
    }
    let mut frac_digits = String::new();
    for i in 0..dscale {
        let idx = point + i;
        let c = if idx < 0 {
            '0'
        } else {
            digits
                .as_bytes()
                .get(idx as usize)
                .map_or('0', |&b| b as char)
        };
        frac_digits.push(c);
    }
    let int_digits = int_digits.trim_start_matches('0');
    let int_digits = if int_digits.is_empty() {
        "0"
    } else {
        int_digits
    };
    let zero = int_digits == "0" && frac_digits.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int_digits);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac_digits);
    }
    out
}

/// A number's exact decimal value as text, without trailing fraction
/// zeros (`1`, `1.0` and `1e0` give the same), for comparing values.
pub fn decimal_value(n: &serde_json::Number) -> String {
    let t = numeric_text(&n.to_string());
    if t.contains('.') {
        let t = t.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".to_string()
        } else {
            t.to_string()
        }
    } else {
        t
    }
}

/// Judges a parsed JSON value as `jsonb` does and rewrites every number as
/// `jsonb` prints it (exact decimal text), so a value read from SQLite
/// equals the one PostgreSQL returns.
fn jsonb_numbers(v: &mut Value) -> std::result::Result<(), String> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            if let Some(why) = jsonb_number_problem(&text) {
                return Err(why);
            }
            let printed = numeric_text(&text);
            if printed != text {
                *n = printed
                    .parse()
                    .map_err(|e| format!("the number {text}: {e}"))?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(jsonb_numbers),
        Value::Object(o) => o.values_mut().try_for_each(jsonb_numbers),
        _ => Ok(()),
    }
}

fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A JSON-in-TEXT column → `jsonb`.
pub fn json(column: &'static str, raw: Raw<'_>) -> Result<Option<Value>, ValueError> {
    match raw {
        Raw::Null => Ok(None),
        Raw::Integer(i) => Ok(Some(Value::from(i))),
        Raw::Real(f) => {
            let mut v = serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| {
                    bad(
                        column,
                        RejectReason::InvalidJson,
                        &raw,
                        "not a finite number",
                    )
                })?;
            jsonb_numbers(&mut v)
                .map_err(|why| bad(column, RejectReason::InvalidJson, &raw, &why))?;
            Ok(Some(v))
        }
        Raw::Text(b) | Raw::Blob(b) => {
            let s = utf8(column, &raw, b)?;
            let mut v: Value = serde_json::from_str(s).map_err(|e| {
                bad(
                    column,
                    RejectReason::InvalidJson,
                    &raw,
                    &format!("not JSON: {e}"),
                )
            })?;
            if holds_nul(&v) {
                return Err(bad(
                    column,
                    RejectReason::InvalidJson,
                    &raw,
                    "JSON holding \\u0000, which jsonb refuses",
                ));
            }
            jsonb_numbers(&mut v).map_err(|why| {
                bad(
                    column,
                    RejectReason::InvalidJson,
                    &raw,
                    &format!("{why}, which jsonb refuses"),
                )
            })?;
            Ok(Some(v))
        }
    }
}

/// An INTEGER column (PostgreSQL `integer`, 32 bits).
pub fn integer(column: &'static str, raw: Raw<'_>) -> Result<Option<i32>, ValueError> {
    let invalid = |why: &str| bad(column, RejectReason::InvalidInteger, &raw, why);
    let wide: i64 = match raw {
        Raw::Null => return Ok(None),
        Raw::Integer(i) => i,
        Raw::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => f as i64,
        Raw::Real(_) => return Err(invalid("not an integral number")),
        Raw::Text(b) => std::str::from_utf8(b)
            .ok()
            .filter(|s| is_integer_text(s))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("not integer text"))?,
        Raw::Blob(_) => return Err(invalid("a blob is not an integer")),
    };
    i32::try_from(wide)
        .map(Some)
        .map_err(|_| invalid("outside the 32-bit integer range"))
}

/// A `status` column with the plan's CHECK set.
pub fn status(column: &'static str, raw: Raw<'_>) -> Result<Option<JobStatus>, ValueError> {
    match text(column, raw)? {
        None => Ok(None),
        Some(s) => JobStatus::parse(&s).map(Some).ok_or_else(|| {
            bad(
                column,
                RejectReason::CheckViolation,
                &raw,
                "not one of pending, processing, completed, failed",
            )
        }),
    }
}

/// Formats a timestamp as the SQLite store writes it: RFC 3339, UTC, microseconds.
pub fn format_timestamp(t: &Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<Timestamp> {
        timestamp("c", Raw::Text(s.as_bytes())).unwrap()
    }

    #[test]
    fn timestamp_forms() {
        let want = Utc.with_ymd_and_hms(2018, 10, 10, 20, 19, 24).unwrap();
        assert_eq!(ts("2018-10-10 20:19:24"), Some(want));
        assert_eq!(ts("2018-10-10T20:19:24Z"), Some(want));
        assert_eq!(ts("2018-10-10T22:19:24+02:00"), Some(want));
        assert_eq!(ts("2018-10-10T20:19:24"), Some(want));
        assert_eq!(ts("Wed Oct 10 20:19:24 +0000 2018"), Some(want));
        assert_eq!(ts("1539202764"), Some(want));
        assert_eq!(ts("1539202764000"), Some(want));
        assert_eq!(
            timestamp("c", Raw::Integer(1_539_202_764_000)).unwrap(),
            Some(want)
        );
        assert_eq!(
            ts("2018-10-10T20:19:24.789Z")
                .unwrap()
                .timestamp_subsec_micros(),
            789_000
        );
    }

    #[test]
    fn sub_microsecond_fraction_is_refused() {
        assert!(timestamp("c", Raw::Text(b"2018-10-10 20:19:24.1234567")).is_err());
        assert!(timestamp("c", Raw::Text(b"2018-10-10 20:19:24.1234560")).is_ok());
    }

    #[test]
    fn garbage_is_invalid_and_names_the_column() {
        for s in [
            "",
            "yesterday",
            "2018-13-01 00:00:00",
            "Thu Oct 10 20:19:24 +0000 2018",
            " 2018-10-10 20:19:24",
        ] {
            let e = timestamp("created_at", Raw::Text(s.as_bytes())).unwrap_err();
            assert_eq!(e.column, "created_at");
            assert_eq!(e.reason, RejectReason::InvalidTimestamp, "{s}");
        }
    }

    #[test]
    fn booleans() {
        for (raw, want) in [
            (Raw::Integer(1), Some(true)),
            (Raw::Integer(0), Some(false)),
            (Raw::Text(b"TRUE"), Some(true)),
            (Raw::Text(b"f"), Some(false)),
            (Raw::Text(b"No"), Some(false)),
            (Raw::Null, None),
        ] {
            assert_eq!(boolean("b", raw).unwrap(), want);
        }
        assert_eq!(
            boolean("b", Raw::Integer(2)).unwrap_err().reason,
            RejectReason::InvalidBoolean
        );
    }

    #[test]
    fn json_and_text() {
        assert_eq!(
            json("j", Raw::Text(b"")).unwrap_err().reason,
            RejectReason::InvalidJson
        );
        assert_eq!(
            json("j", Raw::Text(br#"{"a":"\u0000"}"#))
                .unwrap_err()
                .reason,
            RejectReason::InvalidJson
        );
        assert_eq!(
            json("j", Raw::Text(br#"{"a":1"#)).unwrap_err().reason,
            RejectReason::InvalidJson
        );
        assert_eq!(
            text("t", Raw::Text(b"a\0b")).unwrap_err().reason,
            RejectReason::NulChar
        );
        assert_eq!(
            text("t", Raw::Text(b"a\xffb")).unwrap_err().reason,
            RejectReason::InvalidUtf8
        );
        assert_eq!(
            integer("i", Raw::Integer(1 << 40)).unwrap_err().reason,
            RejectReason::InvalidInteger
        );
        assert_eq!(integer("i", Raw::Real(3.0)).unwrap(), Some(3));
        assert_eq!(
            status("s", Raw::Text(b"done")).unwrap_err().reason,
            RejectReason::CheckViolation
        );
    }
}
