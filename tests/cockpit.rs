//! What the operator and the embedder see: command output, refusals that
//! name the fix, `cutover status`, designed deferrals counted apart from
//! failures, progress that stops where the run stopped.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover::dual::DualConfig;
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{
    Cutover, CutoverConfig, DualStore, NewTweet, PgStore, ScrapedProfile, SqliteStore, Store,
};

fn legacy(dir: &common::TempDir, users: u64, tweets: u64) -> std::path::PathBuf {
    let path = dir.file("legacy.db");
    common::generated(&path, users, tweets, 0.0, 7);
    path
}

/// The command with the user's own environment: no RUST_LOG, output piped.
fn run(
    dir: &common::TempDir,
    sqlite: &std::path::Path,
    db: Option<&common::TestDb>,
    args: &[&str],
) -> (i32, String, String) {
    let out = common::cutover_cmd(dir.0.path(), sqlite, db, args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (o, e) = common::text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_says_what_it_did_and_library_notices_stay_quiet() {
    let dir = common::TempDir::new();
    let db = common::TestDb::new().await;
    let sqlite = dir.file("none.db");
    let (code, out, err) = run(&dir, &sqlite, Some(&db), &["schema"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("applied 0001"),
        "first run lists what it applied: {out}"
    );
    assert!(out.contains("now at version"), "{out}");
    let (code, out, err) = run(&dir, &sqlite, Some(&db), &["schema"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("nothing to apply"),
        "second run says so: {out}"
    );
    assert!(
        !err.contains("already exists"),
        "sqlx's migration notice leaks: {err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_schema_changes_the_schema_the_rest_names_it() {
    let dir = common::TempDir::new();
    let db = common::TestDb::new().await;
    let sqlite = legacy(&dir, 5, 20);
    for args in [
        &["backfill"][..],
        &["stage", "get"],
        &["verify"],
        &["status"],
    ] {
        let (code, out, err) = run(&dir, &sqlite, Some(&db), args);
        assert_eq!(code, 2, "{args:?} on an empty database: {out}{err}");
        assert!(
            err.contains("run `cutover schema`"),
            "{args:?} names the fix: {err}"
        );
    }
    let e = Cutover::start(CutoverConfig::new(&sqlite, db.settings.clone()))
        .await
        .err()
        .expect("start refuses without the schema");
    assert!(e.to_string().contains("cutover schema"), "{e}");
    let pool = db.pool().await;
    let made: bool = sqlx::query_scalar("SELECT to_regnamespace('cutover') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!made, "no command but `schema` created the cutover schema");

    // An embedder may opt in.
    let mut config = CutoverConfig::new(&sqlite, db.settings.clone());
    config.migrate = true;
    let c = Cutover::start(config).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_against_an_empty_postgres_summarises_and_says_what_to_run() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = legacy(&dir, 40, 400);
    let (code, out, err) = run(&dir, &sqlite, Some(&db), &["verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().count() < 40,
        "one line per missing row: {} lines",
        out.lines().count()
    );
    assert!(out.contains("run `cutover backfill` first"), "{out}");
    assert!(out.contains("tweets missing 400: "), "{out}");
    assert!(
        out.contains("and 395 more"),
        "at most 5 examples per kind: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_mistakes_are_refused_not_ignored() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = dir.file("x.db");
    let (code, _, err) = run(
        &dir,
        &sqlite,
        Some(&db),
        &["--env-file", "prod.env", "stage", "get"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("prod.env") && err.contains("no such file"),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["--postgres", "http://localhost:5432/app", "stage", "get"])
        .env_remove("DATABASE_URL")
        .current_dir(dir.0.path())
        .output()
        .unwrap();
    let (_, err) = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("postgres://"), "{err}");
}

#[test]
fn a_subcommands_help_lists_its_own_flags_first() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["generate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let own = help.find("--out").expect("--out listed");
    let global = help.find("--sqlite").expect("--sqlite listed");
    assert!(
        own < global,
        "own flags after the connection flags:\n{help}"
    );
    assert!(help.contains("Connection:"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_migration_and_exits_1_when_it_needs_attention() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = legacy(&dir, 20, 200);
    let mut config = CutoverConfig::new(&sqlite, db.settings.clone());
    config.heartbeat = Duration::from_millis(200);
    let c = Cutover::start(config).await.unwrap();

    let status = |args: &'static [&'static str]| {
        let (dir, sqlite) = (&dir, &sqlite);
        let db = &db;
        move || run(dir, sqlite, Some(db), args)
    };
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };

    // The heartbeat makes this process visible.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (code, out, err) = status(&["status", "--json"])();
        assert_eq!(code, 0, "a fresh migration is healthy: {out}{err}");
        let v = json(&out);
        let me = std::process::id() as i64;
        if v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"].as_i64() == Some(me))
            || Instant::now() > deadline
        {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["stage"], "off");
    let p = v["processes"].as_array().unwrap();
    assert!(
        p.iter()
            .any(|p| p["pid"].as_i64() == Some(std::process::id() as i64) && p["stage"] == "off"),
        "{v}"
    );
    assert_eq!(v["next_stage"], "dualwrite");
    let users = v["backfill"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "users")
        .unwrap()
        .clone();
    assert_eq!(users["source_rows"], 20, "{users}");
    assert_eq!(users["completed"], false);
    assert!(v["last_verify"].is_null());

    // dualwrite, backfill, shadow: the gates into live name the verify.
    c.set_stage(Stage::DualWrite, false).await.unwrap();
    let bf = cutover::backfill::BackfillOptions::new(&sqlite, db.settings.clone());
    cutover::backfill::run(bf, std::future::pending())
        .await
        .unwrap();
    c.set_stage(Stage::Shadow, false).await.unwrap();
    let (code, out, _) = status(&["status"])();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stage shadow"), "{out}");
    assert!(out.contains("next stage live: blocked by"), "{out}");
    assert!(out.contains("no verify has run"), "{out}");
    assert!(out.contains("users") && out.contains("done"), "{out}");

    // A divergence found by verify needs attention: exit 1.
    let pool = db.pool().await;
    sqlx::query("UPDATE tweets SET text = 'changed behind the store' WHERE id = (SELECT min(id) FROM tweets)")
        .execute(&pool)
        .await
        .unwrap();
    let vopts = cutover::verify::VerifyOptions::new(&sqlite, db.settings.clone());
    let report = cutover::verify::verify(&vopts).await.unwrap();
    assert!(!report.clean);
    let (code, out, _) = status(&["status"])();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("needs attention") && out.contains("1 divergent rows"),
        "{out}"
    );

    // A process that reports well after the authority moved, still on an
    // older epoch, is behind; a heartbeat from before the move is not.
    sqlx::query("UPDATE cutover.authority SET changed_at = now() - interval '20 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cutover.processes (id, host, pid, version, stage, epoch, seen_at)
         VALUES ('laggard', 'elsewhere', 4242, '0', 'dualwrite', 0, now()),
                ('quiet', 'elsewhere', 4343, '0', 'dualwrite', 0, now() - interval '25 seconds')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, out, _) = status(&["status"])();
    assert!(
        out.contains("process 4242 on elsewhere runs epoch 0"),
        "{out}"
    );
    assert!(
        !out.contains("process 4343 on elsewhere runs epoch"),
        "beat before the move: {out}"
    );
    sqlx::query("DELETE FROM cutover.processes WHERE host = 'elsewhere'")
        .execute(&pool)
        .await
        .unwrap();

    // A clean stop is recorded.
    c.shutdown().await;
    let (_, out, _) = status(&["status", "--json"])();
    let v = json(&out);
    assert!(
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"].as_i64() == Some(std::process::id() as i64) && p["stopped"] == true),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_deferred_in_dualwrite_for_a_missing_parent_is_not_a_failure() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("d.db");
    let s = SqliteStore::open(&path).await.unwrap();
    // A legacy user the backfill has not copied yet.
    s.upsert_profile(&ScrapedProfile {
        id: "old".into(),
        username: "old".into(),
        profile_data: None,
        profile_picture_url: None,
        scraped_at: cutover::now(),
    })
    .await
    .unwrap();
    let p = PgStore::connect(&db.settings).await.unwrap();
    let d = DualStore::forced(s, p, Stage::DualWrite, DualConfig::default())
        .await
        .unwrap();
    // A copy of a users row still waits in the outbox (the replayer or the
    // backfill brings the parent): a child refused for its parent is lag.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO _cutover_outbox (table_name, row_key) VALUES ('users', 'someone')",
            [],
        )
        .unwrap();
    d.save_tweets(
        "old",
        &[NewTweet {
            id: "t1".into(),
            text: "hello".into(),
            created_at: cutover::now(),
            url: None,
            is_reply: None,
            metadata: None,
        }],
    )
    .await
    .unwrap();
    d.settle().await;
    let k = d.counters();
    assert_eq!(k.secondary_deferred, 1, "{k:?}");
    assert_eq!(
        k.secondary_failures, 0,
        "a designed deferral counted as a failure: {k:?}"
    );
    assert_eq!(k.failed_calls, 0);
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, u64, Option<bool>)>>,
    stop: tokio::sync::Notify,
}

impl cutover::progress::Progress for Recorder {
    fn start(&self, table: &str, _unit: &'static str, total: u64) {
        self.events
            .lock()
            .unwrap()
            .push((format!("start {table}"), total, None));
    }
    fn advance(&self, table: &str, n: u64, _note: Option<&str>) {
        self.events
            .lock()
            .unwrap()
            .push((format!("advance {table}"), n, None));
        if table == "tweets" {
            self.stop.notify_one();
        }
    }
    fn finish(&self, table: &str, done: bool) {
        self.events
            .lock()
            .unwrap()
            .push((format!("finish {table}"), 0, Some(done)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backfill_reports_its_progress_where_it_stopped() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = legacy(&dir, 10, 2_000);
    let rec = Arc::new(Recorder::default());
    let mut o = cutover::backfill::BackfillOptions::new(&sqlite, db.settings.clone());
    o.batch_size = 100;
    o.force = true;
    o.progress = Some(rec.clone());
    let r = rec.clone();
    let summary = cutover::backfill::run(o, async move { r.stop.notified().await })
        .await
        .unwrap();
    assert!(summary.interrupted);
    let ev = rec.events.lock().unwrap().clone();
    let total = ev
        .iter()
        .find(|e| e.0 == "start tweets")
        .map(|e| e.1)
        .unwrap();
    let done: u64 = ev
        .iter()
        .filter(|e| e.0 == "advance tweets")
        .map(|e| e.1)
        .sum();
    assert!(done < total, "{done} of {total}");
    assert!(
        ev.iter()
            .any(|e| e.0 == "finish tweets" && e.2 == Some(false)),
        "the stop is reported as not done (a bar stays where it stopped): {ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.0 == "finish users" && e.2 == Some(true)),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_backfill_serve_metrics_where_asked() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = legacy(&dir, 5, 20);
    // An address already taken: the command says it cannot serve there
    // (it tried), before touching anything.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for cmd in ["verify", "backfill"] {
        let (code, out, err) = run(&dir, &sqlite, Some(&db), &[cmd, "--metrics-addr", &addr]);
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        assert!(err.contains("cannot serve metrics"), "{cmd}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_serves_its_divergence_until_scraped() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = legacy(&dir, 5, 20);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // PostgreSQL holds none of the 20 tweets: verify finds them missing and
    // keeps serving that for a scrape after it ends.
    let child = common::cutover_cmd(
        dir.0.path(),
        &sqlite,
        Some(&db),
        &[
            "verify",
            "--metrics-addr",
            &addr.to_string(),
            "--metrics-linger",
            "3",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let _child = KillOnDrop(child);
    let line = "cutover_verify_divergent_rows{table=\"tweets\",kind=\"missing\"} ";
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        let body = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics"))
            .await
            .unwrap()
            .unwrap_or_default();
        if let Some(v) = body
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.parse::<f64>().ok())
        {
            break v;
        }
        assert!(Instant::now() < deadline, "never served: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value, 20.0);
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
