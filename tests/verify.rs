//! `cutover verify` against a real SQLite file and a real PostgreSQL:
//! legacy value forms verify clean by checksum alone, each kind of
//! divergence is found and named, `--repair` fixes it, rejects are accounted.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TempDir, TestDb};
use cutover::verify::{verify, DivergenceKind, VerifyOptions, VerifyReport};
use sqlx::PgPool;

const BULK: i64 = 2500;

/// The same data on both sides: SQLite in the legacy forms the old
/// application wrote, PostgreSQL typed (JSON with other key order and spacing).
async fn seed(sqlite: &Path, pool: &PgPool) {
    let c = rusqlite::Connection::open(sqlite).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    c.execute_batch(
        r#"
        INSERT INTO users VALUES ('u1', 'alice',
            '{"b":2,"a":{"y":[1,2.5,"x\"y"],"x":null},"emoji":"😀é\n\u0007","":"empty","aa":{}}',
            'http://p/1', '2018-10-10 20:19:24', 1539202764000);
        INSERT INTO users VALUES ('u2', 'bob', NULL, NULL, 'Wed Oct 10 20:19:24 +0000 2018',
            '2024-03-01T12:34:56.789Z');
        INSERT INTO users VALUES ('u3', 'carol',
            '{"n": 12345678901234, "f": 1.5, "big": 1e300, "neg": -0.25, "one": 1.0, "tiny": 1e-7, "u": "\u00e9\\"}',
            NULL, 1539202764, '2024-03-01T14:34:56.789+02:00');
        INSERT INTO tweets VALUES ('t1', 'u1', 'tab	and \ backslash
newline', '2018-10-10 20:19:24', NULL, 1, '{"k":[]}', '2020-01-01 00:00:00.123456');
        INSERT INTO tweets VALUES ('t2', 'u1', 'second', 1539202764000, 'http://t', 'false', '{}', NULL);
        INSERT INTO tweets VALUES ('t3', 'u2', 'x', 'Wed Oct 10 20:19:24 +0000 2018', NULL, NULL, NULL, NULL);
        INSERT INTO personality_analysis VALUES ('p1', 'u1', '{"open":0.5,"calm":[1,2]}', '["a","b"]',
            '{"tone":"dry"}', '2021-05-05 05:05:05');
        INSERT INTO funnel_progress VALUES ('u1', 2, '["a"]', '{"a": "x"}', '2021-05-05 05:05:05');
        INSERT INTO funnel_completion VALUES ('u1', 1620191105000, '{}');
        INSERT INTO referral_codes VALUES ('CODE1', 'u1', 1, '2021-05-05 05:05:05');
        INSERT INTO referral_tracking VALUES (1, 'CODE1', 'u1', 'u2', '2021-05-05 05:05:05');
        INSERT INTO referral_usage_log VALUES (1, 'CODE1', 'u2', '2021-05-05T05:05:05Z');
        INSERT INTO analysis_queue VALUES (1, 'u1', 'completed', 5, 2, 2, '2021-05-05 05:05:05',
            '2021-05-05 05:05:06', NULL, NULL);
        INSERT INTO analysis_chunks VALUES (1, 1, 0, 10, 'completed', NULL, NULL,
            '{"z":1,"a":{"c":[true,false,null]}}', NULL);
        INSERT INTO analysis_chunks VALUES (2, 1, 1, 10, 'failed', NULL, NULL, NULL, 'boom');
        WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2500)
        INSERT INTO tweets SELECT printf('b%05d', i), 'u3', 'text ' || i, 1577836800 + i, NULL,
            i % 2 = 0, '{"i":' || i || ',"s":"v' || i || '"}', NULL FROM s;
        "#,
    )
    .unwrap();
    sqlx::raw_sql(
        r#"
        INSERT INTO users VALUES ('u1', 'alice',
            '{"aa": {}, "emoji": "😀é\n\u0007", "b": 2, "": "empty", "a": {"x": null, "y": [1, 2.5, "x\"y"]}}',
            'http://p/1', '2018-10-10 20:19:24+00', '2018-10-10 20:19:24Z');
        INSERT INTO users VALUES ('u2', 'bob', NULL, NULL, '2018-10-10 20:19:24+00',
            '2024-03-01 12:34:56.789+00');
        INSERT INTO users VALUES ('u3', 'carol',
            '{"u": "é\\", "tiny": 1e-7, "one": 1.0, "neg": -0.25, "big": 1e300, "f": 1.5, "n": 12345678901234}',
            NULL, '2018-10-10 20:19:24+00', '2024-03-01 12:34:56.789+00');
        INSERT INTO tweets VALUES ('t1', 'u1', E'tab\tand \\ backslash\nnewline', '2018-10-10 20:19:24+00',
            NULL, true, '{"k": []}', '2020-01-01 00:00:00.123456+00');
        INSERT INTO tweets VALUES ('t2', 'u1', 'second', '2018-10-10 20:19:24+00', 'http://t', false, '{}', NULL);
        INSERT INTO tweets VALUES ('t3', 'u2', 'x', '2018-10-10 20:19:24+00', NULL, NULL, NULL, NULL);
        INSERT INTO personality_analysis VALUES ('p1', 'u1', '{"calm": [1, 2], "open": 0.5}', '["a", "b"]',
            '{"tone": "dry"}', '2021-05-05 05:05:05+00');
        INSERT INTO funnel_progress VALUES ('u1', 2, '["a"]', '{"a":"x"}', '2021-05-05 05:05:05+00');
        INSERT INTO funnel_completion VALUES ('u1', '2021-05-05 05:05:05+00', '{}');
        INSERT INTO referral_codes VALUES ('CODE1', 'u1', 1, '2021-05-05 05:05:05+00');
        INSERT INTO referral_tracking VALUES (1, 'CODE1', 'u1', 'u2', '2021-05-05 05:05:05+00');
        INSERT INTO referral_usage_log VALUES (1, 'CODE1', 'u2', '2021-05-05 05:05:05+00');
        INSERT INTO analysis_queue VALUES (1, 'u1', 'completed', 5, 2, 2, '2021-05-05 05:05:05+00',
            '2021-05-05 05:05:06+00', NULL, NULL);
        INSERT INTO analysis_chunks VALUES (1, 1, 0, 10, 'completed', NULL, NULL,
            '{"a": {"c": [true, false, null]}, "z": 1}', NULL);
        INSERT INTO analysis_chunks VALUES (2, 1, 1, 10, 'failed', NULL, NULL, NULL, 'boom');
        INSERT INTO tweets SELECT 'b' || lpad(i::text, 5, '0'), 'u3', 'text ' || i,
            timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second', NULL, i % 2 = 0,
            jsonb_build_object('s', 'v' || i, 'i', i), NULL FROM generate_series(1, 2500) i;
        "#,
    )
    .execute(pool)
    .await
    .unwrap();
}

