//! Fault injection for tests: a named point in the code where the process
//! stops dead, so a test can kill it there with SIGKILL.
//!
//! Set `CUTOVER_FAILPOINT` to a point's name; when the process reaches it,
//! it writes `cutover failpoint <name> reached` to stderr and blocks that
//! thread forever. Unset (always, outside tests) a point costs one load of
//! an already-initialised `OnceLock`.
//!
//! Points:
//! - `dual.after_authoritative_commit`: a dual write committed on the
//!   authoritative side (its outbox entry with it), before the secondary apply.

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
