//! A legacy database for tests, benches and the demo (`cutover generate`).
//!
//! Writes a new SQLite file in the legacy schema and fills the ten tables the
//! way the old application did: numeric Twitter ids, tweets with emoji, RTL
//! text and combining marks, JSON in TEXT columns, timestamps in every format
//! the application ever wrote, referral counters consistent with their log,
//! jobs in every status with their chunks. With `dirty > 0` a fraction of the
//! rows carries one messy value each (docs/DESIGN.md §5), and the report says exactly
//! how many of each kind were planted in which column, so the audit and the
//! backfill can be checked against it. The first rows of each table take
//! that table's messy kinds in turn, so every kind appears even in a small
//! file; after that each row is messy with probability `dirty`.
//!
//! Everything is written in one transaction through prepared statements and
//! drawn from one seeded `StdRng`, so a seed always gives the same rows; the
//! secondary indexes are built once at the end. A million tweets take
//! seconds, not minutes.
//!
//! Two kinds cannot survive SQLite's column affinity: integer text (`'42'`)
//! and integral reals (`42.0`) written to an INTEGER column are stored as the
//! integer 42. They are planted as the application would have written them and
//! reported, but the file (and so the audit) holds integers. Likewise an
//! integer user id would become text in the TEXT-affinity `users.id`, so the
//! key collision is planted as the text `'12345'` next to the blob
//! `x'3132333435'`, which SQLite keeps apart and PostgreSQL cannot.

mod messy;
mod rows;
mod values;

pub use messy::{GenerateReport, Messy, Planted};

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::tables;

use rows::Gen;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Number of users.
    pub users: u64,
    /// Number of tweets (spread over the users, a few users write most).
    pub tweets: u64,
    /// Fraction (0..=1) of rows carrying one messy value.
    pub dirty: f64,
    /// Seed of the random generator; the same seed gives the same file content.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            users: 100,
            tweets: 1000,
            dirty: 0.0,
            seed: 1,
        }
    }
}

/// Creates `path` (which must not exist) with the legacy schema and fills it.
pub fn generate(path: &Path, options: &GenerateOptions) -> Result<GenerateReport> {
    if !(0.0..=1.0).contains(&options.dirty) {
        return Err(Error::InvalidArgument(format!(
            "dirty fraction {} is outside 0..=1",
            options.dirty
        )));
    }
    if options.users == 0 && options.tweets > 0 {
        return Err(Error::InvalidArgument(
            "tweets need at least one user (--users 0 with --tweets > 0)".into(),
        ));
    }
    if path.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; generate writes a new file",
            path.display()
        )));
    }
    let result = fill_file(path, options);
    if result.is_err() {
        // A half-written file would only be refused by the next run.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn fill_file(path: &Path, options: &GenerateOptions) -> Result<GenerateReport> {
    let mut conn = Connection::open(path)?;
    // The file is new and private until generate returns: no journal needed,
    // and without one a million rows go in several times faster. rusqlite's
    // bundled SQLite enforces foreign keys by default; the legacy application
    // never did, and orphans are part of what is generated.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA cache_size = -200000;",
    )?;
    conn.execute_batch(crate::sqlite::LEGACY_SCHEMA)?;
    // Secondary indexes are built once at the end (a sort) rather than kept
    // up to date row by row; running the schema again recreates them with
    // the very same SQL text, so the file's schema is the legacy one.
    for index in legacy_indexes(&conn)? {
        conn.execute_batch(&format!("DROP INDEX {index}"))?;
    }
    let tx = conn.transaction()?;
    let mut g = Gen {
        rng: StdRng::seed_from_u64(options.seed),
        dirty: options.dirty,
        planted: BTreeMap::new(),
        rows: BTreeMap::new(),
        forced: BTreeMap::new(),
        text: String::new(),
    };
    g.fill(&tx, options)?;
    tx.commit()?;
    conn.execute_batch(crate::sqlite::LEGACY_SCHEMA)?;
    conn.execute_batch("PRAGMA journal_mode = DELETE;")?;
    drop(conn);

    Ok(GenerateReport {
        rows: tables::ALL
            .iter()
            .map(|t| (t.name, g.rows.get(t.name).copied().unwrap_or(0)))
            .collect(),
        planted: g
            .planted
            .into_iter()
            .map(|((table, column, kind), count)| Planted {
                table,
                column,
                kind,
                count,
            })
            .collect(),
    })
}

/// The explicitly created indexes of the legacy schema (not the automatic
/// ones behind PRIMARY KEY and UNIQUE).
fn legacy_indexes(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}
