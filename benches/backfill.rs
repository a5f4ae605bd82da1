//! Backfill throughput against `psql \copy` of the same rows.
//!
//! Builds a legacy file of realistic tweets (140–280 characters with emoji,
//! URLs and mentions, a few hundred bytes of JSON metadata, Twitter-format
//! dates), backfills it into a fresh PostgreSQL database with the plan's
//! indexes in place, then loads the very same converted rows from CSV with
//! `psql -c '\copy tweets FROM ... CSV'` into the same schema, indexes in
//! place too, and reports rows/s for both and their ratio (median of runs).
//!
//! `DATABASE_URL=postgres://... cargo bench --bench backfill` (optional:
//! `BENCH_ROWS`, default 100000; `BENCH_RUNS`, default 3). Needs `psql`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cutover::backfill::{self, BackfillOptions};
use cutover::settings::PgSettings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection};

const USERS: usize = 1_000;
const WORDS: &[&str] = &[
    "just",
    "shipped",
    "the",
    "new",
    "release",
    "and",
    "it",
    "feels",
    "great",
    "to",
    "finally",
    "see",
    "this",
    "live",
    "thanks",
    "everyone",
    "who",
    "helped",
    "café",
    "naïve",
    "日本語",
    "مرحبا",
    "weekend",
    "coffee",
    "thread",
    "why",
    "does",
    "nobody",
    "talk",
    "about",
    "this",
];
const EMOJI: &[&str] = &["🚀", "🔥", "😂", "❤️", "👍🏽", "🎉", "🤔", "👨‍👩‍👧"];

fn tweet_text(rng: &mut StdRng) -> String {
    let target = rng.random_range(140..=280);
    let mut s = String::new();
    while s.chars().count() < target {
        match rng.random_range(0..10) {
            0 => s.push_str(&format!("@user{} ", rng.random_range(0..USERS))),
            1 => s.push_str(&format!("https://t.co/{:x} ", rng.random::<u64>())),
            2 => s.push_str(EMOJI[rng.random_range(0..EMOJI.len())]),
            3 => s.push_str(&format!("#{} ", WORDS[rng.random_range(0..WORDS.len())])),
            _ => {
                s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                s.push(' ');
            }
        }
    }
    s.chars().take(target).collect()
}

fn twitter_date(rng: &mut StdRng) -> String {
    let secs = rng.random_range(1_400_000_000i64..1_700_000_000);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%a %b %d %H:%M:%S +0000 %Y")
        .to_string()
}

