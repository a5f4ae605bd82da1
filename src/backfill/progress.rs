//! Progress of one table: a bar on a terminal, logs otherwise, metrics always.

use indicatif::{ProgressBar, ProgressStyle};

/// Log a line every this many batches when there is no bar.
const LOG_EVERY: u64 = 20;

/// Reports one table's progress.
pub(crate) struct Progress {
    table: &'static str,
    bar: Option<ProgressBar>,
    batches: u64,
    remaining: u64,
    copied: u64,
    rejected: u64,
}

impl Progress {
    /// Starts reporting `table` with `remaining` rows to go.
    pub fn new(table: &'static str, remaining: u64, bar: bool) -> Self {
        let bar = bar.then(|| {
            let b = ProgressBar::new(remaining);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>22} [{bar:30}] {pos}/{len} rows {per_sec} eta {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(table);
            b
        });
        metrics::gauge!("cutover_backfill_remaining", "table" => table).set(remaining as f64);
        Self {
            table,
            bar,
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
        match &self.bar {
            Some(b) => {
                b.inc(copied + rejected);
                if self.rejected > 0 {
                    b.set_message(format!("{} rejected", self.rejected));
                }
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

    /// The table is done (or the run stops).
    pub fn finish(&mut self) {
        metrics::gauge!("cutover_backfill_remaining", "table" => self.table)
            .set(self.remaining as f64);
        if let Some(b) = self.bar.take() {
            b.finish();
        }
        tracing::info!(
            table = self.table,
            copied = self.copied,
            rejected = self.rejected,
            "table done"
        );
    }
}
