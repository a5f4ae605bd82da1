//! What a legacy file holds, and what the backfill would do with it
//! (`cutover audit`).
//!
//! The audit reads the SQLite file (opened read-only) once, table by table
//! in `tables::ALL` order, streaming rows in rowid batches. Each row is judged by
//! `row::convert_row`, the very function the backfill uses, under both
//! policies, and then checked the way PostgreSQL will check it: its parents
//! must have been accepted (a child of a rejected or missing parent is an
//! `orphan`), and a key that converts to the same value as an earlier
//! accepted row's (the text `'12345'` and the blob `x'3132333435'`) is a
//! `unique_violation`. Rejects are attributed in that order: the row's own
//! values first, then its parents, then uniqueness.
//!
//! Memory stays flat apart from the key sets of referenced tables (users,
//! referral codes, jobs) and the few key values stored in a non-canonical
//! type, which are the only ones that can collide after conversion.
//!
//! It also lists what the file holds that `tables::ALL` does not describe
//! ([`drift`]): tables of its own and columns added to the ten tables. Nothing
//! of them would be copied, so the backfill refuses until the operator names
//! each in `--ignore-unknown` ([`unacknowledged`], [`refusal`]); the audit
//! takes the same flag and exits 1 while any is left unnamed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::convert::{self, Raw, RejectReason};
use crate::error::{Error, Result};
use crate::row::{self, Cell, Policy};
use crate::tables::{self, Column, Kind, Table};

/// Rows read per statement.
const BATCH: usize = 5000;

/// The policies the audit predicts, in report order.
pub const POLICIES: [Policy; 2] = [Policy::RejectRow, Policy::NullAndRecord];

/// The whole audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// The file audited.
    pub path: String,
    /// One entry per table, in `tables::ALL` order.
    pub tables: Vec<TableAudit>,
    /// Tables and columns the schema does not describe (see [`drift`]).
    pub unknown: Vec<Unknown>,
}

/// A table or a column of the legacy file that `tables::ALL` does not
/// describe: nothing of it is copied (docs/DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unknown {
    /// The name `--ignore-unknown` takes: `notes` for a table,
    /// `users.nickname` for a column.
    pub name: String,
    /// `table` or `column`.
    pub kind: &'static str,
    /// The unknown table, or the known table that holds the unknown column.
    pub table: String,
    /// The unknown column; `None` for a table.
    pub column: Option<String>,
    /// Rows of the table.
    pub rows: u64,
    /// For a column: rows where it is not NULL; `None` for a table.
    pub non_null: Option<u64>,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.rows == 1 { "" } else { "s" };
        match self.non_null {
            None => write!(f, "table `{}` ({} row{plural})", self.name, self.rows),
            Some(n) => write!(
                f,
                "column `{}` ({n} of {} row{plural} non-NULL)",
                self.name, self.rows
            ),
        }
    }
}

