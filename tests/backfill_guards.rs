//! The backfill's guards (docs/DESIGN.md §4), on real SQLite files and a real
//! PostgreSQL: it never runs without SQLite's write lock (a legacy file this
//! user cannot write is refused, naming the file and the permission), and it
//! runs only in `dualwrite`/`shadow` unless forced (and then it says so).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copied, text, TempDir, TestDb};
use cutover::backfill::{self, BackfillOptions};
use cutover::stage::{self, Stage};

/// A clean generated legacy file, in WAL mode as the application keeps it.
fn legacy_file(dir: &TempDir) -> PathBuf {
    let path = dir.file("legacy.db");
    cutover::generate::generate(
        &path,
        &cutover::generate::GenerateOptions {
            users: 20,
            tweets: 200,
            dirty: 0.0,
            seed: 11,
        },
    )
    .unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    path
}

fn options(path: &Path, db: &TestDb) -> BackfillOptions {
    let mut o = BackfillOptions::new(path, db.settings.clone());
    o.batch_size = 50;

    o
}

/// Moves the persisted stage (gates overridden: the test owns the setup).
async fn set_stage(db: &TestDb, to: Stage) {
    let pool = db.pool().await;
    stage::set(
        &pool,
        &stage::Change {
            to,
            force: true,
            by: "backfill_guards".into(),
            extra_pending: 0,
        },
    )
    .await
    .unwrap();
    pool.close().await;
}

fn sqlite_count(path: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn cutover_backfill(dir: &Path, sqlite: &Path, db: &TestDb, extra: &[&str]) -> Command {
    common::cutover_cmd(dir, sqlite, Some(db), &[&["backfill"], extra].concat())
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Finding 8: a connection that cannot write the legacy file holds no write
/// lock (`BEGIN IMMEDIATE` succeeds on it and takes none), so the backfill
/// would copy while the application writes. It refuses instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_file_this_user_cannot_write_is_refused_not_copied_unlocked() {
    let dir = TempDir::new();
    let path = legacy_file(&dir);
    let db = TestDb::migrated().await;
    set_stage(&db, Stage::DualWrite).await;
    // The application has the file open, as it would while the backfill runs.
    let app = rusqlite::Connection::open(&path).unwrap();
    let _: i64 = app
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();

    // 1. The library, given a connection SQLite opens read-only (a `mode=ro`
    //    URI: this works whoever runs the test, root included).
    let uri = format!("file:{}?mode=ro", path.display());
    let err = backfill::run(options(Path::new(&uri), &db), std::future::pending())
        .await
        .expect_err("a read-only connection cannot hold the write lock: the backfill must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("read-only")
            && msg.contains("write permission")
            && msg.contains("write lock"),
        "{msg}"
    );
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");

    // 2. The CLI run by a user who cannot write the file (nor its directory).
    chmod(&path, 0o444);
    chmod(dir.0.path(), 0o555);
    let mut cmd = cutover_backfill(Path::new("/"), &path, &db, &[]);
    // Root ignores file modes: when this process can still write the file,
    // the CLI runs as `nobody`, for whom they hold.
    let privileged = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
    if privileged {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    chmod(dir.0.path(), 0o755);
    chmod(&path, 0o644);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&path.display().to_string())
            && stderr.contains("read-only")
            && stderr.contains("write permission"),
        "{stderr}"
    );
    assert_eq!(copied(&db).await, (0, 0, 0), "nothing copied");

    // 3. With the permission back, the same run copies everything.
    let s = backfill::run(options(&path, &db), std::future::pending())
        .await
        .unwrap();
    assert!(s.reconciled(), "{s:#?}");
    let (users, tweets, _) = copied(&db).await;
    assert_eq!(
        (users, tweets),
        (sqlite_count(&path, "users"), sqlite_count(&path, "tweets"))
    );
    drop(app);
}

/// Finding 9 (the backfill's part): outside `dualwrite`/`shadow` the
/// backfill refuses (in `off` nothing copies the writes made meanwhile; from
/// `live` on it could re-insert rows PostgreSQL deleted); `--force`
/// overrides and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_runs_only_in_dualwrite_or_shadow_unless_forced() {
    let dir = TempDir::new();
    let path = legacy_file(&dir);
    let db = TestDb::migrated().await;

    // The library refuses in every stage but dualwrite and shadow.
    for st in [Stage::Off, Stage::Live, Stage::Rampdown, Stage::Complete] {
        set_stage(&db, st).await;
        let err = backfill::run(options(&path, &db), std::future::pending())
            .await
            .expect_err(&format!("the backfill must refuse in {st}"));
        let msg = err.to_string();
        assert!(
            msg.contains("dualwrite or shadow")
                && msg.contains(&format!("the stage is `{st}`"))
                && msg.contains("force"),
            "{st}: {msg}"
        );
        assert_eq!(copied(&db).await, (0, 0, 0), "{st}: nothing copied");
    }
    // The stage `off` names what would be lost and the fix.
    set_stage(&db, Stage::Off).await;
    let err = backfill::run(options(&path, &db), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cutover stage set dualwrite") && err.contains("miss"),
        "{err}"
    );

    // The CLI refuses the same way (exit 2), and nothing is copied.
    let out = cutover_backfill(dir.0.path(), &path, &db, &[])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the stage is `off`") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(copied(&db).await, (0, 0, 0));

    // --force overrides, and says so on stderr.
    let out = cutover_backfill(dir.0.path(), &path, &db, &["--force"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("--force") && stderr.contains("`off`"),
        "{stderr}"
    );
    assert!(stdout.contains("reconciliation: ok"), "{stdout}");
    let (users, tweets, _) = copied(&db).await;
    assert_eq!(
        (users, tweets),
        (sqlite_count(&path, "users"), sqlite_count(&path, "tweets"))
    );

    // In dualwrite and shadow it runs: a row the application wrote since is picked up.
    for (st, id) in [(Stage::DualWrite, "late-1"), (Stage::Shadow, "late-2")] {
        set_stage(&db, st).await;
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute("INSERT INTO users (id, username) VALUES (?1, ?1)", [id])
            .unwrap();
        drop(c);
        let s = backfill::run(options(&path, &db), std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{st}: {e}"));
        assert!(s.reconciled(), "{st}: {s:#?}");
        let users = s.tables.iter().find(|t| t.table == "users").unwrap();
        assert_eq!(users.copied, 1, "{st}");
    }
}
