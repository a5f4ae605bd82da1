//! Connecting: the pool behind `PgStore`, its limits and outbox switch, and
//! a first connection that says what failed (refused, unknown host,
//! authentication, missing database) without the password.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::error::PoolLimits;
use super::store::PgStore;
use super::warm::{Conn, Warm};
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::settings::PgSettings;

/// A pooled connection idle at least this long is pinged before it is
/// handed out (see `PgStore::connect`).
pub(super) const IDLE_PING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
            // sqlx pings every connection it hands out by default: one more
            // round trip on every call. A connection in steady use is known
            // good; only one idle for a while (a server restart or a cut
            // network may have closed it meanwhile) is pinged, and a dead
            // one is closed and replaced before the caller sees it.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(settings.connect_options())
            .await;
        let limits = PoolLimits {
            acquire_timeout: p.acquire_timeout,
            max_connections: p.max_connections,
        };
        match pool {
            Ok(pool) => Ok(Self {
                warm: Warm::new(&pool),
                pool,
                limits,
                outbox: Arc::new(AtomicBool::new(false)),
                schema: &crate::tables::TWITTER,
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
            warm: Warm::new(&pool),
            pool,
            limits,
            outbox: Arc::new(AtomicBool::new(false)),
            schema: &crate::tables::TWITTER,
        }
    }

    /// This store for another application's tables (the Twitter
    /// application's by default): the tables its writes' changes are read
    /// against. Their capture triggers are installed by
    /// [`PgStore::install_capture`].
    pub fn with_schema(mut self, schema: &'static crate::tables::Schema) -> Self {
        self.schema = schema;
        self
    }

    /// The application's tables this store works on.
    pub fn schema(&self) -> &'static crate::tables::Schema {
        self.schema
    }

    /// Installs (or brings up to date) the change-capture trigger of each
    /// of the schema's tables; returns the tables changed. `cutover schema`
    /// does this for the Twitter application's tables.
    pub async fn install_capture(&self) -> Result<Vec<&'static str>> {
        super::capture::install(&self.pool, self.schema).await
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

    /// How many connections wait warm for the next call (checked out of
    /// the pool: see `Warm`).
    pub fn warm_connections(&self) -> usize {
        self.warm.len()
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for one call: a warm one when a call before put it
    /// back (`Conn::finished`), else one from the pool.
    pub(super) async fn conn(&self) -> Result<Conn> {
        if let Some(c) = Warm::take(&self.warm) {
            return Ok(c);
        }
        let c = self.pool.acquire().await.map_err(|e| self.limits.map(e))?;
        Ok(Warm::wrap(&self.warm, c))
    }

    /// A pooled connection taken ahead of a write, for `with_ready`: None
    /// when the pool gives none within its acquire timeout (busy, or
    /// PostgreSQL unreachable); the write then asks again itself, and the
    /// error it gets decides (a busy pool fails the call, an unreachable
    /// PostgreSQL leads to the fallback decision).
    pub(crate) async fn ready(&self) -> Option<Conn> {
        self.conn().await.ok()
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
