//! The generator and the audit checked against each other: every messy value
//! the generator plants is found by the audit, in the right column and with
//! the right reason, and the audit's predictions account for every row.

mod common;

use std::path::Path;

use common::TempDir;
use cutover::audit::{self, AuditReport};
use cutover::convert::RejectReason;
use cutover::generate::{self, GenerateOptions, GenerateReport, Messy};
use cutover::row::Policy;
use cutover::tables;

fn options(seed: u64) -> GenerateOptions {
    GenerateOptions {
        users: 200,
        tweets: 3000,
        dirty: 0.05,
        seed,
    }
}

/// Every table, every row, every value as its storage class and the hex of
/// its bytes, in rowid order.
fn dump(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out = String::new();
    for t in tables::ALL {
        let cols = t
            .columns
            .iter()
            .map(|c| format!("typeof({0}) || ':' || hex({0})", c.name))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let mut stmt = conn
            .prepare(&format!("SELECT {cols} FROM {} ORDER BY rowid", t.name))
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        out.push_str(t.name);
        out.push('\n');
        for r in rows {
            out.push_str(&r.unwrap());
            out.push('\n');
        }
    }
    out
}

fn generate_and_audit(dir: &TempDir, name: &str, seed: u64) -> (GenerateReport, AuditReport) {
    let path = dir.file(name);
    let report = generate::generate(&path, &options(seed)).unwrap();
    let audit = audit::audit(&path).unwrap();
    (report, audit)
}

#[test]
fn same_seed_same_rows_other_seed_other_rows() {
    let dir = TempDir::new();
    let (a, b, c) = (dir.file("a.db"), dir.file("b.db"), dir.file("c.db"));
    let ra = generate::generate(&a, &options(42)).unwrap();
    let rb = generate::generate(&b, &options(42)).unwrap();
    generate::generate(&c, &options(43)).unwrap();
    assert_eq!(ra, rb);
    let (da, db, dc) = (dump(&a), dump(&b), dump(&c));
    assert!(da == db, "same seed gave different rows");
    assert!(da != dc, "different seeds gave the same rows");
}

