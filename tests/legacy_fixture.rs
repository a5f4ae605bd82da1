//! A hand-made legacy file, as the old application left it, read back
//! through `SqliteStore`: every timestamp form, every boolean spelling and
//! every JSON column come back as the exact domain value, and a value that
//! cannot be converted is an error naming table, key and column.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::TempDir;
use cutover::convert::RejectReason;
use cutover::{Error, JobStatus, SqliteStore, Store};
use rusqlite::types::Value as Sql;
use serde_json::json;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::milliseconds(ms.into())
}

fn text(s: &str) -> Sql {
    Sql::Text(s.to_string())
}

/// The booleans of the fixture's tweets: (id, stored value, expected).
fn boolean_forms() -> Vec<(&'static str, Sql, Option<bool>)> {
    vec![
        ("b-int0", Sql::Integer(0), Some(false)),
        ("b-int1", Sql::Integer(1), Some(true)),
        ("b-true", text("true"), Some(true)),
        ("b-false", text("false"), Some(false)),
        ("b-TRUE", text("TRUE"), Some(true)),
        ("b-t", text("t"), Some(true)),
        ("b-f", text("f"), Some(false)),
        ("b-yes", text("yes"), Some(true)),
        ("b-No", text("No"), Some(false)),
        ("b-null", Sql::Null, None),
    ]
}

