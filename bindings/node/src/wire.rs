//! The wire form between the addon and `index.js` (see the crate doc).

use chrono::{DateTime, Utc};
use cutover::error::DbErrorKind;
use cutover::Error;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// Columns that hold JSON: JSON text on the wire, both ways.
const JSON_FIELDS: &[&str] = &[
    "profile_data",
    "metadata",
    "traits",
    "interests",
    "communication_style",
    "completed_commands",
    "command_responses",
    "completion_data",
    "result",
];

/// Columns that hold a timestamp: `[ms, µs within the ms]` going out.
const TIMESTAMP_FIELDS: &[&str] = &[
    "last_scraped",
    "created_at",
    "scraped_at",
    "created_in_db",
    "analyzed_at",
    "last_updated",
    "completed_at",
    "used_at",
    "started_at",
];

/// An argument the caller got wrong: its name and why.
#[derive(Debug)]
pub struct BadArgument {
    name: String,
    why: String,
}

impl BadArgument {
    pub fn into_error(self, op: &str) -> Error {
        let at = if op.is_empty() {
            String::new()
        } else {
            format!("{op}: ")
        };
        if self.name.is_empty() {
            Error::InvalidArgument(format!("{at}{}", self.why))
        } else {
            Error::InvalidArgument(format!("{at}{}: {}", self.name, self.why))
        }
    }
}

/// An operation's positional arguments.
pub struct Args(Vec<Value>);

impl Args {
    /// Parses the JSON array `index.js` sends; JSON columns inside
    /// objects arrive as JSON text and are parsed here, exactly.
    pub fn parse(text: &str) -> Result<Self, BadArgument> {
        let v: Value = serde_json::from_str(text).map_err(|e| BadArgument {
            name: String::new(),
            why: format!("arguments are not JSON: {e}"),
        })?;
        let Value::Array(mut items) = v else {
            return Err(BadArgument {
                name: String::new(),
                why: "arguments are not a list".into(),
            });
        };
        for item in &mut items {
            json_columns_in(item)?;
        }
        Ok(Self(items))
    }

    /// Argument `i` (a missing one reads as null).
    pub fn get<T: DeserializeOwned>(&self, i: usize, name: &str) -> Result<T, BadArgument> {
        let v = self.0.get(i).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(|e| BadArgument {
            name: name.into(),
            why: e.to_string(),
        })
    }

    /// Argument `i` as a JSON value given as JSON text.
    pub fn json(&self, i: usize, name: &str) -> Result<Value, BadArgument> {
        match self.0.get(i) {
            Some(Value::String(text)) => parse_json(text, name),
            Some(Value::Null) | None => Ok(Value::Null),
            Some(_) => Err(BadArgument {
                name: name.into(),
                why: "expected JSON text".into(),
            }),
        }
    }
}

fn parse_json(text: &str, name: &str) -> Result<Value, BadArgument> {
    serde_json::from_str(text).map_err(|e| BadArgument {
        name: name.into(),
        why: format!("not valid JSON text: {e}"),
    })
}

