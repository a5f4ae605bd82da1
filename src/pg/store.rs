//! `PgStore`: the application's queries on PostgreSQL through a sqlx pool.
//!
//! Every write is one transaction. Rules the data must follow (parents exist,
//! usernames and codes are unique, job states) are checked explicitly inside
//! the transaction so the errors name table, key and column exactly as the
//! SQLite store reports them; the schema's constraints stay as the backstop
//! for races between concurrent transactions, and their violations are mapped
//! to the same errors by constraint name.
//!
//! Text is ordered with `COLLATE "C"` (bytewise, like SQLite's BINARY), and
//! "now" is taken in Rust (`model::now`), never from the database clock.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row, Transaction};

use super::error::{violated_constraint, PoolLimits};
use crate::changes::{self, Change};
use crate::convert::RejectReason;
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::model::*;
use crate::settings::PgSettings;
use crate::store::Store;
use crate::tables;

// Column lists as macros so that `concat!` can build `&'static str` queries
// (sqlx only accepts non-static SQL wrapped in `AssertSqlSafe`).
macro_rules! user_cols {
    () => {
        "id, username, profile_data, profile_picture_url, last_scraped, created_at"
    };
}
macro_rules! tweet_cols {
    () => {
        "id, user_id, text, created_at, url, is_reply, metadata, created_in_db"
    };
}
macro_rules! analysis_cols {
    () => {
        "id, user_id, traits, interests, communication_style, analyzed_at"
    };
}
macro_rules! progress_cols {
    () => {
        "user_id, current_command_index, completed_commands, command_responses, last_updated"
    };
}
macro_rules! completion_cols {
    () => {
        "user_id, completed_at, completion_data"
    };
}
macro_rules! code_cols {
    () => {
        "code, owner_user_id, usage_count, created_at"
    };
}
macro_rules! job_cols {
    () => {
        "job_id, user_id, status, priority, total_chunks, processed_chunks, created_at, \
         started_at, completed_at, error"
    };
}
macro_rules! chunk_cols {
    () => {
        "chunk_id, job_id, chunk_index, tweet_count, status, started_at, completed_at, \
         result, error"
    };
}

/// PostgreSQL as a `Store`.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    limits: PoolLimits,
    outbox: Arc<AtomicBool>,
}

impl PgStore {
    /// Connects a pool with the settings' limits.
    ///
    /// When no connection can be opened within the acquire timeout, the error
    /// says why (refused, authentication, unknown database) and names the
    /// server by its redacted URL; it never contains the password.
    pub async fn connect(settings: &PgSettings) -> Result<Self> {
        preflight(settings).await?;
        let p = &settings.pool;
        let pool = PgPoolOptions::new()
            .max_connections(p.max_connections)
            .min_connections(p.min_connections)
            .acquire_timeout(p.acquire_timeout)
            .idle_timeout(p.idle_timeout)
            .connect_with(settings.connect_options())
            .await;
        let limits = PoolLimits {
            acquire_timeout: p.acquire_timeout,
            max_connections: p.max_connections,
        };
        match pool {
            Ok(pool) => Ok(Self {
                pool,
                limits,
                outbox: Arc::new(AtomicBool::new(false)),
            }),
            Err(e) => Err(connect_error(settings, e).await),
        }
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        let o = pool.options();
        let limits = PoolLimits {
            acquire_timeout: o.get_acquire_timeout(),
            max_connections: o.get_max_connections(),
        };
        Self {
            pool,
            limits,
            outbox: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Switches outbox recording on or off: when on, every write records the
    /// keys it changed in `cutover.outbox` inside its own transaction (the
    /// capture triggers of migrations 0004 and 0005 do the noting).
    pub fn set_outbox(&self, on: bool) {
        self.outbox.store(on, AtomicOrdering::SeqCst);
    }

    /// Whether writes record their changes in the outbox.
    pub fn outbox_enabled(&self) -> bool {
        self.outbox.load(AtomicOrdering::SeqCst)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(|e| self.limits.map(e))
    }

    /// A pooled connection taken ahead of a write, for `with_ready`: None
    /// when the pool gives none within its acquire timeout (busy, or
    /// PostgreSQL unreachable); the write then asks again itself, and the
    /// error it gets decides (a busy pool fails the call, an unreachable
    /// PostgreSQL leads to the fallback decision).
    pub(crate) async fn ready(&self) -> Option<PoolConnection<Postgres>> {
        self.conn().await.ok()
    }

    async fn begin(&self) -> Result<WriteTx> {
        let begun = std::time::Instant::now();
        let ready = READY.try_with(|r| r.borrow_mut().take()).ok().flatten();
        let mut conn = match ready {
            Some(c) => c,
            None => self.conn().await?,
        };
        // One round trip: the capture switch travels with the BEGIN.
        let begin = if self.outbox_enabled() {
            "BEGIN; SET LOCAL cutover.capture = 'on'"
        } else {
            "BEGIN"
        };
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        Ok(WriteTx {
            conn: Some(conn),
            begun,
        })
    }

    /// A read-only transaction (no change capture).
    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| self.limits.map(e))
    }

