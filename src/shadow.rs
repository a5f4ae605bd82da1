//! Shadow reads: compare what both sides answer, at the domain level.
//!
//! Results are compared as serialized domain values, so JSON compares
//! semantically (objects by key) and timestamps at the microsecond the
//! domain keeps. Result sets are matched by their key field; order matters
//! only where the query orders. A difference is `missing` (the
//! authoritative side has it, the other not), `extra` (the other way round)
//! or `field` (naming the field). The comparator keeps the last N mismatches
//! for inspection and can be told to panic on one (tests).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// Kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MismatchKind {
    /// Present on the authoritative side only.
    Missing,
    /// Present on the other side only.
    Extra,
    /// Present on both, a field differs.
    Field,
}

impl MismatchKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Missing => "missing",
            MismatchKind::Extra => "extra",
            MismatchKind::Field => "field",
        }
    }
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Store operation.
    pub op: &'static str,
    /// Table the operation reads.
    pub table: &'static str,
    /// Kind.
    pub kind: MismatchKind,
    /// Key of the row concerned ("" for a scalar answer).
    pub key: String,
    /// Field that differs (for `field`).
    pub field: Option<String>,
}

/// How an operation's answers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Whole values must be equal (single rows, counts).
    Exact,
    /// A list whose order is part of the answer; rows matched by `key`.
    Ordered(&'static str),
    /// A list whose order is not part of the answer; rows matched by `key`.
    Unordered(&'static str),
    /// Full-text search: the engines tokenize differently (PostgreSQL stems
    /// English words and drops stop words, the SQLite equivalent matches
    /// substrings), so which rows match may legitimately differ. Rows that
    /// both sides return must be equal field by field; membership and order
    /// are not compared.
    Intersection(&'static str),
    /// Not compared.
    Ignore,
}

fn key_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => v.to_string(),
    }
}

fn diff_fields(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) if p == q => {}
                    // Nested domain structs (job + chunks) are walked; JSON
                    // columns are leaves named by their column.
                    (Some(p @ Value::Object(_)), Some(q @ Value::Object(_)))
                        if prefix.is_empty() && is_struct(p) =>
                    {
                        diff_fields(&name, p, q, out)
                    }
                    _ => out.push(name),
                }
            }
        }
        _ if a != b => out.push(if prefix.is_empty() {
            "value".into()
        } else {
            prefix.into()
        }),
        _ => {}
    }
}

// Heuristic: a nested domain struct (as opposed to a JSON column value) is an
// object that has one of the known key fields.
fn is_struct(v: &Value) -> bool {
    ["job_id", "chunk_id", "id", "user_id", "code"]
        .iter()
        .any(|k| v.get(*k).is_some())
}

/// Compares two answers of `op` on `table` under `policy`.
pub fn compare(
    op: &'static str,
    table: &'static str,
    policy: Policy,
    primary: &Value,
    other: &Value,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mk = |kind, key: String, field: Option<String>| Mismatch {
        op,
        table,
        kind,
        key,
        field,
    };
    match policy {
        Policy::Ignore => {}
        Policy::Exact => match (primary, other) {
            (a, b) if a == b => {}
            (Value::Null, b) => out.push(mk(MismatchKind::Extra, guess_key(b), None)),
            (a, Value::Null) => out.push(mk(MismatchKind::Missing, guess_key(a), None)),
            (a, b) => {
                let mut fields = Vec::new();
                diff_fields("", a, b, &mut fields);
                for f in fields {
                    out.push(mk(MismatchKind::Field, guess_key(a), Some(f)));
                }
            }
        },
        Policy::Ordered(key) | Policy::Unordered(key) | Policy::Intersection(key) => {
            let empty = Vec::new();
            let a = primary.as_array().unwrap_or(&empty);
            let b = other.as_array().unwrap_or(&empty);
            let am: BTreeMap<String, &Value> = a.iter().map(|v| (key_of(v, key), v)).collect();
            let bm: BTreeMap<String, &Value> = b.iter().map(|v| (key_of(v, key), v)).collect();
            let membership = !matches!(policy, Policy::Intersection(_));
            for (k, av) in &am {
                match bm.get(k) {
                    None if membership => out.push(mk(MismatchKind::Missing, k.clone(), None)),
                    None => {}
                    Some(bv) => {
                        let mut fields = Vec::new();
                        diff_fields("", av, bv, &mut fields);
                        for f in fields {
                            out.push(mk(MismatchKind::Field, k.clone(), Some(f)));
                        }
                    }
                }
            }
            if membership {
                for k in bm.keys().filter(|k| !am.contains_key(*k)) {
                    out.push(mk(MismatchKind::Extra, k.clone(), None));
                }
            }
            if matches!(policy, Policy::Ordered(_)) && out.is_empty() {
                let ak: Vec<String> = a.iter().map(|v| key_of(v, key)).collect();
                let bk: Vec<String> = b.iter().map(|v| key_of(v, key)).collect();
                if ak != bk {
                    out.push(mk(MismatchKind::Field, String::new(), Some("order".into())));
                }
            }
        }
    }
    out
}