fn json_columns_in(v: &mut Value) -> Result<(), BadArgument> {
    match v {
        Value::Array(items) => items.iter_mut().try_for_each(json_columns_in),
        Value::Object(m) => {
            for (k, field) in m.iter_mut() {
                if JSON_FIELDS.contains(&k.as_str()) {
                    if let Value::String(text) = field {
                        *field = parse_json(text, k)?;
                    }
                } else {
                    json_columns_in(field)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A result in the wire form: camelCase keys, JSON columns as text,
/// timestamps as `[ms, µs]`.
pub fn out(v: Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(out).collect()),
        Value::Object(m) => {
            let mut o = Map::with_capacity(m.len());
            for (k, field) in m {
                let field = if JSON_FIELDS.contains(&k.as_str()) {
                    match field {
                        Value::Null => Value::Null,
                        other => Value::String(other.to_string()),
                    }
                } else if TIMESTAMP_FIELDS.contains(&k.as_str()) {
                    timestamp(field)
                } else {
                    out(field)
                };
                o.insert(camel(&k), field);
            }
            Value::Object(o)
        }
        other => other,
    }
}

fn timestamp(v: Value) -> Value {
    let Value::String(s) = &v else { return v };
    // chrono writes years outside 0000–9999 with a sign (`+10000-…`),
    // which strict RFC 3339 parsing refuses; its own parser reads them.
    match s.parse::<DateTime<Utc>>() {
        Ok(t) => {
            let micros = t.timestamp_micros();
            json!([micros.div_euclid(1000), micros.rem_euclid(1000)])
        }
        Err(_) => v,
    }
}

fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for ch in snake.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// An error as `index.js` turns it into a typed `Error`: a stable `code`,
/// the message, and the fields that name what it concerns.
pub fn error(e: &Error) -> Value {
    let message = e.to_string();
    let mut v = match e {
        Error::NotFound { table, key } => json!({"code": "NOT_FOUND", "table": table, "key": key}),
        Error::MissingParent {
            table,
            key,
            column,
            parent_table,
            parent_key,
        } => json!({"code": "MISSING_PARENT", "table": table, "key": key, "column": column,
                    "parentTable": parent_table, "parentKey": parent_key}),
        Error::OutcomeUnknown { op, .. } => json!({"code": "OUTCOME_UNKNOWN", "op": op}),
        Error::Duplicate { table, column, key } => {
            json!({"code": "DUPLICATE", "table": table, "column": column, "key": key})
        }
        Error::UnknownReferralCode { code } => {
            json!({"code": "UNKNOWN_REFERRAL_CODE", "referralCode": code})
        }
        Error::SelfReferral { code, user_id } => {
            json!({"code": "SELF_REFERRAL", "referralCode": code, "userId": user_id})
        }
        Error::AlreadyReferred { user_id } => {
            json!({"code": "ALREADY_REFERRED", "userId": user_id})
        }
        Error::InvalidState {
            table,
            key,
            status,
            action,
        } => json!({"code": "INVALID_STATE", "table": table, "key": key, "status": status,
                    "action": action}),
        Error::InvalidArgument(_) => json!({"code": "INVALID_ARGUMENT"}),
        Error::InvalidValue {
            table, key, column, ..
        } => json!({"code": "INVALID_VALUE", "table": table, "key": key, "column": column}),
        Error::PoolTimeout { backend, .. } => {
            json!({"code": "UNAVAILABLE", "backend": backend.as_str()})
        }
        Error::Database { backend, kind, .. } => {
            let code = match kind {
                DbErrorKind::Unavailable | DbErrorKind::Timeout => "UNAVAILABLE",
                DbErrorKind::Busy => "BUSY",
                DbErrorKind::UniqueViolation => "DUPLICATE",
                DbErrorKind::ForeignKeyViolation => "MISSING_PARENT",
                DbErrorKind::CheckViolation
                | DbErrorKind::NotNullViolation
                | DbErrorKind::InvalidData => "INVALID_VALUE",
                _ => "DATABASE",
            };
            json!({"code": code, "backend": backend.as_str(), "kind": format!("{kind:?}")})
        }
        Error::Config(_) => json!({"code": "CONFIG"}),
        Error::Io { .. } => json!({"code": "IO"}),
        _ => json!({"code": "DATABASE"}),
    };
    v["message"] = Value::String(message);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_columns_cross_as_exact_text_both_ways() {
        let a = Args::parse(
            r#"[{"metadata": "{\"n\": 123456789012345678901234567890, \"f\": 1.50}"}]"#,
        )
        .unwrap();
        let v: Value = a.get(0, "x").unwrap();
        let back = out(v);
        assert_eq!(
            back["metadata"],
            // Numbers exactly as written; keys in the order the store keeps (sorted).
            Value::String(r#"{"f":1.50,"n":123456789012345678901234567890}"#.into())
        );
    }

    #[test]
    fn timestamps_go_out_as_milliseconds_and_microseconds() {
        let v = out(json!({"created_at": "2024-02-29T12:34:56.123456Z"}));
        assert_eq!(v["createdAt"], json!([1709210096123i64, 456]));
        let v = out(json!({"used_at": "1969-12-31T23:59:59.999999Z"}));
        assert_eq!(v["usedAt"], json!([-1, 999]));
        // Years past 9999 as chrono writes them.
        let v = out(json!({"created_at": "+10000-01-01T00:00:00.000001Z"}));
        assert!(v["createdAt"].is_array(), "{v}");
    }
}
