//! What the operator sees on stderr: log lines above the progress bars and
//! status line (which stay pinned at the bottom on a terminal), plain text
//! without colours off a terminal, and library noise filtered by default.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Filter used when `RUST_LOG` is not set: the command's own info lines;
/// sqlx's pool pings, migration notices and slow-statement dumps only when
/// they are errors.
pub const DEFAULT_FILTER: &str = "info,sqlx=error";

/// The bars every command draws into; hidden off a terminal.
pub fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| {
        if std::io::stderr().is_terminal() {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        }
    })
}

/// Whether bars are drawn (stderr is a terminal).
pub fn drawn() -> bool {
    std::io::stderr().is_terminal()
}

/// Writes one log line to stderr with the bars lifted out of the way.
pub struct LogWriter(Vec<u8>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        multi().suspend(|| {
            let _ = std::io::stderr().lock().write_all(&line);
        });
    }
}

/// Installs the log subscriber: JSON lines or text, colours only on a
/// terminal, above the bars.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(drawn())
        .with_writer(|| LogWriter(Vec::new()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Progress bars per table for the backfill and verify.
#[derive(Default)]
pub struct Bars {
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    /// The bars of one job; `None` off a terminal (progress is logged).
    pub fn on_terminal() -> Option<std::sync::Arc<dyn cutover::progress::Progress>> {
        drawn().then(|| std::sync::Arc::new(Bars::default()) as _)
    }
}

impl cutover::progress::Progress for Bars {
    fn start(&self, table: &str, unit: &'static str, total: u64) {
        let b = multi().add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{prefix:>22}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}} {{msg}}"
        )) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(table.to_string());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.to_string(), b);
    }

    fn advance(&self, table: &str, n: u64, note: Option<&str>) {
        if let Some(b) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
        {
            b.inc(n);
            if let Some(m) = note {
                b.set_message(m.to_string());
            }
        }
    }

    fn finish(&self, table: &str, done: bool) {
        if let Some(b) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(table)
        {
            if done {
                b.finish();
            } else {
                // Stopped (Ctrl-C, an error): the bar stays where it stopped.
                b.abandon();
            }
        }
    }

    fn notice(&self, message: &str) {
        multi().suspend(|| eprintln!("{message}"));
    }
}