/// True for the tables the legacy file holds besides the application's:
/// SQLite's own (`sqlite_sequence`, `sqlite_stat1`, ...) and cutover's
/// (`_cutover_outbox`, `_cutover_applied`, `_cutover_authority`, ...).
pub fn is_internal_table(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("sqlite_") || lower.starts_with("_cutover_")
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// What the legacy file holds that `tables::ALL` does not describe: its
/// tables that are none of the ten (apart from SQLite's and cutover's own,
/// see [`is_internal_table`]), by name, with their row counts; then the
/// columns of the ten beyond the schema's (`PRAGMA table_info`), in table
/// and column order, with the table's rows and the column's non-NULL
/// values. Views and indexes hold no data and are not listed. SQLite
/// compares names without regard to ASCII case, and so does this.
///
/// The audit and the backfill both call this: one rule for what is unknown.
pub fn drift(conn: &Connection) -> Result<Vec<Unknown>> {
    drift_from(conn, &tables::TWITTER)
}

/// As [`drift`], against `schema`'s tables.
pub fn drift_from(conn: &Connection, schema: &tables::Schema) -> Result<Vec<Unknown>> {
    let names: Vec<String> = {
        let mut st =
            conn.prepare("SELECT name FROM main.sqlite_schema WHERE type = 'table' ORDER BY name")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::new();
    for name in &names {
        if is_internal_table(name)
            || schema
                .tables
                .iter()
                .any(|t| t.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let rows: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quoted(name)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| Error::Config(format!("counting the rows of table `{name}`: {e}")))?;
        out.push(Unknown {
            name: name.clone(),
            kind: "table",
            table: name.clone(),
            column: None,
            rows: rows as u64,
            non_null: None,
        });
    }
    for t in schema.tables {
        // A missing table is the audit's own complaint, not drift.
        let Some(actual) = names.iter().find(|n| n.eq_ignore_ascii_case(t.name)) else {
            continue;
        };
        let extra: Vec<String> = {
            let mut st =
                conn.prepare("SELECT name FROM pragma_table_info(?1, 'main') ORDER BY cid")?;
            let rows = st.query_map([actual], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter(|c| !t.columns.iter().any(|k| k.name.eq_ignore_ascii_case(c)))
                .collect()
        };
        if extra.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT count(*), {} FROM main.{}",
            extra
                .iter()
                .map(|c| format!("count({})", quoted(c)))
                .collect::<Vec<_>>()
                .join(", "),
            quoted(actual)
        );
        let counts: Vec<i64> =
            conn.query_row(&sql, [], |r| (0..=extra.len()).map(|i| r.get(i)).collect())?;
        for (c, non_null) in extra.iter().zip(&counts[1..]) {
            out.push(Unknown {
                name: format!("{}.{c}", t.name),
                kind: "column",
                table: t.name.to_string(),
                column: Some(c.clone()),
                rows: counts[0] as u64,
                non_null: Some(*non_null as u64),
            });
        }
    }
    Ok(out)
}

/// Of `unknown`, those `named` (the operator's `--ignore-unknown`) leaves
/// unacknowledged. A name that is none of them is an error, so that a typo
/// never passes for an acknowledgement.
pub fn unacknowledged<'a>(unknown: &'a [Unknown], named: &[String]) -> Result<Vec<&'a Unknown>> {
    let named: Vec<&str> = named
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    let stray: Vec<String> = named
        .iter()
        .filter(|n| !unknown.iter().any(|u| u.name.eq_ignore_ascii_case(n)))
        .map(|n| format!("`{n}`"))
        .collect();
    if !stray.is_empty() {
        let held = if unknown.is_empty() {
            "it holds none".to_string()
        } else {
            let names: Vec<String> = unknown.iter().map(|u| format!("`{}`", u.name)).collect();
            format!("it holds {}", names.join(", "))
        };
        return Err(Error::InvalidArgument(format!(
            "--ignore-unknown names {}, which the legacy file does not hold as a table or \
             column the schema does not describe ({held})",
            stray.join(", ")
        )));
    }
    Ok(unknown
        .iter()
        .filter(|u| !named.iter().any(|n| u.name.eq_ignore_ascii_case(n)))
        .collect())
}

/// Why the backfill refuses a file holding `unacknowledged` (not empty):
/// each named, with what to do.
pub fn refusal(unacknowledged: &[&Unknown]) -> String {
    let listed: Vec<String> = unacknowledged.iter().map(|u| u.to_string()).collect();
    let names: Vec<&str> = unacknowledged.iter().map(|u| u.name.as_str()).collect();
    format!(
        "the legacy file holds what the schema does not describe: {}; nothing of it would be \
         copied. Name them in --ignore-unknown to go on without them (--ignore-unknown {})",
        listed.join(", "),
        names.join(",")
    )
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableAudit {
    /// Table name.
    pub table: &'static str,
    /// Rows in the source.
    pub rows: u64,
    /// Per column, in the table's order.
    pub columns: Vec<ColumnAudit>,
    /// Rows whose parent key is absent from the source, by foreign-key column.
    pub orphans: BTreeMap<&'static str, u64>,
    /// What each policy would copy and reject (one per entry of [`POLICIES`]).
    pub predicted: Vec<Prediction>,
}

/// One column's values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnAudit {
    /// Column name.
    pub column: &'static str,
    /// The column's kind on the PostgreSQL side.
    pub kind: &'static str,
    /// Values by SQLite `typeof`.
    pub types: BTreeMap<&'static str, u64>,
    /// Timestamp columns: valid values by form.
    pub timestamp_formats: BTreeMap<&'static str, u64>,
    /// Valid values stored in another type than the column's usual one
    /// (boolean words, blobs of UTF-8 text, ...), by `typeof`.
    pub converted_from: BTreeMap<&'static str, u64>,
    /// Invalid values by reject reason (including NULL in NOT NULL).
    pub invalid: BTreeMap<&'static str, u64>,
}

