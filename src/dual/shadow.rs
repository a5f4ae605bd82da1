//! Shadow reads: a sample of reads compared with the other side, off the
//! caller's path; a mismatch counts only when it holds still.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Backend, Result};
use crate::metrics as m;
use crate::outbox;
use crate::shadow::{self, Mismatch, Policy};

use super::routing::other_side_of;
use super::DualStore;

impl DualStore {
    pub(super) fn sampled(&self) -> bool {
        let rate = self.inner.config.shadow_sample_rate;
        rate >= 1.0 || (rate > 0.0 && super::counters::random_unit() < rate)
    }

    /// Compares `primary` (the authoritative answer) with what `other`
    /// answers, re-checking once after the outbox applies when the table has
    /// pending keys. Runs on a spawned task.
    pub(super) async fn shadow_compare<T, F, Fut>(
        self,
        op: &'static str,
        table: &'static str,
        policy: Policy,
        primary: Value,
        other_side: Backend,
        read: F,
    ) where
        T: Serialize,
        F: Fn(DualStore, Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeout = self.inner.config.shadow_timeout;
        let c = &self.inner.counters;
        let outcome = |o: &'static str| {
            debug_assert!(
                m::SHADOW_OUTCOMES.contains(&o),
                "{o} missing from SHADOW_OUTCOMES"
            );
            metrics::counter!(m::SHADOW_COMPARISONS, "op" => op, "outcome" => o).increment(1)
        };
        let other = match tokio::time::timeout(timeout, read(self.clone(), other_side)).await {
            Ok(Ok(v)) => serde_json::to_value(v).unwrap_or(Value::Null),
            _ => {
                c.shadow_errors.fetch_add(1, Ordering::Relaxed);
                outcome("error");
                return;
            }
        };
        c.comparisons.fetch_add(1, Ordering::Relaxed);
        let ms = shadow::compare(op, table, policy, &primary, &other);
        if ms.is_empty() {
            outcome("match");
            return;
        }
        // Lag, not divergence, when the rows were still on their way (in the
        // outbox) or changed between the two reads. A mismatch counts only
        // when it holds still: the authoritative side reads the same before
        // and after the other side is read, nothing for the rows concerned
        // waits in either outbox, and the next round sees the very same two
        // answers. Rows that keep changing until the deadline are counted
        // apart (`unsettled`): each write copies the whole row, so a key
        // rewritten that often is re-copied anyway, and verify checks the
        // rows once traffic lets it.
        let deadline = Instant::now() + self.inner.config.lag_recheck;
        let auth = other_side_of(other_side);
        let mut ms = ms;
        let mut seen: Option<(Value, Value)> = None;
        loop {
            while Instant::now() < deadline && self.pending_for(&ms).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let to_value = |r: Result<T>| {
                r.ok()
                    .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
            };
            let a1 = to_value(read(self.clone(), auth).await);
            let b = to_value(read(self.clone(), other_side).await);
            let a2 = to_value(read(self.clone(), auth).await);
            if let (Some(a1), Some(b), Some(a2)) = (a1, b, a2) {
                let still = shadow::compare(op, table, policy, &a2, &b);
                if still.is_empty() || shadow::compare(op, table, policy, &a1, &b).is_empty() {
                    c.mismatches_lag_resolved.fetch_add(1, Ordering::Relaxed);
                    outcome("lag_resolved");
                    return;
                }
                let held = shadow::compare(op, table, Policy::Exact, &a1, &a2).is_empty();
                if held && !self.pending_for(&still).await {
                    if seen.as_ref() == Some(&(a2.clone(), b.clone())) {
                        ms = still;
                        break;
                    }
                    seen = Some((a2, b));
                } else {
                    seen = None;
                }
                ms = still;
            }
            if Instant::now() >= deadline {
                c.mismatches_unsettled.fetch_add(1, Ordering::Relaxed);
                outcome("unsettled");
                tracing::debug!(op, table, mismatches = ?ms, "shadow mismatch on rows still changing");
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // Legacy rows the backfill (or a dual write) recorded as rejects are
        // accounted for: PostgreSQL never took them, by design.
        if self.all_rejected(&ms).await {
            c.mismatches_rejected.fetch_add(1, Ordering::Relaxed);
            outcome("rejected");
            return;
        }
        c.mismatches_real.fetch_add(1, Ordering::Relaxed);
        outcome("mismatch");
        for x in &ms {
            metrics::counter!(m::SHADOW_MISMATCHES, "op" => op, "table" => table, "kind" => x.kind.as_str()).increment(1);
        }
        tracing::warn!(op, table, mismatches = ?ms, "shadow read mismatch");
        self.inner.ledger.push(&ms);
        if self.inner.config.raise_on_mismatch {
            panic!("shadow mismatch in {op}: {ms:?}");
        }
    }

    /// Whether an outbox entry may explain these mismatches: one for a
    /// mismatched row's key (either side, its table), or, when a mismatch is
    /// not about one row's own column (a count, the order of a list, a job's
    /// chunks), any entry at all. An outbox that cannot be read counts as
    /// pending.
    pub(super) async fn pending_for(&self, ms: &[Mismatch]) -> bool {
        let own_column = |m: &Mismatch| {
            !m.key.is_empty()
                && match &m.field {
                    None => true,
                    Some(f) => self
                        .schema()
                        .by_name(m.table)
                        .is_some_and(|t| t.column(f).is_some()),
                }
        };
        if !ms.iter().all(own_column) {
            return self.anything_pending().await;
        }
        self.flush_clears_if_idle().await;
        let keys: Vec<(String, String)> = ms
            .iter()
            .map(|m| (m.table.to_string(), m.key.clone()))
            .collect();
        let k = keys.clone();
        let in_sqlite = self
            .inner
            .sqlite
            .read(move |conn| outbox::sqlite_any_for_keys(conn, &k))
            .await;
        if !matches!(in_sqlite, Ok(false)) {
            return true;
        }
        let in_pg = outbox::pg_any_for_keys(self.inner.pg.pool(), &keys).await;
        !matches!(in_pg, Ok(false))
    }

    /// Whether every mismatch is on a row recorded in `cutover.rejects`.
    pub(super) async fn all_rejected(&self, ms: &[Mismatch]) -> bool {
        let keyed: Vec<&Mismatch> = ms.iter().filter(|m| !m.key.is_empty()).collect();
        if keyed.len() != ms.len() {
            return false;
        }
        let keys: Vec<(&str, &str)> = keyed.iter().map(|m| (m.table, m.key.as_str())).collect();
        let found = crate::rejects::count_recorded(self.inner.pg.pool(), &keys).await;
        let distinct: std::collections::HashSet<(&str, &str)> = keys.iter().copied().collect();
        matches!(found, Ok(n) if n as usize == distinct.len())
    }
}