    /// Commits; when the outbox is on, the same round trip first reads the
    /// capture triggers' notes of the rows this transaction changed (keys,
    /// outbox ids, images) and reports them (`noted_changes`).
    async fn commit(&self, mut tx: WriteTx) -> Result<()> {
        crate::failpoint::hit("pg.before_commit");
        changes::commit_sent();
        if !self.outbox_enabled() {
            sqlx::raw_sql("COMMIT").execute(&mut *tx).await?;
            tx.committed();
            return Ok(());
        }
        // The committed images travel with the keys, so the secondary apply
        // does not depend on reaching PostgreSQL again after the commit. The
        // capture triggers note each change in `cutover.changed` (migration
        // 0006); reading it goes with the COMMIT as one simple-protocol
        // message. The images were taken during the transaction: their age
        // counts from its BEGIN.
        let read_at = tx.begun;
        let rows = sqlx::raw_sql(
            "SELECT current_setting('cutover.changed', true), \
             current_setting('cutover.overflow', true); COMMIT",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.committed();
        crate::failpoint::pause("pg.after_commit").await;
        if crate::failpoint::cut("pg.after_commit") {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection cut after COMMIT (failpoint)",
            ))
            .into());
        }
        // Committed: from here on nothing fails the caller. What cannot be
        // read stays in the outbox for the replayer.
        let text = |i: usize| -> String {
            rows.first()
                .and_then(|r| r.try_get::<Option<String>, _>(i).ok().flatten())
                .unwrap_or_default()
        };
        let mut reported = noted_changes(&text(0), read_at);
        if let Ok(txid) = text(1).parse::<i64>() {
            // Past the notes' limit: the outbox lists every key the
            // transaction changed, with its last entry; a noted image is
            // carried only when it is that last entry.
            let listed: std::result::Result<Vec<(i64, String, String)>, _> = sqlx::query_as(
                "SELECT max(id), table_name, row_key FROM cutover.outbox WHERE txid = $1 \
                 GROUP BY table_name, row_key ORDER BY min(id)",
            )
            .bind(txid)
            .fetch_all(&self.pool)
            .await;
            let mut noted: std::collections::HashMap<Change, changes::Carried> = reported
                .drain(..)
                .filter_map(|(c, carried)| carried.map(|cv| (c, cv)))
                .collect();
            for (id, t, k) in listed.unwrap_or_default() {
                let Some(table) = tables::by_name(&t) else {
                    continue;
                };
                let c = Change::new(table.name, k);
                let carried = noted.remove(&c).filter(|cv| cv.outbox_id == id);
                reported.push((c, carried));
            }
        }
        changes::report_carried(reported);
        Ok(())
    }
}

tokio::task_local! {
    static READY: std::cell::RefCell<Option<PoolConnection<Postgres>>>;
}

/// Runs `f` with `conn` as the connection its first write transaction
/// uses: the dual store takes it before the order lock, so a write's wait
/// for the pool does not hold that lock (a flip would wait for it too).
pub(crate) async fn with_ready<F: std::future::Future>(
    conn: Option<PoolConnection<Postgres>>,
    f: F,
) -> F::Output {
    READY.scope(std::cell::RefCell::new(conn), f).await
}

/// The changes a transaction's capture triggers noted (migration 0006), one
/// JSON array per line: outbox id, table, key, and the row as `to_jsonb`
/// rendered it (null when deleted). Each key once, in the order first
/// changed, with its last entry: the highest id and the row as committed. A
/// row whose rendering does not decode is reported without its image: the
/// apply reads it back. A line that does not read is left to the replayer
/// (its outbox entry stays until applied).
fn noted_changes(
    noted: &str,
    read_at: std::time::Instant,
) -> Vec<(Change, Option<changes::Carried>)> {
    let mut order: Vec<Change> = Vec::new();
    let mut last: std::collections::HashMap<Change, (i64, Value, Vec<String>)> =
        std::collections::HashMap::new();
    for line in noted.lines().filter(|l| !l.is_empty()) {
        // [id, table, key, image, the JSON columns holding SQL NULL]
        let parsed = serde_json::from_str::<(i64, String, String, Value, Vec<String>)>(line)
            .or_else(|_| {
                serde_json::from_str::<(i64, String, String, Value)>(line)
                    .map(|(a, b, c, d)| (a, b, c, d, Vec::new()))
            });
        let Ok((id, t, k, img, sql_nulls)) = parsed else {
            tracing::warn!(note = line, "unreadable change note; left to the replayer");
            continue;
        };
        let Some(table) = tables::by_name(&t) else {
            continue;
        };
        let c = Change::new(table.name, k);
        match last.get_mut(&c) {
            Some(e) => {
                if id > e.0 {
                    *e = (id, img, sql_nulls);
                }
            }
            None => {
                order.push(c.clone());
                last.insert(c, (id, img, sql_nulls));
            }
        }
    }
    order
        .into_iter()
        .map(|c| {
            let (id, img, sql_nulls) = last.remove(&c).expect("noted above");
            let table = tables::by_name(c.table).expect("checked above");
            let image = match img {
                Value::Null => Some(None),
                json => crate::image::image_from_jsonb(table, &json, &sql_nulls).map(Some),
            };
            let carried = image.map(|image| changes::Carried {
                outbox_id: id,
                image,
                read_at,
            });
            (c, carried)
        })
        .collect()
}

/// A write transaction on a pooled connection, begun and ended by plain
/// statements (so the commit can read the capture notes in its round
/// trip). Dropped before it commits, it rolls back on a task of its own
/// before the connection returns to the pool; a connection that could not be
/// rolled back is closed.
struct WriteTx {
    conn: Option<PoolConnection<Postgres>>,
    begun: std::time::Instant,
}

