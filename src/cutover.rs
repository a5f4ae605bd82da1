//! `Cutover`: the handle an application embeds during the move.
//!
//! It owns both stores, the `DualStore` the application calls, the outbox
//! replayer, the stage watcher and the heartbeat `cutover status` lists.
//! `set_stage` flips the stage for every process under the order lock and
//! SQLite's write lock, both exclusive (docs/DESIGN.md §3): every process
//! follows at its next write, which reads the authority under the lock
//! that keeps it still; the watcher (LISTEN/NOTIFY, polling as the
//! fallback) only makes reads follow sooner.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dual::{DualConfig, DualStore};
use crate::error::{Backend, Result};
use crate::pg::PgStore;
use crate::settings::PgSettings;
use crate::sqlite::SqliteStore;
use crate::stage::{self, Stage};

/// What `Cutover::start` needs.
#[derive(Debug, Clone)]
pub struct CutoverConfig {
    /// The legacy SQLite file.
    pub sqlite_path: std::path::PathBuf,
    /// PostgreSQL.
    pub postgres: PgSettings,
    /// Dual-store tunables.
    pub dual: DualConfig,
    /// How often the replayer looks at the outboxes when idle.
    pub replay_interval: Duration,
    /// Stage polling interval (the fallback for LISTEN/NOTIFY).
    pub stage_poll: Duration,
    /// Name recorded with stage changes made through this handle and in
    /// its heartbeats.
    pub actor: String,
    /// Apply the PostgreSQL schema's migrations at start. Off by default:
    /// the operator runs `cutover schema` (the application's role then
    /// needs no DDL rights) and `start` refuses, naming that command, while
    /// the schema is missing or older than this build.
    pub migrate: bool,
    /// How often this process records itself in `cutover.processes` (for
    /// `cutover status`).
    pub heartbeat: Duration,
    /// The application's tables (the Twitter application's by default).
    /// Another application declares its own and runs its operations
    /// through `DualStore::write` and `read`; their capture triggers are
    /// installed at start with `migrate`, else they must be installed
    /// already (`PgStore::install_capture`).
    pub schema: &'static crate::tables::Schema,
}

impl CutoverConfig {
    /// Defaults for everything but the two databases.
    pub fn new(sqlite_path: impl Into<std::path::PathBuf>, postgres: PgSettings) -> Self {
        Self {
            sqlite_path: sqlite_path.into(),
            postgres,
            dual: DualConfig::default(),
            replay_interval: Duration::from_millis(250),
            stage_poll: Duration::from_millis(500),
            actor: format!("pid {}", std::process::id()),
            migrate: false,
            heartbeat: Duration::from_secs(5),
            schema: &crate::tables::TWITTER,
        }
    }
}

