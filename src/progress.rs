//! Progress of the long jobs (backfill, verify), for whoever shows it.
//!
//! The library reports through this trait and draws nothing itself: the
//! `cutover` command draws bars on a terminal, an application can log or
//! ignore it. Metrics are recorded either way.

/// Receives a job's progress, table by table. Every method has a default
/// that does nothing.
pub trait Progress: Send + Sync {
    /// `table` starts with `total` units of `unit` ("rows", "ranges") to go.
    fn start(&self, table: &str, unit: &'static str, total: u64) {
        let _ = (table, unit, total);
    }
    /// `n` more units of `table` are done; `note` says what else to show
    /// (e.g. "3 rejected").
    fn advance(&self, table: &str, n: u64, note: Option<&str>) {
        let _ = (table, n, note);
    }
    /// `table` ended: `done` is false when the run stopped before its end
    /// (Ctrl-C, an error), so a bar stays where it stopped.
    fn finish(&self, table: &str, done: bool) {
        let _ = (table, done);
    }
    /// A message for the operator while the job waits (e.g. for
    /// PostgreSQL to come back).
    fn notice(&self, message: &str) {
        let _ = message;
    }
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Progress")
    }
}