fn guess_key(v: &Value) -> String {
    for k in ["id", "job_id", "chunk_id", "code", "user_id"] {
        if let Some(x) = v.get(k) {
            return match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    if let Some(job) = v.get("job") {
        return guess_key(job);
    }
    String::new()
}

/// Recent mismatches, newest last, bounded.
#[derive(Debug)]
pub struct Ledger {
    cap: usize,
    items: Mutex<VecDeque<Mismatch>>,
}

impl Ledger {
    /// A ledger keeping the last `cap` mismatches.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            items: Mutex::new(VecDeque::with_capacity(cap)),
        }
    }

    /// Adds mismatches, dropping the oldest beyond the capacity.
    pub fn push(&self, ms: &[Mismatch]) {
        // A std Mutex: no await happens while it is held.
        let mut g = self.items.lock().unwrap_or_else(|e| e.into_inner());
        for m in ms {
            if g.len() == self.cap {
                g.pop_front();
            }
            g.push_back(m.clone());
        }
    }

    /// The kept mismatches, oldest first.
    pub fn recent(&self) -> Vec<Mismatch> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_compares_semantically_and_kinds_are_named() {
        let a = json!({"id": "u1", "profile_data": {"a": 1, "b": [1, 2]}});
        let b = json!({"profile_data": {"b": [1, 2], "a": 1}, "id": "u1"});
        assert!(compare("get_user", "users", Policy::Exact, &a, &b).is_empty());
        let c = json!({"id": "u1", "profile_data": {"a": 2, "b": [1, 2]}});
        let m = compare("get_user", "users", Policy::Exact, &a, &c);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, MismatchKind::Field);
        assert_eq!(m[0].field.as_deref(), Some("profile_data"));
        assert_eq!(m[0].key, "u1");
        assert_eq!(
            compare("get_user", "users", Policy::Exact, &a, &Value::Null)[0].kind,
            MismatchKind::Missing
        );
        assert_eq!(
            compare("get_user", "users", Policy::Exact, &Value::Null, &a)[0].kind,
            MismatchKind::Extra
        );
    }

    #[test]
    fn lists_match_by_key() {
        let a = json!([{"id": "t2", "text": "b"}, {"id": "t1", "text": "a"}]);
        let b = json!([{"id": "t1", "text": "a"}, {"id": "t3", "text": "c"}]);
        let m = compare("timeline", "tweets", Policy::Ordered("id"), &a, &b);
        let kinds: Vec<_> = m.iter().map(|x| (x.kind, x.key.as_str())).collect();
        assert_eq!(
            kinds,
            [(MismatchKind::Missing, "t2"), (MismatchKind::Extra, "t3")]
        );
        let swapped = json!([{"id": "t1", "text": "a"}, {"id": "t2", "text": "b"}]);
        assert!(compare("x", "tweets", Policy::Unordered("id"), &a, &swapped).is_empty());
        assert_eq!(
            compare("x", "tweets", Policy::Ordered("id"), &a, &swapped)[0]
                .field
                .as_deref(),
            Some("order")
        );
        assert!(compare("search", "tweets", Policy::Intersection("id"), &a, &b).is_empty());
    }

    #[test]
    fn ledger_is_bounded() {
        let l = Ledger::new(2);
        let m = |k: &str| Mismatch {
            op: "o",
            table: "t",
            kind: MismatchKind::Field,
            key: k.into(),
            field: None,
        };
        l.push(&[m("1"), m("2"), m("3")]);
        assert_eq!(
            l.recent()
                .iter()
                .map(|x| x.key.as_str())
                .collect::<Vec<_>>(),
            ["2", "3"]
        );
    }
}