/// Builds the file with plain SQL, the way the Node application wrote it.
fn build(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    let users: [(&str, &str, Sql, Sql, Sql); 3] = [
        (
            "1001",
            "ada",
            text(r#"{"name":"Ada 🚀","bio":"مرحبا café","followers_count":12}"#),
            text("2024-03-01 12:34:56"),
            text("2024-03-01T12:34:56.789Z"),
        ),
        (
            "1002",
            "grace",
            text(r#"{"name":"Grace","tags":["a","b"],"nested":{"x":null}}"#),
            text("Wed Oct 10 20:19:24 +0000 2018"),
            Sql::Integer(1_709_296_496_789),
        ),
        (
            "1003",
            "linus",
            Sql::Null,
            text("2024-03-01T14:34:56+02:00"),
            // NUMERIC affinity stores this text as the integer 1539202764.
            text("1539202764"),
        ),
    ];
    for (id, name, profile, scraped, created) in users {
        conn.execute(
            "INSERT INTO users (id, username, profile_data, profile_picture_url, last_scraped, created_at) \
             VALUES (?1, ?2, ?3, 'https://pbs.twimg.com/p.jpg', ?4, ?5)",
            rusqlite::params![id, name, profile, scraped, created],
        )
        .unwrap();
    }
    for (k, (id, is_reply, _)) in boolean_forms().into_iter().enumerate() {
        conn.execute(
            "INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata) \
             VALUES (?1, '1001', ?2, ?3, NULL, ?4, ?5)",
            rusqlite::params![
                id,
                format!("tweet {k} 👨‍👩‍👧 שלום e\u{301} #rust @grace https://t.co/x"),
                format!("2020-01-01 00:00:{k:02}"),
                is_reply,
                r#"{"retweet_count":3,"entities":{"hashtags":["rust"],"urls":[]}}"#,
            ],
        )
        .unwrap();
    }
    conn.execute_batch(
        r#"
        INSERT INTO tweets (id, user_id, text, created_at, is_reply, metadata)
            VALUES ('bad-json', '1003', 'fine text', 'Wed Oct 10 20:19:24 +0000 2018', 0, '');
        INSERT INTO personality_analysis (id, user_id, traits, interests, communication_style, analyzed_at)
            VALUES ('pa-1', '1001', '{"openness":0.8}', '["rust","sql"]', '{"tone":"casual"}', 1709296496789);
        INSERT INTO funnel_progress (user_id, current_command_index, completed_commands, command_responses, last_updated)
            VALUES ('1001', 2, '["start","analyze"]', '{"start":{"ok":true}}', '2024-03-01T12:34:56.789Z');
        INSERT INTO funnel_completion (user_id, completed_at, completion_data)
            VALUES ('1002', 'Wed Oct 10 20:19:24 +0000 2018', '{"score":9.5}');
        INSERT INTO referral_codes (code, owner_user_id, usage_count, created_at)
            VALUES ('REFabc', '1001', 1, '2024-03-01 12:34:56');
        INSERT INTO referral_tracking (id, referral_code, referrer_user_id, referred_user_id, used_at)
            VALUES (1, 'REFabc', '1001', '1002', '2024-03-01T12:34:56.789Z');
        INSERT INTO referral_usage_log (id, referral_code, used_by_user_id, used_at)
            VALUES (1, 'REFabc', '1002', '2024-03-01T12:34:56.789Z');
        INSERT INTO analysis_queue (job_id, user_id, status, priority, total_chunks, processed_chunks,
                                    created_at, started_at, completed_at, error)
            VALUES (1, '1001', 'completed', 3, 2, 2, '2024-03-01 12:34:56',
                    '2024-03-01T12:34:56.789Z', 1709296496789, NULL);
        INSERT INTO analysis_chunks (chunk_id, job_id, chunk_index, tweet_count, status,
                                     started_at, completed_at, result, error)
            VALUES (1, 1, 0, 50, 'completed', '2024-03-01 12:34:56', '2024-03-01 12:34:56',
                    '{"themes":["rust"],"sentiment":0.5}', NULL),
                   (2, 1, 1, 20, 'completed', '2024-03-01 12:34:56', '2024-03-01 12:34:56',
                    '{"themes":[],"sentiment":-0.25}', NULL);
        "#,
    )
    .unwrap();
}

#[tokio::test]
async fn legacy_values_read_back_exactly() {
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    build(&path);
    let store = SqliteStore::open(&path).await.unwrap();

    let ada = store.get_user("1001").await.unwrap().unwrap();
    assert_eq!(ada.username, "ada");
    assert_eq!(
        ada.profile_data,
        Some(json!({"name": "Ada 🚀", "bio": "مرحبا café", "followers_count": 12}))
    );
    assert_eq!(ada.last_scraped, Some(utc(2024, 3, 1, 12, 34, 56, 0)));
    assert_eq!(ada.created_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));

    let grace = store.get_user("1002").await.unwrap().unwrap();
    assert_eq!(grace.last_scraped, Some(utc(2018, 10, 10, 20, 19, 24, 0)));
    assert_eq!(grace.created_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));
    assert_eq!(
        grace.profile_data,
        Some(json!({"name": "Grace", "tags": ["a", "b"], "nested": {"x": null}}))
    );

    let linus = store.get_user_by_username("linus").await.unwrap().unwrap();
    assert_eq!(linus.profile_data, None);
    assert_eq!(linus.last_scraped, Some(utc(2024, 3, 1, 12, 34, 56, 0)));
    assert_eq!(linus.created_at, Some(utc(2018, 10, 10, 20, 19, 24, 0)));

    for (k, (id, _, want)) in boolean_forms().into_iter().enumerate() {
        let t = store.get_tweet(id).await.unwrap().unwrap();
        assert_eq!(t.is_reply, want, "{id}");
        assert_eq!(t.created_at, utc(2020, 1, 1, 0, 0, k as u32, 0), "{id}");
        assert!(t.text.contains("👨‍👩‍👧 שלום e\u{301}"), "{id}");
        assert_eq!(
            t.metadata,
            Some(json!({"retweet_count": 3, "entities": {"hashtags": ["rust"], "urls": []}}))
        );
    }
    assert_eq!(store.count_tweets("1001").await.unwrap(), 10);
    let timeline = store.timeline("1001", 3, None).await.unwrap();
    let ids: Vec<&str> = timeline.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["b-null", "b-No", "b-yes"]);

    match store.get_tweet("bad-json").await {
        Err(Error::InvalidValue {
            table,
            key,
            column,
            reason,
            ..
        }) => {
            assert_eq!(
                (table, key.as_str(), column),
                ("tweets", "bad-json", "metadata")
            );
            assert_eq!(reason, RejectReason::InvalidJson);
        }
        other => panic!("an empty JSON text must be an InvalidValue error, got {other:?}"),
    }

    let pa = store.latest_analysis("1001").await.unwrap().unwrap();
    assert_eq!(pa.traits, json!({"openness": 0.8}));
    assert_eq!(pa.interests, json!(["rust", "sql"]));
    assert_eq!(pa.communication_style, json!({"tone": "casual"}));
    assert_eq!(pa.analyzed_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));

    let fp = store.funnel_progress("1001").await.unwrap().unwrap();
    assert_eq!(fp.current_command_index, Some(2));
    assert_eq!(fp.completed_commands, Some(json!(["start", "analyze"])));
    assert_eq!(fp.command_responses, Some(json!({"start": {"ok": true}})));
    assert_eq!(fp.last_updated, Some(utc(2024, 3, 1, 12, 34, 56, 789)));

    let fc = store.funnel_completion("1002").await.unwrap().unwrap();
    assert_eq!(fc.completed_at, Some(utc(2018, 10, 10, 20, 19, 24, 0)));
    assert_eq!(fc.completion_data, Some(json!({"score": 9.5})));

    let code = store.get_referral_code("REFabc").await.unwrap().unwrap();
    assert_eq!(code.owner_user_id, "1001");
    assert_eq!(code.usage_count, Some(1));
    assert_eq!(code.created_at, Some(utc(2024, 3, 1, 12, 34, 56, 0)));
    let usage = store.referral_usage("REFabc").await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].used_by_user_id, "1002");
    assert_eq!(usage[0].used_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));

    let job = store.get_job(1).await.unwrap().unwrap();
    assert_eq!(job.job.status, JobStatus::Completed);
    assert_eq!(job.job.priority, Some(3));
    assert_eq!(job.job.created_at, Some(utc(2024, 3, 1, 12, 34, 56, 0)));
    assert_eq!(job.job.started_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));
    assert_eq!(job.job.completed_at, Some(utc(2024, 3, 1, 12, 34, 56, 789)));
    assert_eq!(job.chunks.len(), 2);
    assert_eq!(
        job.chunks[1].result,
        Some(json!({"themes": [], "sentiment": -0.25}))
    );
    assert_eq!(job.chunks[1].tweet_count, 20);
}

