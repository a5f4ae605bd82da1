//! Row-level comparison inside a range whose checksums differ.
//!
//! Rows are matched by key and compared on domain values (JSON
//! semantically, timestamps at microseconds), so a rendering difference that
//! upset the checksum never shows up as divergence. Each divergent key gets
//! its kind and, for the repair, the authoritative side's image.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::canonical::SortKey;
use super::side::{self, LegacyRow};
use super::{Divergence, DivergenceKind, Fix, TableReport};
use crate::error::Backend;
use crate::row::{convert_row, Cell, OwnedRaw, Policy};
use crate::tables::Table;

/// Semantic JSON equality: numbers by exact decimal value (`1` = `1.0`,
/// never through a float: a rounded number differs), objects by key.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            crate::convert::decimal_value(x) == crate::convert::decimal_value(y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn cell_eq(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Json(x), Cell::Json(y)) => json_eq(x, y),
        _ => a == b,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn diff_rows(
    table: &'static Table,
    legacy: Vec<LegacyRow>,
    target: Vec<(SortKey, Vec<Cell>)>,
    rejects: &HashMap<String, bool>,
    skip: &BTreeSet<SortKey>,
    authority: Backend,
    max_listed: usize,
    report: &mut TableReport,
    fixes: &mut Vec<Fix>,
) {
    let mut both: BTreeMap<SortKey, (Option<LegacyRow>, Option<Vec<Cell>>)> = BTreeMap::new();
    for l in legacy {
        let k = l.sort.clone();
        both.entry(k).or_default().0 = Some(l);
    }
    for (k, cells) in target {
        both.entry(k).or_default().1 = Some(cells);
    }
    let sqlite_auth = authority == Backend::Sqlite;
    let record = |report: &mut TableReport, d: Divergence| record(report, d, max_listed);
    for (sort, (l, p)) in both {
        match (l, p) {
            // PostgreSQL's row of this key is the copy of a blob-keyed row
            // with the same bytes (checked with that row); this row lost the
            // key to it and must be in the ledger as rejected.
            (Some(l), Some(_)) if skip.contains(&sort) => {
                if rejects.get(&l.key_text) == Some(&false) {
                    report.rejected_rows += 1;
                    if report.rejected.len() < max_listed {
                        report.rejected.push(l.key_text);
                    }
                } else {
                    record(
                        report,
                        Divergence {
                            key: l.key_text,
                            kind: if sqlite_auth {
                                DivergenceKind::Missing
                            } else {
                                DivergenceKind::Extra
                            },
                            columns: Vec::new(),
                            detail: Some(
                                "PostgreSQL holds this key for a blob-keyed SQLite row with the same bytes, \
                                 and no entry in cutover.rejects accounts for this row"
                                    .to_string(),
                            ),
                        },
                    );
                }
            }
            (Some(l), Some(p)) => {
                let raws = l.raw_values();
                // A row copied under null-and-record holds NULL where its
                // bad value was: judge it under the same policy.
                let policy = if rejects.get(&l.key_text) == Some(&true) {
                    Policy::NullAndRecord
                } else {
                    Policy::RejectRow
                };
                match convert_row(table, &raws, policy) {
                    Ok(conv) => {
                        let columns: Vec<String> = table
                            .columns
                            .iter()
                            .zip(conv.cells.iter().zip(&p))
                            .filter(|(_, (a, b))| !cell_eq(a, b))
                            .map(|(c, _)| c.name.to_string())
                            .collect();
                        if columns.is_empty() {
                            continue;
                        }
                        fixes.push(Fix::Upsert(table, if sqlite_auth { conv.cells } else { p }));
                        record(
                            report,
                            Divergence {
                                key: l.key_text,
                                kind: DivergenceKind::Field,
                                columns,
                                detail: None,
                            },
                        );
                    }
                    Err(errs) => {
                        let detail = errs
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ");
                        if !sqlite_auth {
                            fixes.push(Fix::Upsert(table, p));
                        }
                        record(
                            report,
                            Divergence {
                                key: l.key_text,
                                kind: DivergenceKind::Field,
                                columns: errs.iter().map(|e| e.column.to_string()).collect(),
                                detail: Some(format!("the SQLite row does not convert: {detail}")),
                            },
                        );
                    }
                }
            }
            (Some(l), None) => {
                if rejects.get(&l.key_text) == Some(&false) {
                    report.rejected_rows += 1;
                    if report.rejected.len() < max_listed {
                        report.rejected.push(l.key_text);
                    }
                    continue;
                }
                if sqlite_auth {
                    let raws = l.raw_values();
                    let detail = match convert_row(table, &raws, Policy::RejectRow) {
                        Ok(conv) => {
                            fixes.push(Fix::Upsert(table, conv.cells));
                            None
                        }
                        Err(errs) => Some(format!(
                            "the SQLite row does not convert and is not in cutover.rejects: {}",
                            errs.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("; ")
                        )),
                    };
                    record(
                        report,
                        Divergence {
                            key: l.key_text,
                            kind: DivergenceKind::Missing,
                            columns: Vec::new(),
                            detail,
                        },
                    );
                } else {
                    let key_idx = table.key_index();
                    fixes.push(Fix::Delete(table, l.raws[key_idx].clone()));
                    record(
                        report,
                        Divergence {
                            key: l.key_text,
                            kind: DivergenceKind::Extra,
                            columns: Vec::new(),
                            detail: None,
                        },
                    );
                }
            }
            // Held in SQLite under a blob key: checked with that row.
            (None, Some(_)) if skip.contains(&sort) => {}
            (None, Some(p)) => {
                let key = side::sort_key_text(&sort);
                let kind = if sqlite_auth {
                    let raw = match &sort {
                        SortKey::Int(i) => OwnedRaw::Integer(*i),
                        SortKey::Bytes(b) => OwnedRaw::Text(b.clone()),
                    };
                    fixes.push(Fix::Delete(table, raw));
                    DivergenceKind::Extra
                } else {
                    fixes.push(Fix::Upsert(table, p));
                    DivergenceKind::Missing
                };
                record(
                    report,
                    Divergence {
                        key,
                        kind,
                        columns: Vec::new(),
                        detail: None,
                    },
                );
            }
            (None, None) => {}
        }
    }
}

/// Counts a divergence and lists it (the first `max_listed`).
pub(crate) fn record(report: &mut TableReport, d: Divergence, max_listed: usize) {
    match d.kind {
        DivergenceKind::Missing => report.missing += 1,
        DivergenceKind::Extra => report.extra += 1,
        DivergenceKind::Field => report.field += 1,
    }
    if report.divergences.len() < max_listed {
        report.divergences.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_equality_is_semantic() {
        assert!(json_eq(
            &json!({"a": 1, "b": [1.0]}),
            &json!({"b": [1], "a": 1.0})
        ));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": null})));
    }
}