#[test]
fn refuses_to_overwrite() {
    let dir = TempDir::new();
    let path = dir.file("x.db");
    std::fs::write(&path, b"precious").unwrap();
    assert!(generate::generate(&path, &options(1)).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn report_counts_the_rows_written() {
    let dir = TempDir::new();
    let (report, audit) = generate_and_audit(&dir, "g.db", 5);
    assert_eq!(report.rows_in("users"), 200);
    assert_eq!(report.rows_in("tweets"), 3000);
    for t in tables::ALL {
        assert!(report.rows_in(t.name) > 0, "{} is empty", t.name);
        assert_eq!(
            audit.table(t.name).unwrap().rows,
            report.rows_in(t.name),
            "{}",
            t.name
        );
    }
    // Every kind the brief lists is planted at this size.
    for kind in Messy::ALL {
        assert!(report.planted_total(kind) > 0, "{kind:?} never planted");
    }
}

#[test]
fn audit_finds_every_planted_value_in_its_column() {
    let dir = TempDir::new();
    let (report, audit) = generate_and_audit(&dir, "g.db", 11);
    let value_reasons = RejectReason::ALL
        .into_iter()
        .filter(|r| !matches!(r, RejectReason::Orphan | RejectReason::UniqueViolation));
    let value_reasons: Vec<RejectReason> = value_reasons.collect();
    for t in tables::ALL {
        let ta = audit.table(t.name).unwrap();
        for c in t.columns {
            let ca = ta.column(c.name).unwrap();
            for &reason in &value_reasons {
                let planted: u64 = Messy::ALL
                    .into_iter()
                    .filter(|k| k.reason() == Some(reason))
                    .map(|k| report.planted_in(t.name, c.name, k))
                    .sum();
                assert_eq!(
                    ca.invalid_count(reason),
                    planted,
                    "{}.{}: {reason}",
                    t.name,
                    c.name
                );
            }
        }
        for fk in t.foreign_keys {
            assert_eq!(
                ta.orphans[fk.column],
                report.planted_in(t.name, fk.column, Messy::Orphan),
                "{}.{} orphans",
                t.name,
                fk.column
            );
        }
    }

    // Boolean words are valid and reported as converted from text.
    let is_reply = audit.table("tweets").unwrap().column("is_reply").unwrap();
    assert_eq!(
        is_reply.converted_from.get("text").copied().unwrap_or(0),
        report.planted_in("tweets", "is_reply", Messy::BooleanWord)
    );
    // SQLite's INTEGER affinity turned planted integer text and integral
    // reals into integers: the file holds nothing else in those columns.
    for p in report
        .planted
        .iter()
        .filter(|p| matches!(p.kind, Messy::IntegerText | Messy::IntegralReal))
    {
        let ca = audit.table(p.table).unwrap().column(p.column).unwrap();
        assert_eq!(
            ca.types.keys().copied().collect::<Vec<_>>(),
            ["integer"],
            "{}.{}",
            p.table,
            p.column
        );
    }
    // All four legacy timestamp forms occur.
    let created = audit.table("tweets").unwrap().column("created_at").unwrap();
    for form in ["sql_datetime", "iso8601", "twitter", "epoch_millis"] {
        assert!(
            created.timestamp_formats.get(form).copied().unwrap_or(0) > 0,
            "{form}"
        );
    }
    // The blob twin of user '12345' collides under both policies.
    let users = audit.table("users").unwrap();
    for policy in [Policy::RejectRow, Policy::NullAndRecord] {
        assert_eq!(
            users
                .prediction(policy)
                .rejected_by_reason
                .get("unique_violation"),
            Some(&report.planted_total(Messy::KeyCollision)),
            "{policy:?}"
        );
    }
}

#[test]
fn predictions_account_for_every_row() {
    let dir = TempDir::new();
    let path = dir.file("g.db");
    // More tweets than the audit reads per batch, so batches join up.
    let report = generate::generate(
        &path,
        &GenerateOptions {
            tweets: 12_345,
            ..options(23)
        },
    )
    .unwrap();
    let audit = audit::audit(&path).unwrap();
    for ta in &audit.tables {
        assert_eq!(ta.rows, report.rows_in(ta.table), "{}", ta.table);
        let types: u64 = ta.columns[0].types.values().sum();
        assert_eq!(types, ta.rows, "{}", ta.table);
        let strict = ta.prediction(Policy::RejectRow);
        let lenient = ta.prediction(Policy::NullAndRecord);
        for p in [strict, lenient] {
            assert_eq!(p.copied + p.rejected, ta.rows, "{} {}", ta.table, p.policy);
            assert_eq!(
                p.rejected_by_reason.values().sum::<u64>(),
                p.rejected,
                "{} {}",
                ta.table,
                p.policy
            );
        }
        assert!(lenient.rejected <= strict.rejected, "{}", ta.table);
    }
    // Children of rejected parents are predicted orphans beyond the planted
    // ones: cascades are included.
    let tweets = audit.table("tweets").unwrap();
    let planted_orphans = tweets.orphans["user_id"];
    let predicted = tweets.prediction(Policy::RejectRow).rejected_by_reason["orphan"];
    assert!(
        predicted > planted_orphans,
        "{predicted} <= {planted_orphans}"
    );
}

#[test]
fn a_clean_database_is_copied_whole() {
    let dir = TempDir::new();
    let path = dir.file("clean.db");
    let report = generate::generate(
        &path,
        &GenerateOptions {
            dirty: 0.0,
            ..options(3)
        },
    )
    .unwrap();
    assert!(report.planted.is_empty());
    let audit = audit::audit(&path).unwrap();
    for ta in &audit.tables {
        for policy in [Policy::RejectRow, Policy::NullAndRecord] {
            let p = ta.prediction(policy);
            assert_eq!((p.copied, p.rejected), (ta.rows, 0), "{}", ta.table);
        }
    }
}

#[test]
fn audit_does_not_change_the_file() {
    let dir = TempDir::new();
    let path = dir.file("ro.db");
    generate::generate(&path, &options(9)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let json = serde_json::to_value(audit::audit(&path).unwrap()).unwrap();
    assert_eq!(json["tables"].as_array().unwrap().len(), 10);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_clean_database_is_consistent() {
    let dir = TempDir::new();
    let path = dir.file("clean.db");
    generate::generate(
        &path,
        &GenerateOptions {
            dirty: 0.0,
            ..options(4)
        },
    )
    .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Referral counters match their log; every redemption has both rows.
    assert_eq!(
        count(
            "SELECT count(*) FROM referral_codes c WHERE usage_count != \
             (SELECT count(*) FROM referral_usage_log l WHERE l.referral_code = c.code)"
        ),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM referral_tracking"),
        count("SELECT count(*) FROM referral_usage_log")
    );
    assert!(count("SELECT count(*) FROM referral_usage_log") > 0);
    // Every job has its chunks, and the four statuses occur.
    assert_eq!(
        count(
            "SELECT count(*) FROM analysis_queue q WHERE total_chunks != \
             (SELECT count(*) FROM analysis_chunks c WHERE c.job_id = q.job_id)"
        ),
        0
    );
    assert_eq!(
        count("SELECT count(DISTINCT status) FROM analysis_queue"),
        4
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM analysis_queue WHERE status = 'completed' \
             AND processed_chunks != total_chunks"
        ),
        0
    );
    // No orphans at all when nothing is dirty.
    let mut stmt = conn.prepare("PRAGMA foreign_key_check").unwrap();
    let violations = stmt.query_map([], |_| Ok(())).unwrap().count();
    assert_eq!(violations, 0);
    // Tweet texts are 40..=280 characters, with non-ASCII in many of them.
    assert!(count("SELECT min(length(text)) FROM tweets") >= 40);
    assert!(count("SELECT max(length(text)) FROM tweets") <= 280);
    assert!(
        count("SELECT count(*) FROM tweets WHERE length(text) != length(CAST(text AS BLOB))")
            > 1000
    );
}