/// The running cutover machinery of one process.
pub struct Cutover {
    dual: DualStore,
    sqlite_path: std::path::PathBuf,
    heartbeat: crate::status::Heartbeat,
    actor: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Cutover {
    /// Opens both stores, checks the schema (applies it with
    /// `config.migrate`), reads the persisted stage and starts the
    /// replayer, the stage watcher and the heartbeat.
    pub async fn start(config: CutoverConfig) -> Result<Cutover> {
        let sqlite = SqliteStore::open_with(
            &config.sqlite_path,
            crate::sqlite::SqliteOptions {
                schema: config.schema,
                ..Default::default()
            },
        )
        .await?;
        let pg = PgStore::connect(&config.postgres)
            .await?
            .with_schema(config.schema);
        if config.migrate {
            crate::pg::migrate(pg.pool()).await?;
            pg.install_capture().await?;
        } else {
            crate::pg::require_current(pg.pool()).await?;
            crate::pg::require_capture(pg.pool(), config.schema).await?;
        }
        let dual = DualStore::open(sqlite, pg, config.dual.clone()).await?;
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        // Replayer: applies what is left in either outbox, backing off while
        // the other side is unreachable.
        {
            let d = dual.clone();
            let rx = rx.clone();
            let idle = config.replay_interval;
            tasks.push(tokio::spawn(async move {
                let mut wait = idle;
                let stop = stopped(rx);
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let mut ok = true;
                    for side in [Backend::Sqlite, Backend::Postgres] {
                        if let Err(e) = d.drain(side, 500).await {
                            ok = false;
                            tracing::debug!(side = %side, error = %e, "replay deferred");
                        }
                    }
                    let _ = d.outbox_pending().await;
                    wait = if ok {
                        idle
                    } else {
                        (wait * 2).min(Duration::from_secs(5))
                    };
                }
            }));
        }

        // Stage watcher: reads follow a change made by any process within
        // the poll (at once with NOTIFY); writes follow it anyway.
        {
            let d = dual.clone();
            let pool = d.pg().pool().clone();
            let poll = config.stage_poll;
            tasks.push(tokio::spawn(stage::watch_channel(
                pool,
                poll,
                move || {
                    let d = d.clone();
                    async move {
                        if let Err(e) = d.refresh().await {
                            tracing::debug!(error = %e, "authority not read");
                        }
                    }
                },
                stopped(rx.clone()),
            )));
        }

        // Heartbeat: `cutover status` lists this process, the stage and
        // epoch it runs and its view of the outboxes. On a connection of
        // its own, so a process whose pool is busy still reports.
        let heartbeat = crate::status::Heartbeat::new(&config.actor);
        {
            let d = dual.clone();
            let hb = heartbeat.clone();
            let every = config.heartbeat;
            let options = config.postgres.connect_options();
            let stop = stopped(rx.clone());
            tasks.push(tokio::spawn(async move {
                use sqlx::Connection;
                tokio::pin!(stop);
                let mut conn: Option<sqlx::PgConnection> = None;
                let mut baseline = false;
                let limit = crate::pg::CONNECT_TIMEOUT;
                loop {
                    if conn.is_none() {
                        let attempt = tokio::select! {
                            _ = &mut stop => break,
                            c = tokio::time::timeout(limit, sqlx::PgConnection::connect_with(&options)) => c,
                        };
                        match attempt {
                            Ok(Ok(c)) => conn = Some(c),
                            Ok(Err(e)) => tracing::debug!(error = %crate::Error::from(e), "heartbeat connection not opened"),
                            Err(_) => tracing::debug!("heartbeat connection not opened within the connect timeout"),
                        }
                    }
                    if let Some(c) = conn.as_mut() {
                        let r = d.routing();
                        let pending = d.outbox_pending().await.ok();
                        let beat = async {
                            hb.beat(&mut *c, r.stage, r.epoch, r.fallback, pending).await?;
                            // Flip pauses made by other processes (the CLI).
                            if let Some((id, ms)) = crate::stage::last_pause(&mut *c).await? {
                                if baseline {
                                    crate::metrics::record_flip_pause_once(id, ms / 1000.0);
                                } else {
                                    crate::metrics::flip_pauses_seen_up_to(id);
                                }
                            }
                            Ok::<_, crate::Error>(())
                        };
                        let done = tokio::select! {
                            _ = &mut stop => break,
                            r = tokio::time::timeout(limit, beat) => r,
                        };
                        match done {
                            Ok(Ok(())) => baseline = true,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "heartbeat not recorded");
                                conn = None;
                            }
                            Err(_) => {
                                tracing::debug!("heartbeat timed out");
                                conn = None;
                            }
                        }
                    }
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
                if let Some(c) = conn {
                    let _ = c.close().await;
                }
            }));
        }

        Ok(Cutover {
            dual,
            sqlite_path: config.sqlite_path.clone(),
            heartbeat,
            actor: config.actor,
            stop,
            tasks,
        })
    }

    /// The store the application calls.
    pub fn store(&self) -> DualStore {
        self.dual.clone()
    }

    /// The current stage in this process.
    pub fn stage(&self) -> Stage {
        self.dual.stage()
    }

    /// Changes the stage for every process: under the order lock and SQLite's write lock,
    /// drains both outboxes, checks the go-live gates (unless `force`),
    /// persists and announces it (see `DualStore::set_stage`). Returns the
    /// pause writers saw.
    pub async fn set_stage(&self, to: Stage, force: bool) -> Result<Duration> {
        self.dual.set_stage(to, force, &self.actor).await
    }

    /// Stops the background tasks at their next checkpoint, after the
    /// copies in flight finished and their outbox entries were cleared (what
    /// is left, the next start replays).
    /// The whole migration at a glance, as `cutover status` shows it.
    pub async fn status(&self) -> Result<crate::status::Status> {
        crate::status::read(self.dual.pg().pool(), Some(&self.sqlite_path)).await
    }

    pub async fn shutdown(self) {
        self.dual.settle().await;
        let _ = self.dual.flush_clears().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.heartbeat.stopped(self.dual.pg().pool()).await;
    }
}
