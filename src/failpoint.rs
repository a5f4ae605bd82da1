//! Fault injection for tests: a named point in the code where the process
//! stops dead, so a test can kill it there with SIGKILL.
//!
//! Set `CUTOVER_FAILPOINT` to a point's name; when the process reaches it,
//! it writes `cutover failpoint <name> reached` to stderr and blocks that
//! thread forever. Unset (always, outside tests) a point costs one load of
//! an already-initialised `OnceLock`.
//!
//! `CUTOVER_FAILPOINT_PAUSE=<name>=<ms>` instead pauses the task that
//! reaches the point for that long (once), after writing
//! `cutover failpoint <name> paused` to stderr.
//!
//! `CUTOVER_FAILPOINT_CUT=<name>` makes a point that can lose an answer
//! (`cut`) report it lost, once: the work was done, the caller is told the
//! connection was cut.
//!
//! Points:
//! - `pg.before_commit`: a PostgreSQL write transaction is about to send
//!   its COMMIT (in `live`, the order lock is held shared).
//! - `pg.after_commit`: a PostgreSQL write's COMMIT succeeded and its
//!   answer has not reached the caller (pause, cut).
//! - `dual.after_authoritative_commit`: a dual write committed on the
//!   authoritative side (its outbox entry with it), before the secondary apply.
//! - `dual.after_sqlite_apply`: in `live`/`rampdown`, PostgreSQL's images
//!   are applied inside the held SQLite transaction, not committed yet.
//! - `dual.before_copy_to_postgres`: a copy to PostgreSQL read the row from
//!   SQLite and has not written it yet.
//! - `dual.before_copy_to_sqlite`: a copy to SQLite holds the image a
//!   PostgreSQL write committed and has not written it yet.
//!
//! Gates ([`arm_gate`]), for tests that run the code in their own process:
//! the first task to reach an armed gate waits there until the test
//! releases it. Gate points:
//! - `backfill.after_read`: a batch was read from SQLite, nothing loaded.
//! - `backfill.before_commit`: a batch's rows are in PostgreSQL, not committed.
//! - `backfill.before_recheck`: a batch committed; its keys are not yet
//!   checked against SQLite again.

use std::io::Write;
use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Stops here forever when `CUTOVER_FAILPOINT` names this point.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("CUTOVER_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "cutover failpoint {name} reached");
        let _ = err.flush();
        drop(err);
        loop {
            std::thread::park();
        }
    }
}

static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Pauses here (once per process) when `CUTOVER_FAILPOINT_PAUSE` names this point.
pub async fn pause(name: &str) {
    let armed = PAUSE.get_or_init(|| {
        let v = std::env::var("CUTOVER_FAILPOINT_PAUSE").ok()?;
        let (n, ms) = v.rsplit_once('=')?;
        Some((n.to_string(), ms.parse().ok()?))
    });
    if let Some((n, ms)) = armed {
        if n == name && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "cutover failpoint {name} paused");
                let _ = err.flush();
            }
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
        }
    }
}

static CUT: OnceLock<Option<String>> = OnceLock::new();
static CUT_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True (once per process) when `CUTOVER_FAILPOINT_CUT` names this point:
/// the caller then reports its answer lost, as a cut connection would.
pub fn cut(name: &str) -> bool {
    let armed = CUT.get_or_init(|| std::env::var("CUTOVER_FAILPOINT_CUT").ok());
    if armed.as_deref() == Some(name) && !CUT_DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "cutover failpoint {name} cut");
        let _ = err.flush();
        return true;
    }
    false
}

/// A gate armed by a test: see [`arm_gate`].
pub struct Gate {
    name: String,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
    used: std::sync::atomic::AtomicBool,
}

impl Gate {
    /// Waits until a task reaches the gate.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the task waiting at the gate go on (or the next to reach it).
    pub fn release(&self) {
        self.release.notify_one();
    }
}

static GATES: std::sync::Mutex<Vec<std::sync::Arc<Gate>>> = std::sync::Mutex::new(Vec::new());
static ANY_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Arms the gate `name`: the first task to reach it (see [`gate`]) waits
/// there until [`Gate::release`]. Later arrivals pass.
pub fn arm_gate(name: &str) -> std::sync::Arc<Gate> {
    let g = std::sync::Arc::new(Gate {
        name: name.to_string(),
        reached: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
        used: std::sync::atomic::AtomicBool::new(false),
    });
    let mut gates = GATES.lock().expect("gates");
    gates.retain(|x| x.name != name);
    gates.push(g.clone());
    ANY_GATE.store(true, std::sync::atomic::Ordering::SeqCst);
    g
}

/// Waits here when a test armed the gate `name` (once); otherwise costs one
/// atomic load.
pub async fn gate(name: &str) {
    if !ANY_GATE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let g = {
        let gates = GATES.lock().expect("gates");
        gates.iter().find(|g| g.name == name).cloned()
    };
    if let Some(g) = g {
        if !g.used.swap(true, std::sync::atomic::Ordering::SeqCst) {
            g.reached.notify_one();
            g.release.notified().await;
        }
    }
}