impl WriteTx {
    /// The COMMIT went through: the connection returns to the pool as is.
    fn committed(&mut self) {
        self.conn.take();
    }
}

impl std::ops::Deref for WriteTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("transaction still open")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("transaction still open")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut pending = Unfinished(Some(conn));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(c) = pending.0.as_mut() {
                    if sqlx::raw_sql("ROLLBACK").execute(&mut **c).await.is_ok() {
                        // Rolled back: the connection returns to the pool.
                        pending.0.take();
                    }
                }
            });
        }
    }
}

/// A connection whose transaction may still be open: closed when dropped,
/// never returned to the pool as it is (also when the task meant to roll it
/// back never runs).
struct Unfinished(Option<PoolConnection<Postgres>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.close_on_drop();
        }
    }
}

/// How long a first connection may take before the server is reported
/// as not answering.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One direct connection to the server, within `CONNECT_TIMEOUT`: Ok when
/// it answers, else an error that says what failed (refused, unknown host,
/// authentication, missing database — with the fix) and names the server
/// by its redacted URL. Commands run it before they open their pools, so a
/// server that is not there is reported at once, not after a pool's
/// acquire timeout.
pub async fn preflight(settings: &PgSettings) -> Result<()> {
    let direct = tokio::time::timeout(
        CONNECT_TIMEOUT,
        PgConnection::connect_with(&settings.connect_options()),
    )
    .await;
    let cause = match direct {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            return Ok(());
        }
        Ok(Err(e)) => explain(settings, &e),
        Err(_) => format!(
            "no answer within {} s (a firewall, or the wrong host or port?)",
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    Err(Error::Database {
        backend: Backend::Postgres,
        kind: DbErrorKind::Unavailable,
        message: format!("cannot connect to {}: {cause}", settings.redacted()),
    })
}

/// What a failed connection attempt means, in the operator's terms.
fn explain(settings: &PgSettings, e: &sqlx::Error) -> String {
    let o = settings.connect_options();
    let (host, port) = (o.get_host().to_string(), o.get_port());
    let user = o.get_username().to_string();
    let database = o.get_database().unwrap_or(&user).to_string();
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused by {host}:{port}: is PostgreSQL running there and listening on TCP?"
        ),
        sqlx::Error::Io(io)
            if io.to_string().contains("lookup")
                || io.to_string().contains("resolve")
                || io.to_string().contains("Name or service not known") =>
        {
            format!("unknown host {host:?}: the name does not resolve")
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => format!(
                "authentication failed for user {user:?}: check the password (in the URL or PGPASSWORD) and pg_hba.conf"
            ),
            Some("3D000") => format!(
                "database {database:?} does not exist; create it with `createdb -h {host} -p {port} -U {user} {database}` (or CREATE DATABASE \"{database}\")"
            ),
            _ => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

/// Explains a failed first connection of a pool. A refused connection
/// surfaces from the pool as `PoolTimedOut` (sqlx retries until the acquire
/// timeout), which would read as "pool exhausted"; one direct attempt
/// recovers the cause.
async fn connect_error(settings: &PgSettings, e: sqlx::Error) -> Error {
    let detail = match e {
        sqlx::Error::PoolTimedOut => match preflight(settings).await {
            Err(e) => return e,
            Ok(()) => "no connection was established within the acquire timeout".to_string(),
        },
        e => explain(settings, &e),
    };
    Error::Database {
        backend: Backend::Postgres,
        kind: DbErrorKind::Unavailable,
        message: format!("cannot connect to {}: {detail}", settings.redacted()),
    }
}

// ----- row decoding ------------------------------------------------------------

fn user(r: &PgRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        profile_data: r.try_get("profile_data")?,
        profile_picture_url: r.try_get("profile_picture_url")?,
        last_scraped: r.try_get("last_scraped")?,
        created_at: r.try_get("created_at")?,
    })
}

fn tweet(r: &PgRow) -> Result<Tweet> {
    Ok(Tweet {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        text: r.try_get("text")?,
        created_at: r.try_get("created_at")?,
        url: r.try_get("url")?,
        is_reply: r.try_get("is_reply")?,
        metadata: r.try_get("metadata")?,
        created_in_db: r.try_get("created_in_db")?,
    })
}

fn analysis(r: &PgRow) -> Result<PersonalityAnalysis> {
    Ok(PersonalityAnalysis {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        traits: r.try_get("traits")?,
        interests: r.try_get("interests")?,
        communication_style: r.try_get("communication_style")?,
        analyzed_at: r.try_get("analyzed_at")?,
    })
}

fn progress(r: &PgRow) -> Result<FunnelProgress> {
    Ok(FunnelProgress {
        user_id: r.try_get("user_id")?,
        current_command_index: r.try_get("current_command_index")?,
        completed_commands: r.try_get("completed_commands")?,
        command_responses: r.try_get("command_responses")?,
        last_updated: r.try_get("last_updated")?,
    })
}

fn completion(r: &PgRow) -> Result<FunnelCompletion> {
    Ok(FunnelCompletion {
        user_id: r.try_get("user_id")?,
        completed_at: r.try_get("completed_at")?,
        completion_data: r.try_get("completion_data")?,
    })
}

fn code(r: &PgRow) -> Result<ReferralCode> {
    Ok(ReferralCode {
        code: r.try_get("code")?,
        owner_user_id: r.try_get("owner_user_id")?,
        usage_count: r.try_get("usage_count")?,
        created_at: r.try_get("created_at")?,
    })
}

