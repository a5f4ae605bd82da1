//! A throwaway PostgreSQL server from the local binaries, that can be
//! stopped and started again on the same data (the demo restarts it to show
//! that no call fails while PostgreSQL is away; fault tests do the same).
//!
//! PostgreSQL refuses to run as root, so when we are root the server runs as
//! the `postgres` system user, which owns its temporary directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::settings::PgSettings;

/// A running (or stopped) throwaway server. Stopped and removed on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    running: bool,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: context.to_string(),
        source,
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb` (or `PG_BIN`).
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(io("looking for PostgreSQL binaries in /usr/lib/postgresql"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        Error::Config("no PostgreSQL binaries found under /usr/lib/postgresql; install postgresql or set PG_BIN".into())
    })
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres"))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl PgServer {
    /// Initialises a new cluster in a temporary directory and starts it.
    pub fn start_new() -> Result<PgServer> {
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("cutover-pg-")
            .tempdir()
            .map_err(io("creating the server directory"))?;
        let user = if is_root() {
            let u = postgres_user().ok_or_else(|| {
                Error::Config(
                    "running as root needs the postgres system user to run PostgreSQL".into(),
                )
            })?;
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.0, u.1))
                .arg(dir.path())
                .status()
                .map_err(io("chown of the server directory"))?;
            if !st.success() {
                return Err(Error::Config(
                    "cannot hand the server directory to the postgres user".into(),
                ));
            }
            Some(u)
        } else {
            None
        };
        let mut s = PgServer {
            dir,
            bin,
            port: free_port()?,
            user,
            running: false,
        };
        s.run(
            "initdb",
            &[
                "-D",
                &s.data().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        s.start()?;
        Ok(s)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(io(tool))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: connections are cut, as in an outage).
    pub fn stop(&mut self) -> Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Settings for `database` on this server (user postgres, trust auth).
    pub fn settings(&self, database: &str) -> PgSettings {
        PgSettings::from_parts("127.0.0.1", self.port, "postgres", None, database)
    }

    /// The server's directory (data and log).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}
