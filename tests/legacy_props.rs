//! A property over random legacy rows (every value kind; NULL, blob and
//! integer keys; orphans; JSON with extreme numbers): the backfill accounts
//! for every source row (source = copied + rejected, table by table) and
//! verify is clean afterwards.

mod common;

use proptest::prelude::*;
use rusqlite::types::Value as SqlValue;

/// One legacy value: (SQL value, bound as text from bytes).
#[derive(Debug, Clone)]
enum V {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

fn any_value() -> impl Strategy<Value = V> {
    prop_oneof![
        Just(V::Null),
        any::<i64>().prop_map(V::Int),
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0), (-1e13..1e13f64)].prop_map(V::Real),
        any::<String>().prop_map(|s| V::Text(s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(V::Text),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(V::Blob),
    ]
}

fn key() -> impl Strategy<Value = V> {
    prop_oneof![
        4 => "[a-z]{1,3}".prop_map(|s| V::Text(s.into_bytes())),
        1 => Just(V::Null),
        1 => "[a-z]{1,3}".prop_map(|s| V::Blob(s.into_bytes())),
        1 => (0..50i64).prop_map(V::Int),
    ]
}

fn timestamp() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => (0..4_102_444_800i64).prop_map(V::Int),
        2 => Just(V::Text(b"2024-02-29 12:34:56.123456".to_vec())),
        1 => Just(V::Text(b"yesterday".to_vec())),
        1 => Just(V::Int(-210_866_803_200_001)),
        1 => any_value(),
    ]
}

fn json() -> impl Strategy<Value = V> {
    prop_oneof![
        2 => Just(V::Null),
        2 => Just(V::Text(br#"{"n": 123456789012345678901234567890, "f": 0.1000000000000000055511151231257827}"#.to_vec())),
        1 => Just(V::Text(br#"{"e": 1e-20000}"#.to_vec())),
        1 => Just(V::Text(br#"[1E+2, -0, 1.50]"#.to_vec())),
        1 => Just(V::Text(br#"{"a": "\u0000"}"#.to_vec())),
        1 => any_value(),
    ]
}

/// A tweet row: id, user_id, text, created_at, url, is_reply, metadata.
fn tweet() -> impl Strategy<Value = Vec<V>> {
    (
        key(),
        prop_oneof![4 => Just(V::Text(b"u1".to_vec())), 1 => Just(V::Text(b"nobody".to_vec())), 1 => Just(V::Null)],
        prop_oneof![4 => "[ -~]{0,20}".prop_map(|s| V::Text(s.into_bytes())), 1 => any_value()],
        timestamp(),
        prop_oneof![3 => Just(V::Null), 1 => any_value()],
        prop_oneof![2 => (0..2i64).prop_map(V::Int), 1 => Just(V::Text(b"yes".to_vec())), 1 => any_value()],
        json(),
    )
        .prop_map(|(a, b, c, d, e, f, g)| vec![a, b, c, d, e, f, g])
}

fn sql(v: &V) -> (String, SqlValue) {
    match v {
        V::Null => ("?".into(), SqlValue::Null),
        V::Int(i) => ("?".into(), SqlValue::Integer(*i)),
        V::Real(f) => ("?".into(), SqlValue::Real(*f)),
        V::Text(b) => ("CAST(? AS TEXT)".into(), SqlValue::Blob(b.clone())),
        V::Blob(b) => ("?".into(), SqlValue::Blob(b.clone())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_legacy_row_is_copied_or_rejected_and_verify_is_clean(
        tweets in prop::collection::vec(tweet(), 0..25),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let db = common::TestDb::migrated().await;
            let dir = common::TempDir::new();
            let path = dir.file("legacy.db");
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
            c.execute_batch(
                "PRAGMA foreign_keys = OFF;
                 INSERT INTO users (id, username) VALUES ('u1', 'one'), ('u2', 'two');",
            )
            .unwrap();
            for t in &tweets {
                let (marks, values): (Vec<String>, Vec<SqlValue>) = t.iter().map(sql).unzip();
                c.execute(
                    &format!(
                        "INSERT OR IGNORE INTO tweets (id, user_id, text, created_at, url, is_reply, metadata) VALUES ({})",
                        marks.join(", ")
                    ),
                    rusqlite::params_from_iter(values),
                )
                .unwrap();
            }
            drop(c);
            let mut o = cutover::backfill::BackfillOptions::new(&path, db.settings.clone());
            o.policy = cutover::row::Policy::RejectRow;
            o.force = true;

            let summary = cutover::backfill::run(o, std::future::pending()).await.unwrap();
            for t in &summary.tables {
                assert_eq!(
                    t.source_rows,
                    Some(t.total_copied + t.total_rejected),
                    "{}: every source row copied or rejected: {t:?}",
                    t.table
                );
            }
            let r = common::verify_once(&path, &db).await;
            assert!(r.clean, "{r:#?}");
        });
    }
}
