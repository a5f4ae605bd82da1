//! Metric names (docs/DESIGN.md §8) and the Prometheus exporter.
//!
//! Everything is recorded through the `metrics` facade, so the library works
//! with whatever recorder the application installs; `install_exporter`
//! installs the Prometheus one and serves it over HTTP. The recorder must
//! be in place before `Cutover::start` (`DualStore::open`), which creates
//! the dual store's counters and gauges at 0.

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Current stage index (0 off … 5 complete).
pub const STAGE: &str = "cutover_stage";
/// Store call latency, by `op` and `backend`.
pub const OP_DURATION: &str = "cutover_op_duration_seconds";
/// Failed applies to the non-authoritative side, by `op` and `table`.
pub const SECONDARY_WRITE_FAILURES: &str = "cutover_secondary_write_failures_total";
/// Outbox entries waiting.
pub const OUTBOX_PENDING: &str = "cutover_outbox_pending";
/// Shadow comparisons, by `op` and `outcome` (match, mismatch, lag_resolved, unsettled, rejected, error).
pub const SHADOW_COMPARISONS: &str = "cutover_shadow_comparisons_total";
/// Shadow mismatches, by `op`, `table` and `kind` (missing, extra, field).
pub const SHADOW_MISMATCHES: &str = "cutover_shadow_mismatches_total";
/// Backfilled rows, by `table` and `outcome` (copied, rejected).
pub const BACKFILL_ROWS: &str = "cutover_backfill_rows_total";
/// Rows left to backfill, by `table`.
pub const BACKFILL_REMAINING: &str = "cutover_backfill_remaining";
/// Divergent rows found by the last verify, by `table` and `kind`.
pub const VERIFY_DIVERGENT_ROWS: &str = "cutover_verify_divergent_rows";
/// 1 while the store has fallen back to SQLite.
pub const FALLBACK_ACTIVE: &str = "cutover_fallback_active";
/// Pause of an authority flip (new writes held), seconds.
pub const FLIP_PAUSE: &str = "cutover_flip_pause_seconds";
/// Outbox entries applied by the replayer, by `side`.
pub const OUTBOX_REPLAYED: &str = "cutover_outbox_replayed_total";
/// Authoritative writes run again after a busy abort, by `op` and `backend`.
pub const BUSY_RETRIES: &str = "cutover_busy_retries_total";
/// Gauge: the authority epoch this process follows.
pub const AUTHORITY_EPOCH: &str = "cutover_authority_epoch";
/// Counter: keys both sides changed across a fallback (`cutover.conflicts`).
pub const CONFLICTS: &str = "cutover_conflicts_total";
/// Copies to PostgreSQL deferred in `dualwrite` because the row's parent is
/// not copied yet, by `op` and `table` (designed; not a failure).
pub const SECONDARY_WRITES_DEFERRED: &str = "cutover_secondary_writes_deferred_total";
/// Gauge: the longest flip pause this process saw, seconds.
pub const FLIP_PAUSE_MAX: &str = "cutover_flip_pause_max_seconds";
/// Gauge: the last flip pause this process saw, seconds.
pub const FLIP_PAUSE_LAST: &str = "cutover_flip_pause_last_seconds";

/// The store's write operations (the `op` label of write metrics).
pub const WRITE_OPS: [&str; 15] = [
    "upsert_profile",
    "delete_user",
    "save_tweets",
    "save_analysis",
    "complete_funnel_command",
    "mark_funnel_complete",
    "create_referral_code",
    "redeem_referral",
    "enqueue_job",
    "claim_next_job",
    "start_chunk",
    "complete_chunk",
    "fail_chunk",
    "complete_job",
    "fail_job",
];

/// The store's reads compared in shadow stages, with the table each reads.
pub const READ_OPS: [(&str, &str); 16] = [
    ("get_user", "users"),
    ("get_user_by_username", "users"),
    ("users_scraped_before", "users"),
    ("get_tweet", "tweets"),
    ("timeline", "tweets"),
    ("count_tweets", "tweets"),
    ("search_tweets", "tweets"),
    ("latest_analysis", "personality_analysis"),
    ("funnel_progress", "funnel_progress"),
    ("funnel_completion", "funnel_completion"),
    ("get_referral_code", "referral_codes"),
    ("referral_stats", "referral_codes"),
    ("referral_usage", "referral_usage_log"),
    ("get_job", "analysis_queue"),
    ("jobs_by_status", "analysis_queue"),
    ("user_jobs", "analysis_queue"),
];

/// Outcomes of a shadow comparison (the `outcome` label).
pub const SHADOW_OUTCOMES: [&str; 6] = [
    "match",
    "mismatch",
    "lag_resolved",
    "unsettled",
    "rejected",
    "error",
];

/// Kinds of a mismatch or divergence (the `kind` label).
pub const KINDS: [&str; 3] = ["missing", "extra", "field"];

