//! What the dual store counted so far (the same figures go to the metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::DualStore;

/// Counters kept for reports (the same figures go to metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls that returned an error to the caller.
    pub failed_calls: AtomicU64,
    /// Calls made.
    pub calls: AtomicU64,
    /// Applies to the secondary side that failed (left in the outbox).
    pub secondary_failures: AtomicU64,
    /// Copies to PostgreSQL deferred in `dualwrite` because their parent
    /// row was not copied yet (left in the outbox; designed, not a failure).
    pub secondary_deferred: AtomicU64,
    /// Outbox entries applied by the replayer.
    pub replayed: AtomicU64,
    /// Shadow comparisons made.
    pub comparisons: AtomicU64,
    /// Real mismatches (after the lag re-check).
    pub mismatches_real: AtomicU64,
    /// Mismatches that went away once the outbox applied.
    pub mismatches_lag_resolved: AtomicU64,
    /// Mismatches on rows that kept changing until the re-check deadline
    /// (neither resolved nor shown to persist).
    pub mismatches_unsettled: AtomicU64,
    /// Mismatches on legacy rows recorded in `cutover.rejects` (accounted
    /// for, like verify does: PostgreSQL never took them).
    pub mismatches_rejected: AtomicU64,
    /// Shadow reads that failed or timed out.
    pub shadow_errors: AtomicU64,
    /// Authoritative writes run again after the database aborted them as
    /// busy (deadlock, serialization failure, lock timeout).
    pub busy_retries: AtomicU64,
    /// Times the store fell back to SQLite.
    pub fallbacks: AtomicU64,
    /// Writes whose PostgreSQL COMMIT outcome was unknown (connection lost
    /// during the COMMIT): the caller got an error.
    pub unknown_commits: AtomicU64,
    /// Keys both sides changed across a fallback, recorded in
    /// `cutover.conflicts`.
    pub conflicts: AtomicU64,
    /// Writes whose changed rows were copied to PostgreSQL in one
    /// transaction.
    pub copies_together: AtomicU64,
    /// Writes whose rows could not copy in one transaction (one of them
    /// refused, or a lock wait ran out) and were copied one by one.
    pub copies_one_by_one: AtomicU64,
}

/// A snapshot of `Counters`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error.
    pub failed_calls: u64,
    /// Failed secondary applies.
    pub secondary_failures: u64,
    /// Copies deferred in `dualwrite` (parent not copied yet).
    pub secondary_deferred: u64,
    /// Entries applied by the replayer.
    pub replayed: u64,
    /// Shadow comparisons.
    pub comparisons: u64,
    /// Real mismatches.
    pub mismatches_real: u64,
    /// Lag mismatches resolved.
    pub mismatches_lag_resolved: u64,
    /// Mismatches on rows still changing at the re-check deadline.
    pub mismatches_unsettled: u64,
    /// Mismatches on rejected legacy rows (accounted for).
    pub mismatches_rejected: u64,
    /// Shadow read errors.
    pub shadow_errors: u64,
    /// Writes run again after a busy abort.
    pub busy_retries: u64,
    /// Fallbacks.
    pub fallbacks: u64,
    /// Writes whose COMMIT outcome was unknown.
    pub unknown_commits: u64,
    /// Conflicts recorded after a fallback.
    pub conflicts: u64,
    /// Writes whose rows were copied to PostgreSQL in one transaction.
    pub copies_together: u64,
    /// Writes whose rows were copied one by one after their copy in one
    /// transaction failed.
    pub copies_one_by_one: u64,
}

impl DualStore {
    /// Counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            calls: g(&c.calls),
            failed_calls: g(&c.failed_calls),
            secondary_failures: g(&c.secondary_failures),
            secondary_deferred: g(&c.secondary_deferred),
            replayed: g(&c.replayed),
            comparisons: g(&c.comparisons),
            mismatches_real: g(&c.mismatches_real),
            mismatches_lag_resolved: g(&c.mismatches_lag_resolved),
            mismatches_unsettled: g(&c.mismatches_unsettled),
            mismatches_rejected: g(&c.mismatches_rejected),
            shadow_errors: g(&c.shadow_errors),
            busy_retries: g(&c.busy_retries),
            fallbacks: g(&c.fallbacks),
            unknown_commits: g(&c.unknown_commits),
            conflicts: g(&c.conflicts),
            copies_together: g(&c.copies_together),
            copies_one_by_one: g(&c.copies_one_by_one),
        }
    }
}

/// A cheap random number for sampling and jitter (not for secrets):
/// a per-thread xorshift seeded from the standard library's random hasher
/// keys.
pub(super) fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A random number in [0, 1).
pub(super) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}