fn options(sqlite: &Path, db: &TestDb) -> VerifyOptions {
    let mut o = VerifyOptions::new(sqlite, db.settings.clone());
    o.chunk_rows = 500;
    o
}

fn kinds(r: &VerifyReport, table: &str) -> Vec<(DivergenceKind, String, Vec<String>)> {
    let t = r.tables.iter().find(|t| t.table == table).unwrap();
    t.divergences
        .iter()
        .map(|d| (d.kind, d.key.clone(), d.columns.clone()))
        .collect()
}

fn cli(sqlite: &Path, db: &TestDb, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("--sqlite")
        .arg(sqlite)
        .args(["--postgres", &db.url()])
        .args(["--env-file", "/dev/null"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn equal_data_in_legacy_forms_verifies_clean_by_checksum() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    let pool = db.pool().await;
    seed(&path, &pool).await;

    let r = verify(&options(&path, &db)).await.unwrap();
    assert!(r.clean, "{r:#?}");
    assert_eq!(r.divergent_rows, 0);
    assert_eq!(r.authoritative, "sqlite");
    assert_eq!(r.tables.len(), 10);
    let tweets = r.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.sqlite_rows, BULK + 3);
    assert!(tweets.chunks >= 6, "{tweets:?}");
    // Every range agreed on its checksum: the canonical forms of legacy
    // timestamps and JSON are byte-identical to PostgreSQL's, no row shipped.
    for t in &r.tables {
        assert_eq!(
            t.chunks_compared, 0,
            "{} ranges were compared row by row",
            t.table
        );
    }
    let (clean, n): (bool, i64) = sqlx::query_as(
        "SELECT clean, divergent_rows FROM cutover.verify_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(clean);
    assert_eq!(n, 0);

    let out = cli(
        &path,
        &db,
        &["verify", "--json", "--tables", "users,tweets"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], true);
    assert_eq!(v["tables"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn divergences_are_named_rejects_accounted_and_repair_fixes_them() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    let pool = db.pool().await;
    seed(&path, &pool).await;

    // A legacy row the backfill rejected: in SQLite only, recorded as rejected.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "INSERT INTO tweets VALUES ('tbad', 'u1', 'bad date', 'yesterday', NULL, NULL, NULL, NULL)",
        [],
    )
    .unwrap();
    sqlx::query(
        "INSERT INTO cutover.rejects (table_name, row_key, column_name, reason, original) \
         VALUES ('tweets', 'tbad', 'created_at', 'invalid_timestamp', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // A row copied under null-and-record: NULL in PostgreSQL where SQLite
    // holds a bad boolean, recorded with row_copied: not divergence.
    c.execute(
        "INSERT INTO tweets VALUES ('tnull', 'u1', 'bad bool', '2020-01-01 00:00:00', NULL, 'maybe', NULL, NULL)",
        [],
    )
    .unwrap();
    sqlx::raw_sql(
        "INSERT INTO tweets VALUES ('tnull', 'u1', 'bad bool', '2020-01-01 00:00:00+00', NULL, NULL, NULL, NULL); \
         INSERT INTO cutover.rejects (table_name, row_key, column_name, reason, policy, row_copied, original) \
         VALUES ('tweets', 'tnull', 'is_reply', 'invalid_boolean', 'null-and-record', true, '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // missing: t2 and chunk 2 gone from PostgreSQL; extra: tx and chunk 3 only there;
    // field: username of u1, traits of p1 (JSON), a bulk tweet's created_at.
    sqlx::raw_sql(
        r#"
        DELETE FROM tweets WHERE id = 't2';
        DELETE FROM analysis_chunks WHERE chunk_id = 2;
        INSERT INTO tweets VALUES ('tx', 'u1', 'extra', now(), NULL, NULL, NULL, NULL);
        INSERT INTO analysis_chunks VALUES (3, 1, 2, 10, 'pending', NULL, NULL, NULL, NULL);
        UPDATE users SET username = 'mallory' WHERE id = 'u1';
        UPDATE personality_analysis SET traits = '{"open": 0.6, "calm": [1, 2]}' WHERE id = 'p1';
        UPDATE tweets SET created_at = created_at + interval '1 microsecond' WHERE id = 'b01234';
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();

    let r = verify(&options(&path, &db)).await.unwrap();
    assert!(!r.clean);
    assert_eq!(r.divergent_rows, 7, "{r:#?}");
    assert_eq!(r.rejected_rows, 1);
    let tweets = r.tables.iter().find(|t| t.table == "tweets").unwrap();
    assert_eq!(tweets.rejected, vec!["tbad".to_string()]);
    let mut tw = kinds(&r, "tweets");
    tw.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        tw,
        vec![
            (
                DivergenceKind::Field,
                "b01234".into(),
                vec!["created_at".into()]
            ),
            (DivergenceKind::Missing, "t2".into(), vec![]),
            (DivergenceKind::Extra, "tx".into(), vec![]),
        ]
    );
    assert_eq!(
        kinds(&r, "users"),
        vec![(DivergenceKind::Field, "u1".into(), vec!["username".into()])]
    );
    assert_eq!(
        kinds(&r, "personality_analysis"),
        vec![(DivergenceKind::Field, "p1".into(), vec!["traits".into()])]
    );
    assert_eq!(
        kinds(&r, "analysis_chunks"),
        vec![
            (DivergenceKind::Missing, "2".into(), vec![]),
            (DivergenceKind::Extra, "3".into(), vec![]),
        ]
    );

    // The binary: exit 1 and one parseable JSON object.
    let out = cli(&path, &db, &["verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["divergent_rows"], 7);

    // Repair, through the binary, then a fresh verify is clean.
    let out = cli(&path, &db, &["verify", "--json", "--repair"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repair"]["divergent_before"], 7);
    assert_eq!(v["repair"]["rows_deleted"], 2);
    assert_eq!(v["repair"]["rows_written"], 5);
    assert_eq!(v["rejected_rows"], 1);

    let r = verify(&options(&path, &db)).await.unwrap();
    assert!(r.clean, "{r:#?}");
    let name: String = sqlx::query_scalar("SELECT username FROM users WHERE id = 'u1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "alice");
    // The repaired serial id moved the sequence past it.
    let next: i32 = sqlx::query_scalar("SELECT nextval('analysis_chunks_chunk_id_seq')::int")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(next > 2);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.verify_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 4);
}

#[tokio::test]
async fn with_postgres_authoritative_repair_rewrites_sqlite() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let path = dir.file("legacy.db");
    let pool = db.pool().await;
    seed(&path, &pool).await;
    sqlx::query("UPDATE cutover.state SET stage = 'live'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        r#"
        INSERT INTO tweets VALUES ('t9', 'u2', 'written in live', '2025-01-02 03:04:05.678901+00',
            NULL, true, '{"x": [1, {"y": "z"}]}', NULL);
        UPDATE funnel_progress SET current_command_index = 3 WHERE user_id = 'u1';
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("DELETE FROM referral_usage_log WHERE id = 1", [])
        .unwrap();
    c.execute(
        "INSERT INTO tweets VALUES ('t8', 'u1', 'only legacy', '2020-01-01 00:00:00', NULL, 0, NULL, NULL)",
        [],
    )
    .unwrap();

    let r = verify(&options(&path, &db)).await.unwrap();
    assert_eq!(r.authoritative, "postgres");
    let mut tw = kinds(&r, "tweets");
    tw.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        tw,
        vec![
            (DivergenceKind::Extra, "t8".into(), vec![]),
            (DivergenceKind::Missing, "t9".into(), vec![]),
        ]
    );
    assert_eq!(
        kinds(&r, "funnel_progress"),
        vec![(
            DivergenceKind::Field,
            "u1".into(),
            vec!["current_command_index".into()]
        )]
    );
    assert_eq!(
        kinds(&r, "referral_usage_log"),
        vec![(DivergenceKind::Missing, "1".into(), vec![])]
    );

    let mut o = options(&path, &db);
    o.repair = true;
    let r = verify(&o).await.unwrap();
    assert!(r.clean, "{r:#?}");
    assert_eq!(r.repair.as_ref().unwrap().divergent_before, 4);
    let (ts, reply): (String, i64) = c
        .query_row(
            "SELECT created_at, is_reply FROM tweets WHERE id = 't9'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ts, "2025-01-02T03:04:05.678901Z");
    assert_eq!(reply, 1);
    let gone: i64 = c
        .query_row("SELECT count(*) FROM tweets WHERE id = 't8'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(gone, 0);
}

#[tokio::test]
async fn errors_exit_with_two() {
    let db = TestDb::migrated().await;
    let dir = TempDir::new();
    let out = cli(&dir.file("absent.db"), &db, &["verify", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let path = dir.file("legacy.db");
    let pool = db.pool().await;
    seed(&path, &pool).await;
    let out = cli(&path, &db, &["verify", "--tables", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown table"));
}

fn random_json(rng: &mut rand::rngs::StdRng, depth: u32) -> serde_json::Value {
    use rand::{Rng, RngCore};
    use serde_json::{json, Value};
    let pick = if depth == 0 {
        rng.random_range(0..6)
    } else {
        rng.random_range(0..8)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => match rng.random_range(0..3) {
            0 => json!(rng.random_range(-1000i64..1000)),
            1 => json!(rng.next_u64() as i64),
            _ => json!(rng.next_u64()),
        },
        3 => {
            // Floats of every magnitude, as serde_json prints them.
            let mantissa: f64 = rng.random_range(-10.0..10.0);
            let exp = rng.random_range(-320..308);
            let v = mantissa * 10f64.powi(exp);
            if v.is_finite() {
                json!(v)
            } else {
                json!(0.5)
            }
        }
        4 | 5 => {
            let alphabet = [
                'a', 'Z', '"', '\\', '/', '\n', '\t', '\u{1}', '\u{1f}', '\u{7f}', 'é', '😀',
                '\u{202e}', ' ', '\r', '\u{8}', '\u{c}',
            ];
            let n = rng.random_range(0..8);
            Value::String(
                (0..n)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect(),
            )
        }
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                let keys = [
                    "",
                    "a",
                    "b",
                    "aa",
                    "ab",
                    "ba",
                    "zzz",
                    "é",
                    "A",
                    "key with space",
                ];
                m.insert(
                    keys[rng.random_range(0..keys.len())].to_string(),
                    random_json(rng, depth - 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// The Rust rendering of `jsonb` text is byte-identical to PostgreSQL's for
/// random nested values (keys, escapes, unicode, numbers of every size).
#[tokio::test]
async fn jsonb_text_matches_postgresql_for_random_values() {
    use rand::SeedableRng;
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20181010);
    let values: Vec<serde_json::Value> = (0..400).map(|_| random_json(&mut rng, 4)).collect();
    let array = serde_json::Value::Array(values.clone()).to_string();
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT x::text FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS t(x, n) ORDER BY n",
    )
    .bind(array)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(texts.len(), values.len());
    for (v, pg) in values.iter().zip(&texts) {
        assert_eq!(&cutover::verify::canonical::jsonb_text(v), pg, "{v}");
    }
}