fn build_file(path: &Path, rows: usize) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(cutover::sqlite::LEGACY_SCHEMA).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut u = tx
            .prepare("INSERT INTO users (id, username, profile_data, created_at) VALUES (?1, ?2, ?3, CURRENT_TIMESTAMP)")
            .unwrap();
        for i in 0..USERS {
            u.execute(rusqlite::params![
                format!("{}", 10_000_000 + i),
                format!("user{i}"),
                format!(r#"{{"followers": {}, "bio": "hello"}}"#, i * 7),
            ])
            .unwrap();
        }
        let mut t = tx
            .prepare(
                "INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata, created_in_db)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        for i in 0..rows {
            let id = 1_500_000_000_000_000_000u64 + i as u64;
            let user = 10_000_000 + rng.random_range(0..USERS);
            let metadata = serde_json::json!({
                "lang": "en",
                "retweet_count": rng.random_range(0..5000),
                "favorite_count": rng.random_range(0..50000),
                "source": "<a href=\"http://twitter.com/download/iphone\" rel=\"nofollow\">Twitter for iPhone</a>",
                "entities": {
                    "hashtags": [WORDS[rng.random_range(0..WORDS.len())]],
                    "user_mentions": [{"screen_name": format!("user{}", rng.random_range(0..USERS)), "id": rng.random::<u32>()}],
                    "urls": [{"expanded_url": format!("https://example.com/{}", rng.random::<u32>())}]
                },
                "possibly_sensitive": false
            });
            t.execute(rusqlite::params![
                id.to_string(),
                user.to_string(),
                tweet_text(&mut rng),
                twitter_date(&mut rng),
                format!("https://twitter.com/user/status/{id}"),
                rng.random_range(0..2),
                metadata.to_string(),
                1_700_000_000_000i64 + i as i64,
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .unwrap();
}

async fn fresh_db(admin: &PgSettings, name: &str) -> PgSettings {
    let mut c = PgConnection::connect_with(&admin.connect_options())
        .await
        .unwrap();
    exec(
        &mut c,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    exec(
        &mut c,
        &format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"),
    )
    .await;
    let s = admin.with_database(name);
    let pool = sqlx::PgPool::connect_with(s.connect_options())
        .await
        .unwrap();
    cutover::pg::migrate(&pool).await.unwrap();
    pool.close().await;
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn psql(url: &str, cmd: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", cmd])
        .output()
        .expect("psql on PATH");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

async fn backfill_tweets(sqlite: &Path, pg: &PgSettings, writer_share: f64) -> f64 {
    backfill_tweets_with(sqlite, pg, writer_share, false).await
}

/// Rows per second end to end: with `defer`, the indexes' rebuild is inside
/// the timing.
async fn backfill_tweets_with(
    sqlite: &Path,
    pg: &PgSettings,
    writer_share: f64,
    defer: bool,
) -> f64 {
    let mut c = PgConnection::connect_with(&pg.connect_options())
        .await
        .unwrap();
    exec(&mut c, "TRUNCATE tweets").await;
    exec(&mut c, "DELETE FROM cutover.rejects").await;
    exec(
        &mut c,
        "DELETE FROM cutover.checkpoints WHERE table_name = 'tweets'",
    )
    .await;
    exec(&mut c, "VACUUM ANALYZE tweets").await;
    let mut o = BackfillOptions::new(sqlite, pg.clone());
    o.tables = Some(vec!["tweets".into()]);

    o.writer_share = writer_share;
    o.batch_size = 5000;
    o.defer_indexes = defer;
    // A fresh database with no application: the stage stays `off`.
    o.force = true;
    let started = Instant::now();
    let s = backfill::run(o, std::future::pending()).await.unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(s.reconciled());
    let t = &s.tables[0];
    assert_eq!(t.rejected_total(), 0);
    eprintln!(
        "  backfill{}: {:.2} s copy ({:.2} s wall with index rebuild), of which SQLite read+convert {:.2} s, PostgreSQL {:.2} s",
        if defer { " --defer-indexes" } else { "" },
        t.seconds, wall, t.sqlite_seconds, t.postgres_seconds
    );
    if defer {
        t.copied as f64 / wall
    } else {
        t.rows_per_sec()
    }
}

fn main() {
    let url = std::env::var("DATABASE_URL")
        .expect("set DATABASE_URL to a PostgreSQL server the bench may create a database on");
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("bench.db");
    let csv = dir.path().join("tweets.csv");
    eprintln!("building a legacy file of {rows} tweets…");
    build_file(&sqlite, rows);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = PgSettings::from_url(&url).unwrap();
        let name = format!("cutover_bench_{}", std::process::id());
        let pg = fresh_db(&admin, &name).await;
        let mut users = BackfillOptions::new(&sqlite, pg.clone());
        users.tables = Some(vec!["users".into()]);

    users.force = true;
        backfill::run(users, std::future::pending()).await.unwrap();
        let db_url = pg.redacted().to_string();

        let mut ours = Vec::new();
        let mut ours_shared = Vec::new();
        let mut ours_deferred = Vec::new();
        let mut theirs = Vec::new();
        for run in 0..runs {
            ours.push(backfill_tweets(&sqlite, &pg, 0.0).await);
            ours_shared.push(backfill_tweets(&sqlite, &pg, 0.25).await);
            ours_deferred.push(backfill_tweets_with(&sqlite, &pg, 0.0, true).await);
            if run == 0 {
                // The same converted rows, as CSV, for \copy.
                psql(&db_url, &format!("\\copy tweets TO '{}' CSV", csv.display()));
            }
            let mut c = PgConnection::connect_with(&pg.connect_options()).await.unwrap();
            exec(&mut c, "TRUNCATE tweets").await;
            exec(&mut c, "VACUUM ANALYZE tweets").await;
            let took = psql(&db_url, &format!("\\copy tweets FROM '{}' CSV", csv.display()));
            theirs.push(rows as f64 / took.as_secs_f64());
            eprintln!(
                "run {run}: backfill {:.0} rows/s (writer share 0.25: {:.0}; --defer-indexes, rebuild included: {:.0}), psql \\copy {:.0} rows/s",
                ours[run], ours_shared[run], ours_deferred[run], theirs[run]
            );
        }
        let (a, b, s, d) = (
            median(ours),
            median(theirs),
            median(ours_shared),
            median(ours_deferred),
        );
        println!("tweets: {rows} rows, indexes in place, median of {runs} runs");
        println!("  cutover backfill (--writer-share 0):    {a:>10.0} rows/s  ({:.2}x psql \\copy)", a / b);
        println!("  cutover backfill (default share 0.25):  {s:>10.0} rows/s  ({:.2}x psql \\copy)", s / b);
        println!("  cutover backfill --defer-indexes:        {d:>10.0} rows/s  ({:.2}x psql \\copy; index rebuild included)", d / b);
        println!("  psql \\copy from CSV:                    {b:>10.0} rows/s");

        let mut c = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
        exec(&mut c, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
    });
}
