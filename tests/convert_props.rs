//! Properties of the legacy value parser (`convert`, docs/DESIGN.md §5): every
//! accepted timestamp form maps to the instant it renders, every accepted
//! boolean spelling maps to its value, and no input whatever makes a
//! converter panic or blame another column.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use cutover::convert::{self, Raw, RejectReason, ValueError, EPOCH_MILLIS_THRESHOLD};
use proptest::prelude::*;

/// 1970-01-01 .. 2100-01-01 in seconds.
const END_2100: i64 = 4_102_444_800;

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0..END_2100, 0..1_000_000u32)
        .prop_map(|(s, us)| Utc.timestamp_opt(s, us * 1000).single().unwrap())
}

fn ts_text(s: &str) -> Option<DateTime<Utc>> {
    convert::timestamp("created_at", Raw::Text(s.as_bytes())).unwrap_or_else(|e| {
        panic!("{s:?} refused: {e}");
    })
}

fn at_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp(), 0).single().unwrap()
}

proptest! {
    #[test]
    fn sql_datetime_with_micros(t in instant()) {
        let s = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
        prop_assert_eq!(ts_text(&s), Some(t));
        let (_, form) = convert::parse_timestamp_text(&s).unwrap();
        prop_assert_eq!(form, convert::TimestampFormat::SqlDateTime);
    }

    #[test]
    fn sql_datetime_without_fraction(t in instant()) {
        let s = t.format("%Y-%m-%d %H:%M:%S").to_string();
        prop_assert_eq!(ts_text(&s), Some(at_seconds(t)));
    }

    #[test]
    fn rfc3339_utc(t in instant()) {
        let s = t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        prop_assert_eq!(ts_text(&s), Some(t));
        // JavaScript's toISOString(): milliseconds.
        let ms = Utc.timestamp_millis_opt(t.timestamp_millis()).single().unwrap();
        let js = ms.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        prop_assert_eq!(ts_text(&js), Some(ms));
    }

    #[test]
    fn rfc3339_with_offset(t in instant(), minutes in -(23 * 60 + 59)..=(23 * 60 + 59)) {
        let off = FixedOffset::east_opt(minutes * 60).unwrap();
        let s = t.with_timezone(&off).format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string();
        prop_assert_eq!(ts_text(&s), Some(t), "{}", s);
    }

    #[test]
    fn twitter_format(t in instant()) {
        let s = t.format("%a %b %d %H:%M:%S +0000 %Y").to_string();
        prop_assert_eq!(ts_text(&s), Some(at_seconds(t)), "{}", s);
        let (_, form) = convert::parse_timestamp_text(&s).unwrap();
        prop_assert_eq!(form, convert::TimestampFormat::Twitter);
    }

    #[test]
    fn epoch_seconds(t in instant()) {
        let secs = t.timestamp();
        let want = Some(at_seconds(t));
        prop_assert_eq!(convert::timestamp("c", Raw::Integer(secs)).unwrap(), want);
        prop_assert_eq!(ts_text(&secs.to_string()), want);
    }

    #[test]
    fn epoch_millis(t in instant()) {
        let ms = t.timestamp_millis();
        // Below 10^11 (before 1973-03-03) a number is read as seconds: the
        // two readings cannot be told apart, and the rule picks seconds.
        prop_assume!(ms >= EPOCH_MILLIS_THRESHOLD);
        let want = Utc.timestamp_millis_opt(ms).single();
        prop_assert_eq!(convert::timestamp("c", Raw::Integer(ms)).unwrap(), want);
        prop_assert_eq!(ts_text(&ms.to_string()), want);
    }

    #[test]
    fn boolean_spellings_in_any_case(
        (word, want) in prop::sample::select(vec![
            ("1", true), ("true", true), ("t", true), ("yes", true),
            ("0", false), ("false", false), ("f", false), ("no", false),
        ]),
        upper in prop::collection::vec(any::<bool>(), 5),
    ) {
        let s: String = word
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        prop_assert_eq!(convert::boolean("is_reply", Raw::Text(s.as_bytes())).unwrap(), Some(want));
    }
}

/// Column names handed to the converters; errors must name the one given.
const COLUMNS: [&str; 4] = ["created_at", "is_reply", "metadata", "usage_count"];

