//! Connections kept warm between calls: sqlx pings every connection that
//! returns to its pool, a round trip per call; a call that finished cleanly
//! hands its connection straight to the next one instead.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::connect::IDLE_PING_AFTER;

/// A connection one call uses. Put back with `finished` once the call's
/// statements all completed, it waits warm for the next call; dropped
/// otherwise (an error, a cancelled call), it returns to the pool, which
/// pings it first and closes it if it does not answer.
pub(crate) struct Conn {
    c: Option<PoolConnection<Postgres>>,
    warm: Arc<Warm>,
}

impl Conn {
    /// The call's statements all completed: the connection is idle, outside
    /// any transaction, and waits warm for the next call.
    pub(crate) fn finished(mut self) {
        if let Some(c) = self.c.take() {
            self.warm.put(c);
        }
    }

    /// The pooled connection itself (it returns to the pool when dropped).
    pub(crate) fn into_pooled(mut self) -> PoolConnection<Postgres> {
        self.c.take().expect("connection present")
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.c.as_ref().expect("connection present")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.c.as_mut().expect("connection present")
    }
}

/// Connections put back warm by calls that finished. sqlx pings every
/// connection that returns to its pool: a round trip to the server, off
/// the caller's path but on the same cores, for every call. A connection
/// whose call just finished cleanly is known good; kept here, the next
/// call takes it without that ping. The most recently used is taken
/// first. A connection warm for `IDLE_PING_AFTER` goes back to the pool
/// (pinged there, like any idle connection): on the next take or put, and
/// from a task that looks every `IDLE_PING_AFTER`. At most a quarter of
/// the pool waits here (one at least), and none is kept while the pool
/// has no connection left, so the pool's other users (reads in a
/// transaction, the replayer, a flip) wait for these only when every
/// other connection is busy, and then for two `IDLE_PING_AFTER` at most.
pub(crate) struct Warm {
    conns: std::sync::Mutex<Vec<(PoolConnection<Postgres>, std::time::Instant)>>,
    cap: usize,
    pool: PgPool,
    // The runtime the store was made on: a pooled connection needs one to
    // go back to its pool (sqlx spawns a task), also when the store is
    // dropped outside it.
    rt: Option<tokio::runtime::Handle>,
}

impl Warm {
    pub(super) fn new(pool: &PgPool) -> Arc<Self> {
        let max = pool.options().get_max_connections() as usize;
        let rt = tokio::runtime::Handle::try_current().ok();
        let warm = Arc::new(Self {
            conns: std::sync::Mutex::new(Vec::new()),
            cap: (max / 4).max(1),
            pool: pool.clone(),
            rt: rt.clone(),
        });
        // Without a runtime nothing can be taken warm yet; the first take
        // or put returns what waited too long.
        if let Some(rt) = rt {
            let weak = Arc::downgrade(&warm);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_PING_AFTER);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(w) = weak.upgrade() else { break };
                    w.return_stale();
                }
            });
        }
        warm
    }

    /// Returns to the pool every connection warm for `IDLE_PING_AFTER`.
    fn return_stale(&self) {
        let mut conns = self.conns.lock().expect("warm connections");
        let stale = Self::stale(&mut conns);
        drop(conns);
        drop(stale);
    }

    /// Takes out the connections warm too long (the oldest come first).
    fn stale(
        conns: &mut Vec<(PoolConnection<Postgres>, std::time::Instant)>,
    ) -> Vec<(PoolConnection<Postgres>, std::time::Instant)> {
        let n = conns
            .iter()
            .take_while(|(_, since)| since.elapsed() >= IDLE_PING_AFTER)
            .count();
        conns.drain(..n).collect()
    }

    /// A pooled connection for one call.
    pub(super) fn wrap(warm: &Arc<Self>, c: PoolConnection<Postgres>) -> Conn {
        Conn {
            c: Some(c),
            warm: warm.clone(),
        }
    }

    /// The connection put back last, when one is warm.
    pub(super) fn take(warm: &Arc<Self>) -> Option<Conn> {
        let mut conns = warm.conns.lock().expect("warm connections");
        let (c, since) = conns.pop()?;
        if since.elapsed() < IDLE_PING_AFTER {
            return Some(Self::wrap(warm, c));
        }
        // This one and every older one go back to the pool (after the lock).
        let stale: Vec<_> = std::mem::take(&mut *conns);
        drop(conns);
        drop(c);
        drop(stale);
        None
    }

    fn put(&self, c: PoolConnection<Postgres>) {
        let pool_exhausted = self.pool.size() as usize
            >= self.pool.options().get_max_connections() as usize
            && self.pool.num_idle() == 0;
        if self.pool.is_closed() || pool_exhausted {
            return;
        }
        let mut conns = self.conns.lock().expect("warm connections");
        let stale = Self::stale(&mut conns);
        let extra = if conns.len() < self.cap {
            conns.push((c, std::time::Instant::now()));
            None
        } else {
            Some(c)
        };
        drop(conns);
        drop((stale, extra));
    }

    /// How many connections wait here.
    pub(super) fn len(&self) -> usize {
        self.conns.lock().expect("warm connections").len()
    }
}

impl Drop for Warm {
    /// The connections waiting go back to the pool. Outside any runtime
    /// (a store dropped after `block_on` returned, or after its runtime
    /// was shut down), on the runtime the store was made on; with none,
    /// they are detached from the pool and closed.
    fn drop(&mut self) {
        let conns = std::mem::take(self.conns.get_mut().unwrap_or_else(|e| e.into_inner()));
        if conns.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        match &self.rt {
            Some(rt) => {
                let _entered = rt.enter();
                drop(conns);
            }
            None => {
                for (c, _) in conns {
                    drop(c.detach());
                }
            }
        }
    }
}
