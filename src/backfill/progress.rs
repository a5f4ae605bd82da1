//! Progress of one table: to the caller's `Progress` when it gave one, logs
//! otherwise, metrics always.

use std::sync::Arc;

use crate::progress::Progress as Sink;

/// Log a line every this many batches when there is no bar.
const LOG_EVERY: u64 = 20;

/// Reports one table's progress.
pub(crate) struct Progress {
    table: &'static str,
    sink: Option<Arc<dyn Sink>>,
    batches: u64,
    remaining: u64,
    copied: u64,
    rejected: u64,
}

impl Progress {
    /// Starts reporting `table` with `remaining` rows to go.
    pub fn new(table: &'static str, remaining: u64, sink: Option<Arc<dyn Sink>>) -> Self {
        if let Some(s) = &sink {
            s.start(table, "rows", remaining);
        }
        metrics::gauge!("cutover_backfill_remaining", "table" => table).set(remaining as f64);
        for outcome in ["copied", "rejected"] {
            metrics::counter!("cutover_backfill_rows_total", "table" => table, "outcome" => outcome)
                .increment(0);
        }
        Self {
            table,
            sink,
            batches: 0,
            remaining,
            copied: 0,
            rejected: 0,
        }
    }

    /// One batch committed.
    pub fn batch(&mut self, copied: u64, rejected: u64) {
        self.batches += 1;
        self.copied += copied;
        self.rejected += rejected;
        // Live inserts can make more rows than were counted at the start.
        self.remaining = self.remaining.saturating_sub(copied + rejected);
        metrics::counter!("cutover_backfill_rows_total", "table" => self.table, "outcome" => "copied")
            .increment(copied);
        metrics::counter!("cutover_backfill_rows_total", "table" => self.table, "outcome" => "rejected")
            .increment(rejected);
        metrics::gauge!("cutover_backfill_remaining", "table" => self.table)
            .set(self.remaining as f64);
        match &self.sink {
            Some(s) => {
                let note = (self.rejected > 0).then(|| format!("{} rejected", self.rejected));
                s.advance(self.table, copied + rejected, note.as_deref());
            }
            None if self.batches % LOG_EVERY == 1 => tracing::info!(
                table = self.table,
                copied = self.copied,
                rejected = self.rejected,
                remaining = self.remaining,
                "backfill progress"
            ),
            None => {}
        }
    }

    /// The table is done (`done`), or the run stops before its end.
    pub fn finish(&mut self, done: bool) {
        metrics::gauge!("cutover_backfill_remaining", "table" => self.table)
            .set(self.remaining as f64);
        if let Some(s) = self.sink.take() {
            s.finish(self.table, done);
        }
        tracing::info!(
            table = self.table,
            copied = self.copied,
            rejected = self.rejected,
            "table done"
        );
    }
}