/// What one policy would do with a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// `reject-row` or `null-and-record`.
    pub policy: &'static str,
    /// Rows that would be copied.
    pub copied: u64,
    /// Rows that would be rejected.
    pub rejected: u64,
    /// Rejected rows by the reason recorded (the first problem found).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Values that would be stored as NULL and recorded, by reason.
    pub nulled_by_reason: BTreeMap<&'static str, u64>,
}

impl AuditReport {
    /// One table's audit.
    pub fn table(&self, name: &str) -> Option<&TableAudit> {
        self.tables.iter().find(|t| t.table == name)
    }

    /// The unknown tables and columns `named` leaves unacknowledged (see
    /// [`unacknowledged`]).
    pub fn unacknowledged(&self, named: &[String]) -> Result<Vec<&Unknown>> {
        unacknowledged(&self.unknown, named)
    }
}

impl TableAudit {
    /// One column's audit.
    pub fn column(&self, name: &str) -> Option<&ColumnAudit> {
        self.columns.iter().find(|c| c.column == name)
    }

    /// The prediction under `policy`.
    pub fn prediction(&self, policy: Policy) -> &Prediction {
        self.predicted
            .iter()
            .find(|p| p.policy == policy.as_str())
            .expect("every policy is predicted")
    }
}

impl ColumnAudit {
    /// Invalid values of `reason` in this column.
    pub fn invalid_count(&self, reason: RejectReason) -> u64 {
        self.invalid.get(reason.as_str()).copied().unwrap_or(0)
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Text => "text",
        Kind::Timestamp => "timestamp",
        Kind::Bool => "boolean",
        Kind::Json => "json",
        Kind::Int => "integer",
        Kind::Status => "status",
    }
}

/// The `typeof`s a column's values normally have; others are conversions.
fn canonical(k: Kind, type_name: &str) -> bool {
    match k {
        Kind::Text | Kind::Json | Kind::Status => type_name == "text",
        Kind::Timestamp => type_name == "text" || type_name == "integer",
        Kind::Bool | Kind::Int => type_name == "integer",
    }
}

/// A converted key as text, the way PostgreSQL compares it.
fn key_of(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Text(s) => Some(s.clone()),
        Cell::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn convert_key(column: &'static Column, raw: Raw<'_>) -> Option<String> {
    row::convert_value(column, raw)
        .ok()
        .as_ref()
        .and_then(key_of)
}

/// Per policy: the accepted keys of referenced tables, so a child of a
/// rejected parent is predicted `orphan`.
#[derive(Default)]
struct PolicyState {
    accepted: HashMap<&'static str, HashSet<String>>,
}

/// Audits the legacy file at `path` without changing it.
pub fn audit(path: &Path) -> Result<AuditReport> {
    audit_schema(path, &tables::TWITTER)
}

/// As [`audit`], against another application's tables.
pub fn audit_schema(path: &Path, schema: &tables::Schema) -> Result<AuditReport> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Config(format!("cannot open {} read-only: {e}", path.display())))?;
    for t in schema.tables {
        let exists: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [t.name],
            |r| r.get(0),
        )?;
        if exists == 0 {
            return Err(Error::Config(format!(
                "{}: table {} is missing; is this the application's legacy database?",
                path.display(),
                t.name
            )));
        }
    }

    let unknown = drift_from(&conn, schema)?;

    let referenced: HashSet<&str> = schema
        .tables
        .iter()
        .flat_map(|t| t.foreign_keys.iter().map(|f| f.parent_table))
        .collect();
    let mut present: HashMap<&'static str, HashSet<String>> = HashMap::new();
    let mut states: [PolicyState; 2] = Default::default();
    let mut out = Vec::new();
    for t in schema.tables {
        out.push(audit_table(
            &conn,
            t,
            &referenced,
            &mut present,
            &mut states,
        )?);
    }
    Ok(AuditReport {
        path: path.display().to_string(),
        tables: out,
        unknown,
    })
}