fn raw_value() -> impl Strategy<Value = OwnedRaw> {
    prop_oneof![
        Just(OwnedRaw::Null),
        any::<i64>().prop_map(OwnedRaw::Integer),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            (-1e13..1e13f64).prop_map(f64::trunc),
        ]
        .prop_map(OwnedRaw::Real),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(OwnedRaw::Text),
        any::<String>().prop_map(|s| OwnedRaw::Text(s.into_bytes())),
        near_timestamp().prop_map(|s| OwnedRaw::Text(s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(OwnedRaw::Blob),
    ]
}

/// A valid timestamp text with one character replaced by an arbitrary one:
/// the inputs that reach deepest into the parser.
fn near_timestamp() -> impl Strategy<Value = String> {
    (
        instant(),
        0..4usize,
        any::<prop::sample::Index>(),
        any::<char>(),
    )
        .prop_map(|(t, form, at, c)| {
            let s = match form {
                0 => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                1 => t.format("%Y-%m-%dT%H:%M:%S%.3f+05:30").to_string(),
                2 => t.format("%a %b %d %H:%M:%S +0000 %Y").to_string(),
                _ => t.timestamp_millis().to_string(),
            };
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len());
            chars[i] = c;
            chars.into_iter().collect()
        })
}

#[derive(Debug, Clone)]
enum OwnedRaw {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl OwnedRaw {
    fn raw(&self) -> Raw<'_> {
        match self {
            OwnedRaw::Null => Raw::Null,
            OwnedRaw::Integer(i) => Raw::Integer(*i),
            OwnedRaw::Real(f) => Raw::Real(*f),
            OwnedRaw::Text(b) => Raw::Text(b),
            OwnedRaw::Blob(b) => Raw::Blob(b),
        }
    }
}

fn names_column<T>(r: Result<T, ValueError>, column: &str) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_eq!(e.column, column);
        prop_assert!(!e.detail.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn converters_never_panic_and_blame_the_column_given(
        v in raw_value(),
        col in 0..COLUMNS.len(),
    ) {
        let column = COLUMNS[col];
        let raw = v.raw();
        names_column(convert::timestamp(column, raw), column)?;
        names_column(convert::boolean(column, raw), column)?;
        names_column(convert::json(column, raw), column)?;
        names_column(convert::integer(column, raw), column)?;
        names_column(convert::text(column, raw), column)?;
        names_column(convert::status(column, raw), column)?;
        // The audit's form detection agrees with the converter.
        let form = convert::timestamp_format(raw);
        let parsed = convert::timestamp(column, raw);
        prop_assert_eq!(form.is_some(), matches!(parsed, Ok(Some(_))), "{:?}", raw);
    }

    #[test]
    fn text_is_refused_exactly_for_nul_or_bad_utf8(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        match convert::text("text", Raw::Text(&bytes)) {
            Ok(Some(s)) => prop_assert_eq!(s.as_bytes(), &bytes[..]),
            Ok(None) => prop_assert!(false, "text is never NULL"),
            Err(e) => match std::str::from_utf8(&bytes) {
                Ok(s) => {
                    prop_assert!(s.contains('\0'));
                    prop_assert_eq!(e.reason, RejectReason::NulChar);
                }
                Err(_) => prop_assert_eq!(e.reason, RejectReason::InvalidUtf8),
            },
        }
    }

    #[test]
    fn integers_in_range_convert_exactly(v in any::<i64>()) {
        let want = i32::try_from(v).ok();
        for raw in [Raw::Integer(v), Raw::Text(v.to_string().as_bytes())] {
            match convert::integer("usage_count", raw) {
                Ok(got) => prop_assert_eq!(got, want.map(Some).unwrap()),
                Err(e) => {
                    prop_assert!(want.is_none());
                    prop_assert_eq!(e.reason, RejectReason::InvalidInteger);
                }
            }
        }
    }
}

#[test]
fn multibyte_character_inside_the_time_is_refused_not_a_panic() {
    // Byte 7 starts a two-byte character: slicing the seconds at byte 8
    // would cut it.
    for s in [
        "2018-10-10 00:00:0é",
        "2018-10-10T20:19:2é.5Z",
        "2018-10-10 1é:00:00",
    ] {
        let e = convert::timestamp("created_at", Raw::Text(s.as_bytes())).unwrap_err();
        assert_eq!(e.reason, RejectReason::InvalidTimestamp, "{s}");
    }
}