/// Creates the dual store's counters and gauges at 0 for every label set
/// known in advance, so a panel or an alert sees 0 rather than no data.
/// Never lowers a value already recorded (counters and gauges get `+0`).
pub fn zero_dual_store() {
    use crate::tables::ALL;
    use metrics::{counter, gauge};
    for g in [
        STAGE,
        FALLBACK_ACTIVE,
        AUTHORITY_EPOCH,
        OUTBOX_PENDING,
        FLIP_PAUSE_MAX,
        FLIP_PAUSE_LAST,
    ] {
        gauge!(g).increment(0.0);
    }
    for op in WRITE_OPS {
        for t in ALL {
            counter!(SECONDARY_WRITE_FAILURES, "op" => op, "table" => t.name).increment(0);
            counter!(SECONDARY_WRITES_DEFERRED, "op" => op, "table" => t.name).increment(0);
        }
        for b in ["sqlite", "postgres"] {
            counter!(BUSY_RETRIES, "op" => op, "backend" => b).increment(0);
        }
    }
    for (op, table) in READ_OPS.iter() {
        for o in SHADOW_OUTCOMES {
            counter!(SHADOW_COMPARISONS, "op" => *op, "outcome" => o).increment(0);
        }
        for k in KINDS {
            counter!(SHADOW_MISMATCHES, "op" => *op, "table" => *table, "kind" => k).increment(0);
        }
    }
    for side in ["sqlite", "postgres"] {
        counter!(OUTBOX_REPLAYED, "side" => side).increment(0);
    }
    for t in ALL {
        counter!(CONFLICTS, "table" => t.name).increment(0);
    }
}

/// The `cutover.stage_history` id of the last flip pause this process
/// recorded (its own flips, and those the heartbeat saw others make).
static LAST_PAUSE_ID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Records the pause of the stage change `history_id` unless this process
/// did already: the flipping process records it at once, every other
/// process when its heartbeat sees it (a flip made by `cutover stage set`
/// shows on every application process's dashboard).
pub fn record_flip_pause_once(history_id: i64, seconds: f64) {
    use std::sync::atomic::Ordering;
    if LAST_PAUSE_ID.fetch_max(history_id, Ordering::Relaxed) < history_id {
        record_flip_pause(seconds);
    }
}

/// Starts counting flip pauses after `history_id` (those before the
/// process started are not its own).
pub fn flip_pauses_seen_up_to(history_id: i64) {
    LAST_PAUSE_ID.fetch_max(history_id, std::sync::atomic::Ordering::Relaxed);
}

/// Records a flip pause: the histogram and the max and last gauges.
pub fn record_flip_pause(seconds: f64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static MAX: AtomicU64 = AtomicU64::new(0);
    metrics::histogram!(FLIP_PAUSE).record(seconds);
    metrics::gauge!(FLIP_PAUSE_LAST).set(seconds);
    let max = f64::from_bits(
        MAX.fetch_max(seconds.to_bits(), Ordering::Relaxed)
            .max(seconds.to_bits()),
    );
    metrics::gauge!(FLIP_PAUSE_MAX).set(max);
}

/// Registers help texts for every metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        STAGE,
        "Current migration stage (0 off, 1 dualwrite, 2 shadow, 3 live, 4 rampdown, 5 complete)"
    );
    describe_histogram!(
        OP_DURATION,
        Unit::Seconds,
        "Store call latency by operation and backend"
    );
    describe_counter!(
        SECONDARY_WRITE_FAILURES,
        "Failed writes to the non-authoritative side (kept in the outbox)"
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Outbox entries not yet applied to the other side"
    );
    describe_gauge!(
        AUTHORITY_EPOCH,
        "Authority epoch this process follows (bumped by every flip, fallback and return)"
    );
    describe_counter!(
        CONFLICTS,
        "Keys both sides changed across a fallback, recorded in cutover.conflicts"
    );
    describe_counter!(SHADOW_COMPARISONS, "Shadow read comparisons by outcome");
    describe_counter!(
        SHADOW_MISMATCHES,
        "Shadow read mismatches by table and kind"
    );
    describe_counter!(BACKFILL_ROWS, "Rows handled by the backfill by outcome");
    describe_gauge!(BACKFILL_REMAINING, "Rows left to backfill per table");
    describe_gauge!(
        VERIFY_DIVERGENT_ROWS,
        "Divergent rows found by the last verify"
    );
    describe_gauge!(
        FALLBACK_ACTIVE,
        "1 while PostgreSQL is unreachable and SQLite serves as authoritative"
    );
    describe_histogram!(
        FLIP_PAUSE,
        Unit::Seconds,
        "Time new writes were held during an authority flip"
    );
    describe_counter!(
        OUTBOX_REPLAYED,
        "Outbox entries applied by the background replayer"
    );
    describe_counter!(
        SECONDARY_WRITES_DEFERRED,
        "Copies to PostgreSQL deferred in dualwrite because the parent row is not copied yet (designed)"
    );
    describe_gauge!(
        FLIP_PAUSE_MAX,
        Unit::Seconds,
        "Longest pause new writes saw at an authority flip in this process"
    );
    describe_gauge!(
        FLIP_PAUSE_LAST,
        Unit::Seconds,
        "Pause new writes saw at the last authority flip in this process"
    );
    describe_counter!(
        BUSY_RETRIES,
        "Authoritative writes run again after the database aborted them as busy"
    );
}

/// The default exporter address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Installs the Prometheus recorder and serves `/metrics` on `addr`.
/// Returns a handle that renders the current metrics (for reports and tests).
pub fn install_exporter(addr: SocketAddr) -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .map_err(|e| Error::Config(format!("metrics buckets: {e}")))?;
    let (recorder, exporter) = builder
        .build()
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| Error::Config("a metrics recorder is already installed".into()))?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::warn!(error = ?e, "metrics exporter stopped");
        }
    });
    describe();
    Ok(handle)
}