/// Key or unique columns whose non-canonical values convert to `value`;
/// only these can collide in PostgreSQL while distinct in SQLite.
fn contested_values(conn: &Connection, t: &'static Table) -> Result<Vec<(usize, HashSet<String>)>> {
    let mut out = Vec::new();
    for name in std::iter::once(&t.primary_key).chain(t.unique.iter()) {
        let (i, column) = t
            .columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == *name)
            .expect("key columns are columns");
        let canon = if column.kind == Kind::Int {
            "integer"
        } else {
            "text"
        };
        let sql = format!(
            "SELECT {name} FROM {} WHERE typeof({name}) NOT IN ('{canon}', 'null')",
            t.name
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut set = HashSet::new();
        while let Some(r) = rows.next()? {
            if let Some(k) = convert_key(column, Raw::from(r.get_ref(0)?)) {
                set.insert(k);
            }
        }
        if !set.is_empty() {
            out.push((i, set));
        }
    }
    Ok(out)
}

fn audit_table(
    conn: &Connection,
    t: &'static Table,
    referenced: &HashSet<&str>,
    present: &mut HashMap<&'static str, HashSet<String>>,
    states: &mut [PolicyState; 2],
) -> Result<TableAudit> {
    let mut columns: Vec<ColumnAudit> = t
        .columns
        .iter()
        .map(|c| ColumnAudit {
            column: c.name,
            kind: kind_name(c.kind),
            types: BTreeMap::new(),
            timestamp_formats: BTreeMap::new(),
            converted_from: BTreeMap::new(),
            invalid: BTreeMap::new(),
        })
        .collect();
    let mut orphans: BTreeMap<&'static str, u64> =
        t.foreign_keys.iter().map(|f| (f.column, 0)).collect();
    let key_index = t.key_index();
    let fk_index: Vec<(usize, &'static str)> = t
        .foreign_keys
        .iter()
        .map(|f| {
            (
                t.columns
                    .iter()
                    .position(|c| c.name == f.column)
                    .expect("fk column"),
                f.parent_table,
            )
        })
        .collect();
    let contested = contested_values(conn, t)?;
    let mut claims: [HashSet<(usize, String)>; 2] = Default::default();
    let is_parent = referenced.contains(t.name);
    let mut predictions: Vec<Prediction> = POLICIES
        .iter()
        .map(|p| Prediction {
            policy: p.as_str(),
            copied: 0,
            rejected: 0,
            rejected_by_reason: BTreeMap::new(),
            nulled_by_reason: BTreeMap::new(),
        })
        .collect();

    // Batches by rowid, each its own statement: between batches no read
    // lock is held, so the application keeps writing to a live file while
    // a large table is audited (at the price of a snapshot per batch).
    let sql = format!(
        "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}",
        t.column_list(),
        t.name
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut count = 0u64;
    let mut last = i64::MIN;
    loop {
        let mut in_batch = 0;
        let mut rows = stmt.query([last])?;
        while let Some(r) = rows.next()? {
            count += 1;
            in_batch += 1;
            last = r.get(0)?;
            let raws = (0..t.columns.len())
                .map(|i| r.get_ref(i + 1).map(Raw::from))
                .collect::<rusqlite::Result<Vec<_>>>()?;

            // The default policy's verdict also gives every bad value: under
            // RejectRow each problem is fatal and all of them are returned.
            let strict = row::convert_row(t, &raws, Policy::RejectRow);
            let bad_columns: Vec<&'static str> = match &strict {
                Ok(_) => Vec::new(),
                Err(errs) => errs.iter().map(|e| e.column).collect(),
            };
            if let Err(errs) = &strict {
                for e in errs {
                    let i = t
                        .columns
                        .iter()
                        .position(|c| c.name == e.column)
                        .expect("column");
                    *columns[i].invalid.entry(e.reason.as_str()).or_default() += 1;
                }
            }
            for (i, (c, raw)) in t.columns.iter().zip(&raws).enumerate() {
                let stats = &mut columns[i];
                *stats.types.entry(raw.type_name()).or_default() += 1;
                if *raw == Raw::Null || bad_columns.contains(&c.name) {
                    continue;
                }
                if c.kind == Kind::Timestamp {
                    if let Some(f) = convert::timestamp_format(*raw) {
                        *stats.timestamp_formats.entry(f.as_str()).or_default() += 1;
                    }
                }
                if !canonical(c.kind, raw.type_name()) {
                    *stats.converted_from.entry(raw.type_name()).or_default() += 1;
                }
            }

            if is_parent {
                if let Some(k) = convert_key(&t.columns[key_index], raws[key_index]) {
                    present.entry(t.name).or_default().insert(k);
                }
            }
            for &(i, parent) in &fk_index {
                if raws[i] == Raw::Null {
                    continue;
                }
                if let Some(k) = convert_key(&t.columns[i], raws[i]) {
                    if !present.get(parent).is_some_and(|s| s.contains(&k)) {
                        *orphans.get_mut(t.columns[i].name).expect("fk column") += 1;
                    }
                }
            }

            for (p, policy) in POLICIES.iter().enumerate() {
                // RejectRow and NullAndRecord only differ on rows with a bad value.
                let verdict = match (&strict, policy) {
                    (Ok(c), _) => Ok(c.clone()),
                    (Err(e), Policy::RejectRow) => Err(e.clone()),
                    (Err(_), _) => row::convert_row(t, &raws, *policy),
                };
                let pred = &mut predictions[p];
                let reject = |pred: &mut Prediction, reason: RejectReason| {
                    pred.rejected += 1;
                    *pred.rejected_by_reason.entry(reason.as_str()).or_default() += 1;
                };
                let converted = match verdict {
                    Err(errs) => {
                        reject(pred, errs[0].reason);
                        continue;
                    }
                    Ok(c) => c,
                };
                let state = &mut states[p];
                let orphan =
                    fk_index
                        .iter()
                        .any(|&(i, parent)| match key_of(&converted.cells[i]) {
                            None => false,
                            Some(k) => !state.accepted.get(parent).is_some_and(|s| s.contains(&k)),
                        });
                if orphan {
                    reject(pred, RejectReason::Orphan);
                    continue;
                }
                let mine: Vec<(usize, String)> = contested
                    .iter()
                    .filter_map(|(i, set)| {
                        key_of(&converted.cells[*i])
                            .filter(|k| set.contains(k))
                            .map(|k| (*i, k))
                    })
                    .collect();
                if mine.iter().any(|c| claims[p].contains(c)) {
                    reject(pred, RejectReason::UniqueViolation);
                    continue;
                }
                claims[p].extend(mine);
                pred.copied += 1;
                for e in &converted.nulled {
                    *pred.nulled_by_reason.entry(e.reason.as_str()).or_default() += 1;
                }
                if is_parent {
                    if let Some(k) = key_of(&converted.cells[key_index]) {
                        state.accepted.entry(t.name).or_default().insert(k);
                    }
                }
            }
        }
        if in_batch < BATCH {
            break;
        }
    }
    Ok(TableAudit {
        table: t.name,
        rows: count,
        columns,
        orphans,
        predicted: predictions,
    })
}

fn counts(m: &BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit of {}", self.path)?;
        if !self.unknown.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "not described by the schema (nothing of it is copied; the backfill refuses \
                 until each is named in --ignore-unknown):"
            )?;
            for u in &self.unknown {
                writeln!(f, "  {u}")?;
            }
        }
        for t in &self.tables {
            writeln!(f)?;
            writeln!(f, "{} ({} rows)", t.table, t.rows)?;
            writeln!(
                f,
                "  {:<22} {:<9} {:<34} {:<44} invalid",
                "column", "kind", "typeof", "valid forms"
            )?;
            for c in &t.columns {
                let mut forms = c.timestamp_formats.clone();
                for (k, v) in &c.converted_from {
                    let label = match *k {
                        "text" => "from text",
                        "real" => "from real",
                        "blob" => "from blob",
                        "integer" => "from integer",
                        _ => "from null",
                    };
                    *forms.entry(label).or_default() += v;
                }
                writeln!(
                    f,
                    "  {:<22} {:<9} {:<34} {:<44} {}",
                    c.column,
                    c.kind,
                    counts(&c.types),
                    counts(&forms),
                    counts(&c.invalid)
                )?;
            }
            let missing: BTreeMap<&'static str, u64> = t
                .orphans
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, v)| (*k, *v))
                .collect();
            if !t.orphans.is_empty() {
                writeln!(f, "  parent missing in the source: {}", counts(&missing))?;
            }
            for p in &t.predicted {
                write!(
                    f,
                    "  {:<16} copied {:>9}, rejected {:>7}",
                    format!("{}:", p.policy),
                    p.copied,
                    p.rejected
                )?;
                if p.rejected > 0 {
                    write!(f, " ({})", counts(&p.rejected_by_reason))?;
                }
                if !p.nulled_by_reason.is_empty() {
                    write!(f, "; nulled {}", counts(&p.nulled_by_reason))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
