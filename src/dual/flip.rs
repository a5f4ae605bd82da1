//! Stage flips, made under SQLite's write lock for every process.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::authority::Authority;
use crate::error::{Backend, Error, Result};
use crate::metrics as m;
use crate::stage::{self, Stage};

use super::DualStore;

impl DualStore {
    /// Moves both sides' id generators past the highest id either side
    /// holds (`sequences::align`).
    pub(super) async fn align_sequences(&self) -> Result<()> {
        crate::sequences::align(&self.inner.sqlite, self.inner.pg.pool()).await
    }

    /// Moves every process to `to`, bypassing the go-live gates (tests and
    /// tools that own the setup; an operator uses `set_stage`). Returns the
    /// pause writers saw.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) async fn switch(&self, to: Stage) -> Result<Duration> {
        self.set_stage(to, true, "switch").await
    }

    /// Whether moving to `to` changes which side is authoritative or copied to.
    pub fn flips(&self, to: Stage) -> bool {
        let cur = self.routing();
        cur.stage.authoritative() != to.authoritative() || cur.secondary() != to.secondary()
    }

    /// Moves every process to `to`, as docs/DESIGN.md §3 orders it: under SQLite's
    /// write lock (every process's writes wait), PostgreSQL's authority row
    /// moves first (copies of the old epoch commit before it or not at
    /// all), both outboxes drain (finite: nothing new can enter), the gates
    /// are judged and the stage persisted (`stage::set`, which announces
    /// it), the id generators are aligned, and SQLite's row says the new
    /// epoch. Every process follows at its next write; reads within the
    /// stage watcher's poll. Returns the pause writers saw.
    pub async fn set_stage(&self, to: Stage, force: bool, by: &str) -> Result<Duration> {
        // Drain most of the backlog before taking the lock, so the pause is short.
        let pre = Instant::now();
        for side in [Backend::Sqlite, Backend::Postgres] {
            match self.drain(side, 1000).await {
                Err(e) => tracing::debug!(side = %side, error = %e, "pre-flip drain incomplete"),
                Ok(n) => {
                    tracing::debug!(side = %side, applied = n, ms = pre.elapsed().as_millis() as u64, "pre-flip drain")
                }
            }
        }
        let started = Instant::now();
        let (_order, held, auth) = self.enter_exclusive().await?;
        let locked_at = started.elapsed();
        let pool = self.inner.pg.pool().clone();
        let by = by.to_string();
        self.inner.flipping.store(true, Ordering::SeqCst);
        let r = crate::sqlite::lock::within(async {
            let next = Authority {
                epoch: auth.epoch + 1,
                stage: to,
                fallback: false,
            };
            crate::authority::pg_write(
                &pool,
                &Authority {
                    epoch: next.epoch,
                    ..auth
                },
            )
            .await?;
            if auth.fallback {
                self.record_conflicts().await?;
            }
            // Clears this process queued: entries applied already need
            // no second apply.
            let _ = self.flush_clears().await;
            self.drain(Backend::Sqlite, 1000).await?;
            self.drain(Backend::Postgres, 1000).await?;
            let drained = started.elapsed();
            let sqlite_pending = self
                .inner
                .sqlite
                .locked(crate::outbox::sqlite_pending)
                .await?;
            let state = stage::set_for(
                &pool,
                &stage::Change {
                    to,
                    force,
                    by,
                    extra_pending: sqlite_pending,
                },
                self.schema(),
            )
            .await?;
            if auth.authoritative() != next.authoritative() || auth.fallback {
                self.align_sequences().await?;
            }
            crate::authority::pg_write(&pool, &next).await?;
            held.call(move |c| crate::authority::sqlite_write(c, &next))
                .await?;
            Ok::<_, Error>((next, state, drained))
        })
        .await;
        self.inner.flipping.store(false, Ordering::SeqCst);
        let (next, state, drained) = match r {
            Ok(v) => v,
            Err(e) => {
                // PostgreSQL's row may have moved already: SQLite's follows
                // it (same stage), so copies are not fenced out for good.
                match crate::authority::pg_read(&pool).await {
                    Ok(pa) if pa.epoch > auth.epoch => {
                        let same = Authority {
                            epoch: pa.epoch,
                            ..auth
                        };
                        let w = held
                            .call(move |c| crate::authority::sqlite_write(c, &same))
                            .await;
                        if w.is_ok() && self.commit_held(held).await.is_ok() {
                            self.follow(same);
                        }
                    }
                    _ => self.rollback_held(held).await,
                }
                return Err(e);
            }
        };
        self.commit_held(held).await?;
        self.follow(next);
        let pause = started.elapsed();
        // Recorded once per process: here, or by the heartbeat of a
        // process that follows (see `metrics::record_flip_pause_once`).
        match stage::record_pause(&pool, pause).await {
            Ok(id) => m::record_flip_pause_once(id, pause.as_secs_f64()),
            Err(_) => m::record_flip_pause(pause.as_secs_f64()),
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            from = %auth.stage,
            to = %to,
            epoch = next.epoch,
            version = state.version,
            pause_ms = ms(pause),
            lock_wait_ms = ms(locked_at),
            drain_ms = ms(drained - locked_at),
            "stage flip done"
        );
        Ok(pause)
    }
}