fn referral(r: &PgRow) -> Result<Referral> {
    Ok(Referral {
        id: r.try_get("id")?,
        referral_code: r.try_get("referral_code")?,
        referrer_user_id: r.try_get("referrer_user_id")?,
        referred_user_id: r.try_get("referred_user_id")?,
        used_at: r.try_get("used_at")?,
    })
}

fn usage(r: &PgRow) -> Result<ReferralUsage> {
    Ok(ReferralUsage {
        id: r.try_get("id")?,
        referral_code: r.try_get("referral_code")?,
        used_by_user_id: r.try_get("used_by_user_id")?,
        used_at: r.try_get("used_at")?,
    })
}

/// The CHECK constraint keeps `status` in the set; a value outside it means
/// the constraint was dropped, which is reported rather than guessed around.
fn status(r: &PgRow, table: &'static str, key: String) -> Result<JobStatus> {
    let s: String = r.try_get("status")?;
    JobStatus::parse(&s).ok_or_else(|| Error::InvalidValue {
        table,
        key,
        column: "status",
        reason: RejectReason::CheckViolation,
        detail: format!("{s:?} is not one of pending, processing, completed, failed"),
    })
}

fn job(r: &PgRow) -> Result<Job> {
    let job_id: i32 = r.try_get("job_id")?;
    Ok(Job {
        job_id,
        user_id: r.try_get("user_id")?,
        status: status(r, "analysis_queue", job_id.to_string())?,
        priority: r.try_get("priority")?,
        total_chunks: r.try_get("total_chunks")?,
        processed_chunks: r.try_get("processed_chunks")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        error: r.try_get("error")?,
    })
}

fn chunk(r: &PgRow) -> Result<Chunk> {
    let chunk_id: i32 = r.try_get("chunk_id")?;
    Ok(Chunk {
        chunk_id,
        job_id: r.try_get("job_id")?,
        chunk_index: r.try_get("chunk_index")?,
        tweet_count: r.try_get("tweet_count")?,
        status: status(r, "analysis_chunks", chunk_id.to_string())?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        result: r.try_get("result")?,
        error: r.try_get("error")?,
    })
}

fn all<T>(rows: &[PgRow], f: fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

// ----- checks inside a transaction ---------------------------------------------

/// Whether user `id` exists. `FOR KEY SHARE` keeps a concurrent `delete_user`
/// from removing it before this transaction commits, as the FK check would.
async fn user_exists(c: &mut PgConnection, id: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE")
            .bind(id)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

/// `MissingParent` for a row of `table` whose user column points nowhere.
fn missing_user(table: &'static str, key: &str, column: &'static str, user: &str) -> Error {
    Error::MissingParent {
        table,
        key: key.to_string(),
        column,
        parent_table: "users",
        parent_key: user.to_string(),
    }
}

/// Maps a foreign-key violation on `fk` (a race with `delete_user`) to
/// `MissingParent`; any other error converts as usual.
fn fk_backstop(e: sqlx::Error, fk: &str, missing: impl FnOnce() -> Error) -> Error {
    match violated_constraint(&e) {
        Some((DbErrorKind::ForeignKeyViolation, c)) if c == fk => missing(),
        _ => e.into(),
    }
}

/// The queue's two tables, for the shared state-transition check.
#[derive(Clone, Copy)]
enum Queue {
    Jobs,
    Chunks,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Jobs => "analysis_queue",
            Queue::Chunks => "analysis_chunks",
        }
    }
}

