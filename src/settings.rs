//! Connection settings and the store factory (the plan's `createDbAdapter`).
//!
//! Settings come from three places, in this order of precedence: flags
//! (`Overrides`), the process environment, and the `.env.migration` file of
//! the plan. PostgreSQL is named either by `DATABASE_URL` or by the plan's
//! `PG_HOST`, `PG_PORT`, `PG_USER`, `PG_PASSWORD`, `PG_DATABASE`.
//!
//! The password is held only inside sqlx's connect options; everything this
//! module prints (`Debug`, `Display`, errors) shows the URL with the password
//! replaced by `***`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::{Error, Result};
use crate::pg::PgStore;
use crate::sqlite::SqliteStore;
use crate::store::Store;

/// The file the plan keeps migration settings in.
pub const ENV_FILE: &str = ".env.migration";

/// PostgreSQL pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a call waits for a free connection before failing with `PoolTimeout`.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Option<Duration>,
    /// Server-side `statement_timeout` for every connection, when set.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            statement_timeout: None,
        }
    }
}

/// Where PostgreSQL is and how to pool connections to it.
#[derive(Clone)]
pub struct PgSettings {
    options: PgConnectOptions,
    redacted: String,
    /// Pool limits.
    pub pool: PoolSettings,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.redacted)
            .field("pool", &self.pool)
            .finish()
    }
}

impl std::fmt::Display for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        // Without `//` after the scheme the parser keeps the rest as an
        // opaque path, a password included (`jdbc:postgresql://u:pw@h/db`).
        Ok(u) if u.cannot_be_a_base() => "<unparseable URL>".to_string(),
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            // Query parameters may carry a password too (`?password=`).
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// `url` pointing at `database`: the path replaced and a `dbname`
/// parameter dropped (it would win over the path when the URL is used
/// again, e.g. handed to a child process). An unparseable URL is returned
/// as it is.
pub fn url_with_database(url: &str, database: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{database}"));
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "dbname")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if kept.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

impl PgSettings {
    /// Parses a `postgres://` URL. The error never repeats the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            // Only the scheme is named: the rest may hold a password in a
            // form no URL parser recognises.
            let named = scheme
                .filter(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                })
                .map_or("no scheme".to_string(), |s| format!("scheme {s}://"));
            return Err(Error::Config(format!(
                "the PostgreSQL URL must start with postgres:// or postgresql:// (it has {named})"
            )));
        }
        let options = PgConnectOptions::from_str(url).map_err(|_| {
            Error::Config(format!(
                "the PostgreSQL URL {} is not valid; expected postgres://user:password@host:port/database",
                redact_url(url)
            ))
        })?;
        Ok(Self {
            options,
            redacted: redact_url(url),
            pool: PoolSettings::default(),
        })
    }

    /// Builds settings from the plan's separate variables.
    pub fn from_parts(
        host: &str,
        port: u16,
        user: &str,
        password: Option<&str>,
        database: &str,
    ) -> Self {
        let mut options = PgConnectOptions::new()
            .host(host)
            .port(port)
            .username(user)
            .database(database);
        if let Some(p) = password {
            options = options.password(p);
        }
        let redacted = format!(
            "postgres://{}{}@{}:{}/{}",
            user,
            if password.is_some() { ":***" } else { "" },
            host,
            port,
            database
        );
        Self {
            options,
            redacted,
            pool: PoolSettings::default(),
        }
    }

    /// The sqlx connect options (these hold the password: never log them).
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut o = self.options.clone();
        if let Some(t) = self.pool.statement_timeout {
            o = o.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
        }
        o
    }

    /// The URL with the password replaced by `***`, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The same server, another database (tests and the demo create their own).
    pub fn with_database(&self, database: &str) -> Self {
        let mut s = self.clone();
        s.options = s.options.database(database);
        s.redacted = url_with_database(&s.redacted, database);
        s
    }

    /// The database name, when one is set.
    pub fn database(&self) -> Option<&str> {
        self.options.get_database()
    }
}

/// Which store the factory opens when the application asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// The legacy file (the plan's default).
    #[default]
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// The dual store over both (`DB_TYPE=cutover`): started with
    /// [`crate::Cutover::start`], which owns its background tasks.
    Cutover,
}

/// Values given on the command line; they win over the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--sqlite PATH`.
    pub sqlite: Option<PathBuf>,
    /// `--postgres URL`.
    pub postgres: Option<String>,
    /// Another file than `./.env.migration`.
    pub env_file: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The legacy SQLite file.
    pub sqlite_path: Option<PathBuf>,
    /// PostgreSQL, when configured.
    pub postgres: Option<PgSettings>,
    /// What `open_store` returns (`DB_TYPE=postgres` selects PostgreSQL).
    pub store_kind: StoreKind,
}

