//! Test harness: a real PostgreSQL and real SQLite files for every test.
//!
//! PostgreSQL is `DATABASE_URL` when set; otherwise a throwaway server started
//! once per test binary from the local PostgreSQL binaries (tmp-postgrust).
//! Every test gets its own database, dropped when the test ends, and its own
//! temporary directory for SQLite files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use cutover::internals::Internals;
use cutover::settings::PgSettings;
use sqlx::{Connection, PgConnection};

struct Server {
    admin_url: String,
    // Keeps the throwaway server alive for the whole test binary.
    _guard: Option<tmp_postgrust::synchronous::ProcessGuard>,
}

// The guard is only dropped at process exit; tmp-postgrust kills the server then.
unsafe impl Sync for Server {}
unsafe impl Send for Server {}

static SERVER: OnceLock<Server> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server {
            admin_url: url,
            _guard: None,
        },
        _ => {
            let mut guard = tmp_postgrust::new_default_process().expect(
                "start a throwaway PostgreSQL (set DATABASE_URL to use an existing server)",
            );
            // The server logs to pipes: unread, they fill (every refused
            // statement is logged, and a dual-write test makes thousands)
            // and each backend then blocks writing its next log line,
            // holding its transaction and locks. Read them to the end.
            if let Some(lines) = guard.stderr_reader.take() {
                std::thread::spawn(move || drain(lines));
            }
            if let Some(lines) = guard.stdout_reader.take() {
                std::thread::spawn(move || drain(lines));
            }
            Server {
                admin_url: guard.connection_string(),
                _guard: Some(guard),
            }
        }
    })
}

/// Reads a pipe's lines until it closes (a line that is not UTF-8 is
/// skipped, not an end).
fn drain(lines: impl Iterator<Item = std::io::Result<String>>) {
    for line in lines {
        if let Err(e) = line {
            if e.kind() != std::io::ErrorKind::InvalidData {
                break;
            }
        }
    }
}

/// The URL of the admin database the per-test databases are created from.
pub fn admin_url() -> String {
    server().admin_url.clone()
}

/// A database of its own for one test, dropped at the end of the test.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Settings pointing at it.
    pub settings: PgSettings,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn new() -> TestDb {
        let admin = PgSettings::from_url(&admin_url()).expect("admin URL");
        let name = format!(
            "cutover_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut conn = PgConnection::connect_with(&admin.connect_options())
            .await
            .expect("connect to the admin database");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )))
        .execute(&mut conn)
        .await
        .expect("create the test database");
        conn.close().await.ok();
        let settings = admin.with_database(&name);
        TestDb { name, settings }
    }

    /// Creates a database with the cutover schema applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::new().await;
        let pool = db.pool().await;
        cutover::pg::migrate(&pool).await.expect("migrate");
        pool.close().await;
        db
    }

    /// The URL of the test database, password included (for a command
    /// run as a child process).
    pub fn url(&self) -> String {
        cutover::settings::url_with_database(&admin_url(), &self.name)
    }

    /// A small pool on the test database.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.settings.connect_options())
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = PgSettings::from_url(&admin).unwrap().connect_options();
                if let Ok(mut c) = PgConnection::connect_with(&opts).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            })
        })
        .join();
    }
}

/// A temporary directory for SQLite files, removed at the end of the test.
pub struct TempDir(pub tempfile::TempDir);

impl TempDir {
    /// A new empty directory.
    pub fn new() -> TempDir {
        TempDir(tempfile::tempdir().expect("temporary directory"))
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// Every row of every table on both sides, as images sorted by primary key.
pub async fn snapshot(
    d: &cutover::dual::DualStore,
) -> (
    Vec<(String, Vec<cutover::image::Image>)>,
    Vec<(String, Vec<cutover::image::Image>)>,
) {
    let mut s_all = Vec::new();
    let mut p_all = Vec::new();
    for t in cutover::tables::ALL {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.column_list(),
            t.name,
            t.primary_key
        );
        let mut rows = d
            .sqlite()
            .connection()
            .call(move |c| -> cutover::Result<Vec<cutover::image::Image>> {
                let mut st = c.prepare(&sql)?;
                let mut rows = st.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(cutover::image::sqlite_image(t, r)?);
                }
                Ok(out)
            })
            .await
            .unwrap();
        rows.sort_by_key(|i| cutover::image::Key::of(t, i));
        s_all.push((t.name.to_string(), rows));

        let collate = if t.serial { "" } else { " COLLATE \"C\"" };
        let pg_sql = format!(
            "SELECT {} FROM {} ORDER BY {}{collate}",
            t.column_list(),
            t.name,
            t.primary_key
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(pg_sql))
            .fetch_all(d.pg().pool())
            .await
            .unwrap();
        let mut rows: Vec<cutover::image::Image> = rows
            .iter()
            .map(|r| cutover::image::pg_image(t, r).unwrap())
            .collect();
        rows.sort_by_key(|i| cutover::image::Key::of(t, i));
        p_all.push((t.name.to_string(), rows));
    }
    (s_all, p_all)
}

/// `cutover --sqlite FILE [--postgres URL] ARGS…` run from `dir`, with the
/// test's environment kept out (no `DATABASE_URL`, warn-level logs, no
/// stdin).
pub fn cutover_cmd(
    dir: &std::path::Path,
    sqlite: &std::path::Path,
    db: Option<&TestDb>,
    args: &[&str],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.current_dir(dir).arg("--sqlite").arg(sqlite);
    if let Some(db) = db {
        cmd.arg("--postgres").arg(db.url());
    }
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    cmd
}

/// A finished command's stdout and stderr as text.
pub fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows in PostgreSQL's users and tweets, and checkpoints written.
pub async fn copied(db: &TestDb) -> (i64, i64, i64) {
    let pool = db.pool().await;
    let n = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tweets),
                (SELECT count(*) FROM cutover.checkpoints)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// The body of `GET path` on `addr`, over HTTP/1.0 (no chunked bodies).
#[allow(dead_code)]
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// A generated legacy file at `path`.
#[allow(dead_code)]
pub fn generated(path: &std::path::Path, users: u64, tweets: u64, dirty: f64, seed: u64) {
    cutover::generate::generate(
        path,
        &cutover::generate::GenerateOptions {
            users,
            tweets,
            dirty,
            seed,
        },
    )
    .expect("generate a legacy file");
}

/// Verify of the legacy file at `path` against `db`, once (no settle: no
/// application is writing).
pub async fn verify_once(path: &std::path::Path, db: &TestDb) -> cutover::verify::VerifyReport {
    let mut vo = cutover::verify::VerifyOptions::new(path, db.settings.clone());
    vo.settle = std::time::Duration::ZERO;
    cutover::verify::verify(&vo).await.unwrap()
}