/// Locks a job or chunk row and checks that its status allows `action`.
async fn lock_status(
    c: &mut PgConnection,
    q: Queue,
    id: i32,
    allowed: &[JobStatus],
    action: &'static str,
) -> Result<()> {
    let sql = match q {
        Queue::Jobs => "SELECT status FROM analysis_queue WHERE job_id = $1 FOR UPDATE",
        Queue::Chunks => "SELECT status FROM analysis_chunks WHERE chunk_id = $1 FOR UPDATE",
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(c).await?;
    let Some(row) = row else {
        return Err(Error::NotFound {
            table: q.table(),
            key: id.to_string(),
        });
    };
    let st: String = row.try_get("status")?;
    if JobStatus::parse(&st).is_some_and(|s| allowed.contains(&s)) {
        Ok(())
    } else {
        Err(Error::InvalidState {
            table: q.table(),
            key: id.to_string(),
            status: st,
            action,
        })
    }
}

/// The words of a search query: runs of alphanumeric characters.
fn search_words(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

fn limit(n: u32) -> i64 {
    i64::from(n)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    // ----- users ---------------------------------------------------------------

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        let now = now();
        let mut tx = self.begin().await?;
        let duplicate = || Error::Duplicate {
            table: "users",
            column: "username",
            key: profile.username.clone(),
        };
        let taken = sqlx::query("SELECT 1 FROM users WHERE username = $1 AND id <> $2")
            .bind(&profile.username)
            .bind(&profile.id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(duplicate());
        }
        let row = sqlx::query(concat!(
            "INSERT INTO users (id, username, profile_data, profile_picture_url, last_scraped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
             profile_data = EXCLUDED.profile_data, \
             profile_picture_url = EXCLUDED.profile_picture_url, \
             last_scraped = EXCLUDED.last_scraped \
             RETURNING ",
            user_cols!()
        ))
        .bind(&profile.id)
        .bind(&profile.username)
        .bind(&profile.profile_data)
        .bind(&profile.profile_picture_url)
        .bind(profile.scraped_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match violated_constraint(&e) {
            // Another transaction took the username after our check.
            Some((DbErrorKind::UniqueViolation, "users_username_key")) => duplicate(),
            _ => e.into(),
        })?;
        let u = user(&row)?;
        self.commit(tx).await?;
        Ok(u)
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(user).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(user).transpose()
    }

    async fn users_scraped_before(&self, before: Timestamp, limit_n: u32) -> Result<Vec<User>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE last_scraped IS NULL OR last_scraped < $1 \
             ORDER BY last_scraped ASC NULLS FIRST, id COLLATE \"C\" ASC LIMIT $2"
        ))
        .bind(before)
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        all(&rows, user)
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        // FOR UPDATE: concurrent writes that reference the user (their FK
        // checks take KEY SHARE) wait for this delete and then fail cleanly.
        let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        // Usage-log rows of other owners' codes disappear with the user; keep
        // usage_count equal to the number of usage-log rows of each code.
        sqlx::query(
            "UPDATE referral_codes c \
             SET usage_count = (COALESCE(c.usage_count, 0) - d.n)::integer \
             FROM (SELECT referral_code, count(*) AS n FROM referral_usage_log \
                   WHERE used_by_user_id = $1 GROUP BY referral_code) d \
             WHERE c.code = d.referral_code AND c.owner_user_id <> $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Children before parents, so no statement trips a foreign key.
        const DELETES: [&str; 10] = [
            "DELETE FROM analysis_chunks WHERE job_id IN \
             (SELECT job_id FROM analysis_queue WHERE user_id = $1)",
            "DELETE FROM analysis_queue WHERE user_id = $1",
            "DELETE FROM referral_usage_log WHERE used_by_user_id = $1 OR referral_code IN \
             (SELECT code FROM referral_codes WHERE owner_user_id = $1)",
            "DELETE FROM referral_tracking WHERE referrer_user_id = $1 OR referred_user_id = $1",
            "DELETE FROM referral_codes WHERE owner_user_id = $1",
            "DELETE FROM funnel_progress WHERE user_id = $1",
            "DELETE FROM funnel_completion WHERE user_id = $1",
            "DELETE FROM personality_analysis WHERE user_id = $1",
            "DELETE FROM tweets WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ];
        for sql in DELETES {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    // ----- tweets --------------------------------------------------------------

    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        let Some(first) = tweets.first() else {
            return Ok(0);
        };
        let now = now();
        let missing = || missing_user("tweets", &first.id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        // One statement cannot update the same row twice, so keep only the
        // last occurrence of each id (later duplicates win).
        let mut last = std::collections::HashMap::new();
        for (i, t) in tweets.iter().enumerate() {
            last.insert(t.id.as_str(), i);
        }
        let kept: Vec<&NewTweet> = tweets
            .iter()
            .enumerate()
            .filter(|(i, t)| last[t.id.as_str()] == *i)
            .map(|(_, t)| t)
            .collect();
        let ids: Vec<&str> = kept.iter().map(|t| t.id.as_str()).collect();
        let texts: Vec<&str> = kept.iter().map(|t| t.text.as_str()).collect();
        let created: Vec<Timestamp> = kept.iter().map(|t| t.created_at).collect();
        let urls: Vec<Option<&str>> = kept.iter().map(|t| t.url.as_deref()).collect();
        let replies: Vec<Option<bool>> = kept.iter().map(|t| t.is_reply).collect();
        let metas: Vec<Option<Value>> = kept.iter().map(|t| t.metadata.clone()).collect();
        sqlx::query(
            "INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata, created_in_db) \
             SELECT t.id, $1, t.text, t.created_at, t.url, t.is_reply, t.metadata, $8 \
             FROM UNNEST($2::varchar[], $3::text[], $4::timestamptz[], $5::text[], $6::boolean[], $7::jsonb[]) \
                  AS t(id, text, created_at, url, is_reply, metadata) \
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, text = EXCLUDED.text, \
             created_at = EXCLUDED.created_at, url = EXCLUDED.url, is_reply = EXCLUDED.is_reply, \
             metadata = EXCLUDED.metadata",
        )
        .bind(user_id)
        .bind(&ids)
        .bind(&texts)
        .bind(&created)
        .bind(&urls)
        .bind(&replies)
        .bind(&metas)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "tweets_user_id_fkey", missing))?;
        self.commit(tx).await?;
        Ok(tweets.len() as u64)
    }

    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            tweet_cols!(),
            " FROM tweets WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(tweet).transpose()
    }

    async fn timeline(
        &self,
        user_id: &str,
        limit_n: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        if limit_n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let rows = match cursor {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    tweet_cols!(),
                    " FROM tweets WHERE user_id = $1 \
                     ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit(limit_n))
                .fetch_all(&mut *c)
                .await?
            }
            Some(cur) => {
                sqlx::query(concat!(
                    "SELECT ",
                    tweet_cols!(),
                    " FROM tweets WHERE user_id = $1 \
                     AND (created_at < $2 OR (created_at = $2 AND id COLLATE \"C\" < $3)) \
                     ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(cur.created_at)
                .bind(&cur.id)
                .bind(limit(limit_n))
                .fetch_all(&mut *c)
                .await?
            }
        };
        all(&rows, tweet)
    }

    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        let mut c = self.conn().await?;
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM tweets WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *c)
                .await?,
        )
    }

    async fn search_tweets(&self, query: &str, limit_n: u32) -> Result<Vec<Tweet>> {
        let words = search_words(query);
        if words.is_empty() || limit_n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        // The expression is written exactly as idx_tweets_text has it, so the
        // planner can use the GIN index.
        let rows = sqlx::query(concat!(
            "SELECT ",
            tweet_cols!(),
            " FROM tweets WHERE to_tsvector('english', text) @@ plainto_tsquery('english', $1) \
             ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $2"
        ))
        .bind(words.join(" "))
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        all(&rows, tweet)
    }

    // ----- personality analysis ------------------------------------------------

    async fn save_analysis(&self, a: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        let analyzed_at = a.analyzed_at.unwrap_or_else(now);
        let missing = || missing_user("personality_analysis", &a.id, "user_id", &a.user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, &a.user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(concat!(
            "INSERT INTO personality_analysis (id, user_id, traits, interests, communication_style, analyzed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, traits = EXCLUDED.traits, \
             interests = EXCLUDED.interests, communication_style = EXCLUDED.communication_style, \
             analyzed_at = EXCLUDED.analyzed_at RETURNING ",
            analysis_cols!()
        ))
        .bind(&a.id)
        .bind(&a.user_id)
        .bind(&a.traits)
        .bind(&a.interests)
        .bind(&a.communication_style)
        .bind(analyzed_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "personality_analysis_user_id_fkey", missing))?;
        let out = analysis(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            analysis_cols!(),
            " FROM personality_analysis WHERE user_id = $1 \
             ORDER BY analyzed_at DESC NULLS LAST, id COLLATE \"C\" DESC LIMIT 1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(analysis).transpose()
    }

    // ----- funnel --------------------------------------------------------------

    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            progress_cols!(),
            " FROM funnel_progress WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(progress).transpose()
    }

    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        let now = now();
        let missing = || missing_user("funnel_progress", user_id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        // Create-if-missing and update as two statements: ON CONFLICT DO
        // NOTHING makes the creation race-free, and the UPDATE then takes the
        // row lock so concurrent commands for one user apply one after the other.
        sqlx::query(
            "INSERT INTO funnel_progress (user_id, current_command_index, completed_commands, \
             command_responses, last_updated) VALUES ($1, 0, '[]'::jsonb, '{}'::jsonb, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "funnel_progress_user_id_fkey", missing))?;
        let row = sqlx::query(concat!(
            "UPDATE funnel_progress SET \
             current_command_index = COALESCE(current_command_index, 0) + 1, \
             completed_commands = (CASE WHEN jsonb_typeof(completed_commands) = 'array' \
                 THEN completed_commands ELSE '[]'::jsonb END) || jsonb_build_array($2::text), \
             command_responses = (CASE WHEN jsonb_typeof(command_responses) = 'object' \
                 THEN command_responses ELSE '{}'::jsonb END) || jsonb_build_object($2::text, $3::jsonb), \
             last_updated = $4 \
             WHERE user_id = $1 RETURNING ",
            progress_cols!()
        ))
        .bind(user_id)
        .bind(command)
        .bind(response)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = progress(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        let now = now();
        let missing = || missing_user("funnel_completion", user_id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(concat!(
            "INSERT INTO funnel_completion (user_id, completed_at, completion_data) \
             VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
             completed_at = EXCLUDED.completed_at, completion_data = EXCLUDED.completion_data \
             RETURNING ",
            completion_cols!()
        ))
        .bind(user_id)
        .bind(now)
        .bind(data)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "funnel_completion_user_id_fkey", missing))?;
        let out = completion(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            completion_cols!(),
            " FROM funnel_completion WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(completion).transpose()
    }

    // ----- referrals -----------------------------------------------------------

    async fn create_referral_code(
        &self,
        owner_user_id: &str,
        code_s: &str,
    ) -> Result<ReferralCode> {
        let now = now();
        let missing = || missing_user("referral_codes", code_s, "owner_user_id", owner_user_id);
        let duplicate = || Error::Duplicate {
            table: "referral_codes",
            column: "code",
            key: code_s.to_string(),
        };
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, owner_user_id).await? {
            return Err(missing());
        }
        // ON CONFLICT DO NOTHING: an existing code (even one inserted by a
        // concurrent transaction) yields no row instead of an error.
        let row = sqlx::query(concat!(
            "INSERT INTO referral_codes (code, owner_user_id, usage_count, created_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (code) DO NOTHING RETURNING ",
            code_cols!()
        ))
        .bind(code_s)
        .bind(owner_user_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "referral_codes_owner_user_id_fkey", missing))?;
        let Some(row) = row else {
            return Err(duplicate());
        };
        let out = code(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn get_referral_code(&self, code_s: &str) -> Result<Option<ReferralCode>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            code_cols!(),
            " FROM referral_codes WHERE code = $1"
        ))
        .bind(code_s)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(code).transpose()
    }

    async fn redeem_referral(&self, code_s: &str, referred: &str) -> Result<Referral> {
        let now = now();
        let missing = || missing_user("referral_tracking", referred, "referred_user_id", referred);
        let already = || Error::AlreadyReferred {
            user_id: referred.to_string(),
        };
        let mut tx = self.begin().await?;
        // The code row lock serialises redemptions of one code, so the
        // usage_count increment and the usage-log insert stay in step.
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT owner_user_id FROM referral_codes WHERE code = $1 FOR UPDATE",
        )
        .bind(code_s)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owner) = owner else {
            return Err(Error::UnknownReferralCode {
                code: code_s.to_string(),
            });
        };
        if !user_exists(&mut tx, referred).await? {
            return Err(missing());
        }
        if owner == referred {
            return Err(Error::SelfReferral {
                code: code_s.to_string(),
                user_id: referred.to_string(),
            });
        }
        let seen = sqlx::query("SELECT 1 FROM referral_tracking WHERE referred_user_id = $1")
            .bind(referred)
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_some() {
            return Err(already());
        }
        let row = sqlx::query(
            "INSERT INTO referral_tracking (referral_code, referrer_user_id, referred_user_id, used_at) \
             VALUES ($1, $2, $3, $4) \
             RETURNING id, referral_code, referrer_user_id, referred_user_id, used_at",
        )
        .bind(code_s)
        .bind(&owner)
        .bind(referred)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match violated_constraint(&e) {
            // A concurrent redemption of another code for the same user won.
            Some((DbErrorKind::UniqueViolation, "referral_tracking_referred_user_id_key")) => {
                already()
            }
            Some((DbErrorKind::ForeignKeyViolation, "referral_tracking_referred_user_id_fkey")) => {
                missing()
            }
            _ => e.into(),
        })?;
        let out = referral(&row)?;
        sqlx::query(
            "INSERT INTO referral_usage_log (referral_code, used_by_user_id, used_at) \
             VALUES ($1, $2, $3)",
        )
        .bind(code_s)
        .bind(referred)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE referral_codes SET usage_count = COALESCE(usage_count, 0) + 1 WHERE code = $1",
        )
        .bind(code_s)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        let mut tx = self.begin_read().await?;
        // One snapshot for both reads, so the codes and the referred users agree.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            code_cols!(),
            " FROM referral_codes WHERE owner_user_id = $1 ORDER BY code COLLATE \"C\""
        ))
        .bind(owner_user_id)
        .fetch_all(&mut *tx)
        .await?;
        let codes = all(&rows, code)?;
        let referred_user_ids: Vec<String> = sqlx::query_scalar(
            "SELECT referred_user_id FROM referral_tracking WHERE referrer_user_id = $1 ORDER BY id",
        )
        .bind(owner_user_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let total_uses = codes
            .iter()
            .map(|c| i64::from(c.usage_count.unwrap_or(0)))
            .sum();
        Ok(ReferralStats {
            owner_user_id: owner_user_id.to_string(),
            codes,
            total_uses,
            referred_user_ids,
        })
    }

    async fn referral_usage(&self, code_s: &str) -> Result<Vec<ReferralUsage>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(
            "SELECT id, referral_code, used_by_user_id, used_at FROM referral_usage_log \
             WHERE referral_code = $1 ORDER BY id",
        )
        .bind(code_s)
        .fetch_all(&mut *c)
        .await?;
        all(&rows, usage)
    }

    // ----- analysis queue ------------------------------------------------------

    async fn enqueue_job(&self, new: &NewJob) -> Result<JobWithChunks> {
        if new.chunk_tweet_counts.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "analysis_queue: a job for user {:?} needs at least one chunk (chunk_tweet_counts is empty)",
                new.user_id
            )));
        }
        let n = i32::try_from(new.chunk_tweet_counts.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "analysis_queue: {} chunks do not fit total_chunks (INTEGER)",
                new.chunk_tweet_counts.len()
            ))
        })?;
        let now = now();
        let missing = || missing_user("analysis_queue", &new.user_id, "user_id", &new.user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, &new.user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(concat!(
            "INSERT INTO analysis_queue (user_id, status, priority, total_chunks, processed_chunks, created_at) \
             VALUES ($1, 'pending', $2, $3, 0, $4) RETURNING ",
            job_cols!()
        ))
        .bind(&new.user_id)
        .bind(new.priority)
        .bind(n)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "analysis_queue_user_id_fkey", missing))?;
        let job_row = job(&row)?;
        let indexes: Vec<i32> = (0..n).collect();
        let rows = sqlx::query(concat!(
            "INSERT INTO analysis_chunks (job_id, chunk_index, tweet_count, status) \
             SELECT $1, c.i, c.n, 'pending' FROM UNNEST($2::integer[], $3::integer[]) AS c(i, n) \
             RETURNING ",
            chunk_cols!()
        ))
        .bind(job_row.job_id)
        .bind(&indexes)
        .bind(&new.chunk_tweet_counts)
        .fetch_all(&mut *tx)
        .await?;
        // RETURNING does not promise an order.
        let mut chunks = all(&rows, chunk)?;
        chunks.sort_by_key(|c| (c.chunk_index, c.chunk_id));
        self.commit(tx).await?;
        Ok(JobWithChunks {
            job: job_row,
            chunks,
        })
    }

    async fn claim_next_job(&self) -> Result<Option<Job>> {
        let now = now();
        let mut tx = self.begin().await?;
        // SKIP LOCKED: a job another worker is claiming right now is passed
        // over instead of waited for, so two workers never get the same job.
        let id: Option<i32> = sqlx::query_scalar(
            "SELECT job_id FROM analysis_queue WHERE status = 'pending' \
             ORDER BY priority DESC NULLS LAST, created_at ASC NULLS LAST, job_id ASC \
             LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let row = sqlx::query(concat!(
            "UPDATE analysis_queue SET status = 'processing', started_at = $2 \
             WHERE job_id = $1 RETURNING ",
            job_cols!()
        ))
        .bind(id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = job(&row)?;
        self.commit(tx).await?;
        Ok(Some(out))
    }

    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        let mut tx = self.begin_read().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM analysis_queue WHERE job_id = $1"
        ))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let j = job(&row)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            chunk_cols!(),
            " FROM analysis_chunks WHERE job_id = $1 ORDER BY chunk_index, chunk_id"
        ))
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        let chunks = all(&rows, chunk)?;
        tx.commit().await?;
        Ok(Some(JobWithChunks { job: j, chunks }))
    }

    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(
            &mut tx,
            Queue::Chunks,
            chunk_id,
            &[JobStatus::Pending, JobStatus::Failed],
            "start",
        )
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE analysis_chunks SET status = 'processing', started_at = $2, error = NULL \
             WHERE chunk_id = $1 RETURNING ",
            chunk_cols!()
        ))
        .bind(chunk_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = chunk(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(
            &mut tx,
            Queue::Chunks,
            chunk_id,
            &[JobStatus::Processing],
            "complete",
        )
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE analysis_chunks SET status = 'completed', completed_at = $2, result = $3, \
             error = NULL WHERE chunk_id = $1 RETURNING ",
            chunk_cols!()
        ))
        .bind(chunk_id)
        .bind(now)
        .bind(result)
        .fetch_one(&mut *tx)
        .await?;
        let out = chunk(&row)?;
        sqlx::query(
            "UPDATE analysis_queue SET processed_chunks = COALESCE(processed_chunks, 0) + 1 \
             WHERE job_id = $1",
        )
        .bind(out.job_id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(
            &mut tx,
            Queue::Chunks,
            chunk_id,
            &[JobStatus::Processing],
            "fail",
        )
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE analysis_chunks SET status = 'failed', completed_at = $2, error = $3 \
             WHERE chunk_id = $1 RETURNING ",
            chunk_cols!()
        ))
        .bind(chunk_id)
        .bind(now)
        .bind(error)
        .fetch_one(&mut *tx)
        .await?;
        let out = chunk(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(
            &mut tx,
            Queue::Jobs,
            job_id,
            &[JobStatus::Processing],
            "complete",
        )
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE analysis_queue SET status = 'completed', completed_at = $2 \
             WHERE job_id = $1 RETURNING ",
            job_cols!()
        ))
        .bind(job_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = job(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(
            &mut tx,
            Queue::Jobs,
            job_id,
            &[JobStatus::Pending, JobStatus::Processing],
            "fail",
        )
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE analysis_queue SET status = 'failed', completed_at = $2, error = $3 \
             WHERE job_id = $1 RETURNING ",
            job_cols!()
        ))
        .bind(job_id)
        .bind(now)
        .bind(error)
        .fetch_one(&mut *tx)
        .await?;
        let out = job(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn jobs_by_status(&self, st: JobStatus, limit_n: u32) -> Result<Vec<Job>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM analysis_queue WHERE status = $1 \
             ORDER BY created_at ASC NULLS LAST, job_id ASC LIMIT $2"
        ))
        .bind(st.as_str())
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        all(&rows, job)
    }

    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM analysis_queue WHERE user_id = $1 \
             ORDER BY created_at DESC NULLS LAST, job_id DESC"
        ))
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?;
        all(&rows, job)
    }
}