impl Settings {
    /// Resolves settings from flags, the process environment and `.env.migration`.
    pub fn resolve(overrides: &Overrides) -> Result<Self> {
        let file = overrides
            .env_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(ENV_FILE));
        Self::resolve_with(overrides, |k| std::env::var(k).ok(), Some(&file))
    }

    /// Resolves settings with an explicit environment lookup (for tests).
    /// A missing `env_file` is not an error; an unreadable one is.
    pub fn resolve_with(
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        env_file: Option<&Path>,
    ) -> Result<Self> {
        let file = match env_file {
            Some(p) if p.exists() => read_env_file(p)?,
            _ => HashMap::new(),
        };
        let get = |k: &str| {
            env(k)
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(k).cloned())
        };

        let sqlite_path = overrides
            .sqlite
            .clone()
            .or_else(|| get("SQLITE_PATH").map(PathBuf::from));

        let postgres = if let Some(url) = &overrides.postgres {
            Some(PgSettings::from_url(url)?)
        } else if let Some(url) = get("DATABASE_URL") {
            Some(PgSettings::from_url(&url)?)
        } else if get("PG_HOST").is_some() || get("PG_DATABASE").is_some() {
            let port = match get("PG_PORT") {
                Some(p) => p
                    .parse::<u16>()
                    .map_err(|_| Error::Config(format!("PG_PORT={p:?} is not a port number")))?,
                None => 5432,
            };
            Some(PgSettings::from_parts(
                &get("PG_HOST").unwrap_or_else(|| "localhost".into()),
                port,
                &get("PG_USER").unwrap_or_else(|| "postgres".into()),
                get("PG_PASSWORD").as_deref(),
                &get("PG_DATABASE").unwrap_or_else(|| "postgres".into()),
            ))
        } else {
            None
        };

        let store_kind = match get("DB_TYPE").as_deref() {
            Some(v)
                if v.eq_ignore_ascii_case("postgres") || v.eq_ignore_ascii_case("postgresql") =>
            {
                StoreKind::Postgres
            }
            Some(v) if v.eq_ignore_ascii_case("sqlite") => StoreKind::Sqlite,
            Some(v) if v.eq_ignore_ascii_case("cutover") => StoreKind::Cutover,
            Some(v) => {
                return Err(Error::Config(format!(
                    "DB_TYPE={v:?} is not known; use sqlite, postgres or cutover"
                )))
            }
            None => StoreKind::Sqlite,
        };

        Ok(Self {
            sqlite_path,
            postgres,
            store_kind,
        })
    }

    /// PostgreSQL settings, or an error that says how to give them.
    pub fn require_postgres(&self) -> Result<&PgSettings> {
        self.postgres.as_ref().ok_or_else(|| {
            Error::Config(
                "PostgreSQL is not configured: pass --postgres URL, set DATABASE_URL, \
                 or set PG_HOST/PG_PORT/PG_USER/PG_PASSWORD/PG_DATABASE (also read from .env.migration)"
                    .into(),
            )
        })
    }

    /// The SQLite path, or an error that says how to give it.
    pub fn require_sqlite(&self) -> Result<&Path> {
        self.sqlite_path.as_deref().ok_or_else(|| {
            Error::Config(
                "the SQLite file is not configured: pass --sqlite PATH or set SQLITE_PATH \
                 (also read from .env.migration)"
                    .into(),
            )
        })
    }
}

fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let iter = dotenvy::from_path_iter(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut map = HashMap::new();
    for item in iter {
        // The line may hold a password: report only where it is.
        let (k, v) = item.map_err(|_| {
            Error::Config(format!(
                "{} has a line that is not KEY=VALUE",
                path.display()
            ))
        })?;
        map.insert(k, v);
    }
    Ok(map)
}

/// The plan's factory: the store that `settings.store_kind` names.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>> {
    match settings.store_kind {
        StoreKind::Sqlite => Ok(Arc::new(
            SqliteStore::open(settings.require_sqlite()?).await?,
        )),
        StoreKind::Postgres => Ok(Arc::new(
            PgStore::connect(settings.require_postgres()?).await?,
        )),
        StoreKind::Cutover => Err(Error::Config(
            "DB_TYPE=cutover: the dual store is started with Cutover::start \
             (it runs background tasks and needs shutdown on exit)"
                .into(),
        )),
    }
}
