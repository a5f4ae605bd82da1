//! `Cutover`: the handle an application embeds during the move.
//!
//! It owns both stores, the `DualStore` the application calls, the outbox
//! replayer and the stage watcher. `set_stage` changes the stage for every
//! process (persisted in PostgreSQL, announced with NOTIFY); each process,
//! this one included, follows through its watcher, draining and swapping
//! when the authoritative side changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dual::{DualConfig, DualStore};
use crate::error::{Backend, Result};
use crate::pg::PgStore;
use crate::settings::PgSettings;
use crate::sqlite::SqliteStore;
use crate::stage::{self, Change, Stage, StageState};

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
    /// Name recorded with stage changes made through this handle.
    pub actor: String,
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
        }
    }
}

/// The running cutover machinery of one process.
pub struct Cutover {
    dual: DualStore,
    actor: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    // Serialises local switches (watcher and set_stage may both ask).
    switch_lock: Arc<tokio::sync::Mutex<i64>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Cutover {
    /// Opens both stores, applies the schema, reads the persisted stage and
    /// starts the replayer and the stage watcher.
    pub async fn start(config: CutoverConfig) -> Result<Cutover> {
        let sqlite = SqliteStore::open(&config.sqlite_path).await?;
        let pg = PgStore::connect(&config.postgres).await?;
        crate::pg::migrate(pg.pool()).await?;
        let state = stage::get(pg.pool()).await?;
        let dual = DualStore::new(sqlite, pg, state.stage, config.dual.clone()).await?;
        let (stop, rx) = watch::channel(false);
        let switch_lock = Arc::new(tokio::sync::Mutex::new(state.version));
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

        // Stage watcher: follows changes made by any process.
        {
            let d = dual.clone();
            let pool = d.pg().pool().clone();
            let lock = switch_lock.clone();
            let poll = config.stage_poll;
            tasks.push(tokio::spawn(stage::watch(
                pool,
                poll,
                state.version,
                move |st: StageState| {
                    let d = d.clone();
                    let lock = lock.clone();
                    async move {
                        let mut v = lock.lock().await;
                        if st.version <= *v {
                            return;
                        }
                        *v = st.version;
                        if let Err(e) = d.switch(st.stage).await {
                            tracing::error!(to = %st.stage, error = %e, "could not follow the stage change");
                        }
                    }
                },
                stopped(rx.clone()),
            )));
        }

        Ok(Cutover {
            dual,
            actor: config.actor,
            stop,
            tasks,
            switch_lock,
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

    /// Changes the stage for every process: checks the go-live gates (unless
    /// `force`), persists and announces it, and switches this process at once.
    /// Returns the pause writers saw here.
    pub async fn set_stage(&self, to: Stage, force: bool) -> Result<Duration> {
        let mut v = self.switch_lock.lock().await;
        let dual = self.dual.clone();
        let pool = dual.pg().pool().clone();
        let actor = self.actor.clone();
        let new_version = Arc::new(std::sync::Mutex::new(None));
        let nv = new_version.clone();
        // The gates are judged and the stage persisted inside the switch,
        // while writers are held and the outboxes are empty.
        let pause = self
            .dual
            .switch_with(to, || async move {
                let sqlite_pending = dual
                    .sqlite()
                    .connection()
                    .call(|c| crate::outbox::sqlite_pending(c))
                    .await?;
                let st = stage::set(
                    &pool,
                    &Change {
                        to,
                        force,
                        by: actor,
                        extra_pending: sqlite_pending,
                    },
                )
                .await?;
                *nv.lock().unwrap_or_else(|e| e.into_inner()) = Some(st.version);
                Ok(())
            })
            .await?;
        if let Some(ver) = *new_version.lock().unwrap_or_else(|e| e.into_inner()) {
            *v = ver;
        }
        if !pause.is_zero() {
            let _ = sqlx::query("UPDATE cutover.stage_history SET pause_ms = $1 WHERE id = (SELECT max(id) FROM cutover.stage_history)")
                .bind(pause.as_secs_f64() * 1000.0)
                .execute(self.dual.pg().pool())
                .await;
        }
        Ok(pause)
    }

    /// Stops the background tasks at their next checkpoint, after the
    /// copies in flight finished and their outbox entries were cleared (what
    /// is left, the next start replays).
    pub async fn shutdown(self) {
        self.dual.settle().await;
        let _ = self.dual.flush_clears().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