#[tokio::test]
async fn opening_the_store_leaves_the_legacy_rows_as_they_are() {
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    build(&path);
    let dump = |p: &std::path::Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(p).unwrap();
        let mut out = Vec::new();
        for t in cutover::tables::ALL {
            let cols = t
                .columns
                .iter()
                .map(|c| format!("typeof({0}) || ':' || hex({0})", c.name))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let mut stmt = conn
                .prepare(&format!("SELECT {cols} FROM {} ORDER BY rowid", t.name))
                .unwrap();
            out.extend(
                stmt.query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .map(Result::unwrap),
            );
        }
        out
    };
    let before = dump(&path);
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.get_user("1001").await.unwrap();
        store.get_tweet("b-yes").await.unwrap();
    }
    assert_eq!(dump(&path), before);
}

/// The same file judged by the backfill's row conversion: every row copies
/// except the tweet with an empty JSON text.
#[test]
fn fixture_rows_convert_under_the_backfill_rules() {
    use cutover::convert::Raw;
    use cutover::row::{self, Cell, Policy};
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    build(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut rejected = Vec::new();
    for t in cutover::tables::ALL {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY rowid",
                t.column_list(),
                t.name
            ))
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            n += 1;
            let raws: Vec<Raw<'_>> = (0..t.columns.len())
                .map(|i| Raw::from(r.get_ref(i).unwrap()))
                .collect();
            match row::convert_row(t, &raws, Policy::RejectRow) {
                Ok(c) => {
                    if t.name == "users" && c.cells[0] == Cell::Text("1003".into()) {
                        assert_eq!(c.cells[4], Cell::Timestamp(utc(2024, 3, 1, 12, 34, 56, 0)));
                        assert_eq!(
                            c.cells[5],
                            Cell::Timestamp(utc(2018, 10, 10, 20, 19, 24, 0))
                        );
                    }
                }
                Err(errs) => rejected.push((t.name, row::key_text(raws[0]), errs[0].reason)),
            }
        }
        assert!(n > 0, "{} is empty", t.name);
    }
    assert_eq!(
        rejected,
        [("tweets", "bad-json".to_string(), RejectReason::InvalidJson)]
    );
}