#[cfg(test)]
mod tests {
    use super::noted_changes;

    #[test]
    fn noted_changes_keep_each_key_once_with_its_last_image() {
        let user = |name: &str| {
            format!(
                r#"{{"id": "u1", "username": "{name}", "created_at": "2026-12-01T07:17:31.457775+00:00", "last_scraped": null, "profile_data": {{"a": 1}}, "profile_picture_url": null}}"#
            )
        };
        let noted = [
            format!(r#"[7, "users", "u1", {}]"#, user("first")),
            r#"[8, "tweets", "t1", null]"#.to_string(),
            format!(r#"[9, "users", "u1", {}]"#, user("second")),
            r#"[10, "tweets", "t2", {"id": "t2"}]"#.to_string(),
            r#"[11, "nowhere", "x", null]"#.to_string(),
            "not json".to_string(),
            r#"[12, "users", "u2", {"id": "u2"}]"#.to_string(),
        ]
        .join("\n")
            + "\n";
        let at = std::time::Instant::now();
        let got = noted_changes(&noted, at);
        let keys: Vec<_> = got.iter().map(|(c, _)| (c.table, c.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("users", "u1"),
                ("tweets", "t1"),
                ("tweets", "t2"),
                ("users", "u2")
            ]
        );
        let u1 = got[0].1.as_ref().expect("carried");
        assert_eq!(u1.outbox_id, 9);
        let img = u1.image.as_ref().expect("not deleted");
        assert!(img.contains(&crate::row::Cell::Text("second".to_string())));
        let t1 = got[1].1.as_ref().expect("carried");
        assert_eq!((t1.outbox_id, t1.image.is_none()), (8, true), "deleted");
        assert!(got[2].1.is_none(), "not noted: read back by the apply");
        assert!(
            got[3].1.is_none(),
            "a rendering that does not decode is read back"
        );
        assert!(noted_changes("", at).is_empty());
    }
}
