//! One conformance suite, run against every store.
//!
//! Every test is written once against `&dyn Store` and instantiated by
//! `conformance!`: `sqlite::<name>` on a real SQLite file, `postgres::<name>`
//! on a real PostgreSQL database of its own, and `dual_<stage>::<name>` on a
//! `DualStore` over both in each of the six stages. Same names, same
//! assertions. In the stages that write both sides the dual run then checks
//! that both sides hold the same rows: outbox drained, every table compared
//! row by row, `verify` clean, no real shadow-read mismatch.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{
    Backend, Error, JobStatus, NewJob, NewTweet, PersonalityAnalysis, ScrapedProfile, Store,
    TimelineCursor, Timestamp,
};
use serde_json::{json, Value};

/// A store plus whatever keeps its database alive for the test.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any + Send>,
}

pub async fn sqlite_fixture() -> Fixture {
    let dir = common::TempDir::new();
    let store = cutover::SqliteStore::open(dir.file("twitter.db"))
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

pub async fn postgres_fixture() -> Fixture {
    let db = common::TestDb::migrated().await;
    let store = cutover::PgStore::connect(&db.settings).await.unwrap();
    Fixture {
        store: Arc::new(store),
        _keep: Box::new(db),
    }
}

/// A dual store in one stage over a fresh SQLite file and a fresh
/// PostgreSQL database, with what the both-sides check needs.
pub struct DualFixture {
    pub store: Arc<dyn Store>,
    dual: DualStore,
    stage: Stage,
    path: PathBuf,
    db: common::TestDb,
    _dir: common::TempDir,
}

pub async fn dual_fixture(stage: Stage) -> DualFixture {
    let dir = common::TempDir::new();
    let path = dir.file("twitter.db");
    let db = common::TestDb::migrated().await;
    let sqlite = cutover::SqliteStore::open(&path).await.unwrap();
    let pg = cutover::PgStore::connect(&db.settings).await.unwrap();
    let dual = DualStore::forced(
        sqlite,
        pg,
        stage,
        DualConfig {
            raise_on_mismatch: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dual.stage(), stage);
    DualFixture {
        store: Arc::new(dual.clone()),
        dual,
        stage,
        path,
        db,
        _dir: dir,
    }
}

impl DualFixture {
    /// In the stages that write both sides: the copies settle, the outboxes
    /// drain, both sides hold the same rows in every table, `verify` finds
    /// no divergent row and no shadow read found a real mismatch. Nothing
    /// in `off` and `complete`, where one side is not written by design.
    pub async fn check_both_sides(&self) {
        let (d, stage) = (&self.dual, self.stage);
        if stage.secondary().is_none() {
            return;
        }
        d.settle().await;
        for _ in 0..100 {
            if d.outbox_pending().await.unwrap() == 0 {
                break;
            }
            let _ = d.drain(Backend::Sqlite, 1000).await;
            let _ = d.drain(Backend::Postgres, 1000).await;
            d.settle().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            d.outbox_pending().await.unwrap(),
            0,
            "{stage}: the outboxes drain"
        );

        let (s, p) = common::snapshot(d).await;
        for ((t, a), (_, b)) in s.iter().zip(p.iter()) {
            assert_eq!(
                a.len(),
                b.len(),
                "{stage}: {t}: row counts differ\nsqlite:   {a:?}\npostgres: {b:?}"
            );
            for (x, y) in a.iter().zip(b.iter()) {
                assert_eq!(
                    x, y,
                    "{stage}: {t}: rows differ (left sqlite, right postgres)"
                );
            }
        }

        let report = cutover::verify::verify(&cutover::verify::VerifyOptions::new(
            &self.path,
            self.db.settings.clone(),
        ))
        .await
        .unwrap();
        let divergent: u64 = report.tables.iter().map(|t| t.divergent_rows()).sum();
        assert_eq!(
            divergent, 0,
            "{stage}: verify found divergent rows: {report:#?}"
        );

        // A real mismatch panics on the shadow comparison's own task, which
        // does not fail the test: its counter does.
        let c = d.counters();
        assert_eq!(
            c.mismatches_real,
            0,
            "{stage}: shadow reads found real mismatches: {:?}",
            d.recent_mismatches()
        );
    }
}

/// One module of tests on a dual store in `$stage`, checked on both sides after each.
macro_rules! dual_stage {
    ($module:ident, $stage:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = super::dual_fixture(cutover::stage::Stage::$stage).await;
                    super::$name(f.store.clone()).await;
                    f.check_both_sides().await;
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = super::sqlite_fixture().await;
                    super::$name(f.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = super::postgres_fixture().await;
                    super::$name(f.store.clone()).await;
                }
            )*
        }
        dual_stage!(dual_off, Off; $($name),*);
        dual_stage!(dual_dualwrite, DualWrite; $($name),*);
        dual_stage!(dual_shadow, Shadow; $($name),*);
        dual_stage!(dual_live, Live; $($name),*);
        dual_stage!(dual_rampdown, Rampdown; $($name),*);
        dual_stage!(dual_complete, Complete; $($name),*);
    };
}

conformance!(
    profile_upsert_and_lookup,
    profile_username_conflict,
    users_scraped_before_orders_never_scraped_first,
    tweets_batch_upsert_and_count,
    tweets_for_unknown_user_are_refused,
    timeline_pages_with_cursor,
    search_matches_every_word,
    analysis_save_and_latest,
    analysis_for_unknown_user_is_refused,
    funnel_commands_accumulate,
    funnel_completion_replaces,
    referral_create_and_redeem,
    referral_error_cases_write_nothing,
    referral_concurrent_redemptions_keep_count,
    queue_claims_by_priority_then_age,
    queue_concurrent_claims_never_share_a_job,
    queue_chunk_lifecycle,
    queue_invalid_transitions,
    queue_listing,
    delete_user_removes_every_row,
    json_null_is_not_sql_null,
);

fn ts(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn profile(id: &str, username: &str, scraped: Timestamp) -> ScrapedProfile {
    ScrapedProfile {
        id: id.into(),
        username: username.into(),
        profile_data: Some(
            json!({"bio": "hello 👋", "followers": 10, "nested": {"b": [1, 2.5, null]}}),
        ),
        profile_picture_url: Some(format!("https://pbs.example/{id}.jpg")),
        scraped_at: scraped,
    }
}

async fn user(store: &dyn Store, id: &str) {
    store
        .upsert_profile(&profile(id, &format!("@{id}"), ts(0)))
        .await
        .unwrap();
}

fn tweet(id: &str, at: Timestamp, text: &str) -> NewTweet {
    NewTweet {
        id: id.into(),
        text: text.into(),
        created_at: at,
        url: Some(format!("https://twitter.com/i/{id}")),
        is_reply: Some(id.len().is_multiple_of(2)),
        metadata: Some(json!({"likes": 3, "entities": {"urls": ["https://t.co/x"]}})),
    }
}

async fn profile_upsert_and_lookup(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let first = s
        .upsert_profile(&profile("u1", "alice", ts(10)))
        .await
        .unwrap();
    assert_eq!(first.id, "u1");
    assert_eq!(first.username, "alice");
    assert_eq!(first.last_scraped, Some(ts(10)));
    let created = first.created_at.expect("created_at stamped");
    assert_eq!(s.get_user("u1").await.unwrap(), Some(first.clone()));
    assert_eq!(
        s.get_user_by_username("alice").await.unwrap(),
        Some(first.clone())
    );

    // A rescrape renames and updates, keeping created_at.
    let mut p = profile("u1", "alice2", ts(20));
    p.profile_data = Some(json!({"bio": "changed"}));
    p.profile_picture_url = None;
    let second = s.upsert_profile(&p).await.unwrap();
    assert_eq!(second.username, "alice2");
    assert_eq!(second.profile_data, Some(json!({"bio": "changed"})));
    assert_eq!(second.profile_picture_url, None);
    assert_eq!(second.last_scraped, Some(ts(20)));
    assert_eq!(second.created_at, Some(created));
    assert_eq!(s.get_user_by_username("alice").await.unwrap(), None);
    assert_eq!(s.get_user("nobody").await.unwrap(), None);
}

async fn profile_username_conflict(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.upsert_profile(&profile("u1", "alice", ts(0)))
        .await
        .unwrap();
    let err = s
        .upsert_profile(&profile("u2", "alice", ts(0)))
        .await
        .unwrap_err();
    match err {
        Error::Duplicate { table, column, key } => {
            assert_eq!(
                (table, column, key.as_str()),
                ("users", "username", "alice")
            );
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(s.get_user("u2").await.unwrap(), None);
}

async fn users_scraped_before_orders_never_scraped_first(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.upsert_profile(&profile("b", "b", ts(30))).await.unwrap();
    s.upsert_profile(&profile("a", "a", ts(10))).await.unwrap();
    s.upsert_profile(&profile("c", "c", ts(20))).await.unwrap();
    s.upsert_profile(&profile("d", "d", ts(99))).await.unwrap();
    let got: Vec<String> = s
        .users_scraped_before(ts(50), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(got, ["a", "c", "b"]);
    let got = s.users_scraped_before(ts(50), 2).await.unwrap();
    assert_eq!(got.len(), 2);
}

async fn tweets_batch_upsert_and_count(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    let batch: Vec<NewTweet> = (0..50)
        .map(|i| {
            tweet(
                &format!("t{i:03}"),
                ts(i),
                &format!("tweet {i} with emoji 🚀 and #tag"),
            )
        })
        .collect();
    assert_eq!(s.save_tweets("u1", &batch).await.unwrap(), 50);
    assert_eq!(s.count_tweets("u1").await.unwrap(), 50);
    assert_eq!(s.count_tweets("u2").await.unwrap(), 0);
    let t = s.get_tweet("t007").await.unwrap().unwrap();
    assert_eq!(t.text, "tweet 7 with emoji 🚀 and #tag");
    assert_eq!(t.created_at, ts(7));
    assert_eq!(t.user_id, "u1");
    assert_eq!(t.metadata, batch[7].metadata);
    let stamped = t.created_in_db.expect("created_in_db stamped");

    // Upsert: same id, new text; created_in_db kept; count unchanged.
    let mut again = batch[7].clone();
    again.text = "edited".into();
    again.is_reply = None;
    assert_eq!(s.save_tweets("u1", &[again]).await.unwrap(), 1);
    let t = s.get_tweet("t007").await.unwrap().unwrap();
    assert_eq!(t.text, "edited");
    assert_eq!(t.is_reply, None);
    assert_eq!(t.created_in_db, Some(stamped));
    assert_eq!(s.count_tweets("u1").await.unwrap(), 50);
    assert_eq!(s.save_tweets("u1", &[]).await.unwrap(), 0);
}

async fn tweets_for_unknown_user_are_refused(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let err = s
        .save_tweets("ghost", &[tweet("t1", ts(0), "boo")])
        .await
        .unwrap_err();
    match err {
        Error::MissingParent {
            table,
            key,
            column,
            parent_table,
            parent_key,
        } => {
            assert_eq!(
                (table, column, parent_table),
                ("tweets", "user_id", "users")
            );
            assert_eq!((key.as_str(), parent_key.as_str()), ("t1", "ghost"));
        }
        other => panic!("expected MissingParent, got {other:?}"),
    }
    assert_eq!(s.get_tweet("t1").await.unwrap(), None);
}

async fn timeline_pages_with_cursor(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    user(s, "u2").await;
    // Two tweets share a timestamp: the id breaks the tie.
    let mut batch: Vec<NewTweet> = (0..7)
        .map(|i| tweet(&format!("a{i}"), ts(i * 60), "x"))
        .collect();
    batch.push(tweet("a9", ts(3 * 60), "same instant as a3"));
    s.save_tweets("u1", &batch).await.unwrap();
    s.save_tweets("u2", &[tweet("b1", ts(10_000), "other user")])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<TimelineCursor> = None;
    loop {
        let page = s.timeline("u1", 3, cursor.as_ref()).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = Some(TimelineCursor::after(page.last().unwrap()));
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(seen, ["a6", "a5", "a4", "a9", "a3", "a2", "a1", "a0"]);
    assert!(s.timeline("u1", 0, None).await.unwrap().is_empty());
    assert!(s.timeline("nobody", 5, None).await.unwrap().is_empty());
}

async fn search_matches_every_word(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    s.save_tweets(
        "u1",
        &[
            tweet("t1", ts(1), "Rust database migration today"),
            tweet("t2", ts(2), "Another database story"),
            tweet("t3", ts(3), "nothing relevant here"),
            tweet("t4", ts(4), "DATABASE Migration finished"),
        ],
    )
    .await
    .unwrap();
    let ids = |v: Vec<cutover::Tweet>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.search_tweets("database migration", 10).await.unwrap()),
        ["t4", "t1"]
    );
    assert_eq!(
        ids(s.search_tweets("database", 10).await.unwrap()),
        ["t4", "t2", "t1"]
    );
    assert_eq!(ids(s.search_tweets("database", 1).await.unwrap()), ["t4"]);
    assert!(s.search_tweets("zebra", 10).await.unwrap().is_empty());
    assert!(s.search_tweets("  ", 10).await.unwrap().is_empty());
}

fn analysis(id: &str, user: &str, at: Option<Timestamp>) -> PersonalityAnalysis {
    PersonalityAnalysis {
        id: id.into(),
        user_id: user.into(),
        traits: json!({"openness": 0.8, "conscientiousness": 0.4}),
        interests: json!(["rust", "databases"]),
        communication_style: json!({"tone": "friendly", "emoji": true}),
        analyzed_at: at,
    }
}

async fn analysis_save_and_latest(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    assert_eq!(s.latest_analysis("u1").await.unwrap(), None);
    let a1 = s
        .save_analysis(&analysis("p1", "u1", Some(ts(10))))
        .await
        .unwrap();
    assert_eq!(a1, analysis("p1", "u1", Some(ts(10))));
    s.save_analysis(&analysis("p2", "u1", Some(ts(30))))
        .await
        .unwrap();
    s.save_analysis(&analysis("p3", "u1", Some(ts(20))))
        .await
        .unwrap();
    assert_eq!(s.latest_analysis("u1").await.unwrap().unwrap().id, "p2");
    // Replacing by id.
    let mut p3 = analysis("p3", "u1", Some(ts(40)));
    p3.traits = json!({"openness": 0.1});
    s.save_analysis(&p3).await.unwrap();
    assert_eq!(s.latest_analysis("u1").await.unwrap().unwrap(), p3);
    // No timestamp given: stamped now.
    let now = s.save_analysis(&analysis("p4", "u1", None)).await.unwrap();
    assert!(now.analyzed_at.unwrap() > ts(40));
}

async fn analysis_for_unknown_user_is_refused(store: Arc<dyn Store>) {
    let err = store
        .save_analysis(&analysis("p1", "ghost", None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "personality_analysis",
                column: "user_id",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn funnel_commands_accumulate(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    assert_eq!(s.funnel_progress("u1").await.unwrap(), None);
    let p = s
        .complete_funnel_command("u1", "/start", &json!({"answer": "yes"}))
        .await
        .unwrap();
    assert_eq!(p.current_command_index, Some(1));
    assert_eq!(p.completed_commands, Some(json!(["/start"])));
    assert_eq!(
        p.command_responses,
        Some(json!({"/start": {"answer": "yes"}}))
    );
    let p = s
        .complete_funnel_command("u1", "/analyze", &json!("done"))
        .await
        .unwrap();
    assert_eq!(p.current_command_index, Some(2));
    assert_eq!(p.completed_commands, Some(json!(["/start", "/analyze"])));
    assert_eq!(
        p.command_responses,
        Some(json!({"/start": {"answer": "yes"}, "/analyze": "done"}))
    );
    assert!(p.last_updated.is_some());
    assert_eq!(s.funnel_progress("u1").await.unwrap(), Some(p));
    let err = s
        .complete_funnel_command("ghost", "/start", &json!(null))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "funnel_progress",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn funnel_completion_replaces(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    assert_eq!(s.funnel_completion("u1").await.unwrap(), None);
    let c1 = s
        .mark_funnel_complete("u1", &json!({"score": 1}))
        .await
        .unwrap();
    assert_eq!(c1.completion_data, Some(json!({"score": 1})));
    let c2 = s
        .mark_funnel_complete("u1", &json!({"score": 2}))
        .await
        .unwrap();
    assert_eq!(c2.completion_data, Some(json!({"score": 2})));
    assert_eq!(s.funnel_completion("u1").await.unwrap(), Some(c2));
    let err = s
        .mark_funnel_complete("ghost", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "funnel_completion",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn referral_create_and_redeem(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for u in ["owner", "new1", "new2"] {
        user(s, u).await;
    }
    let code = s.create_referral_code("owner", "SPRING24").await.unwrap();
    assert_eq!(code.usage_count, Some(0));
    assert_eq!(code.owner_user_id, "owner");
    assert_eq!(s.get_referral_code("SPRING24").await.unwrap(), Some(code));
    s.create_referral_code("owner", "AUTUMN24").await.unwrap();

    let r1 = s.redeem_referral("SPRING24", "new1").await.unwrap();
    assert_eq!(r1.referrer_user_id, "owner");
    assert_eq!(r1.referred_user_id, "new1");
    assert_eq!(r1.referral_code, "SPRING24");
    let r2 = s.redeem_referral("SPRING24", "new2").await.unwrap();
    assert!(r2.id > r1.id);

    assert_eq!(
        s.get_referral_code("SPRING24")
            .await
            .unwrap()
            .unwrap()
            .usage_count,
        Some(2)
    );
    let usage = s.referral_usage("SPRING24").await.unwrap();
    assert_eq!(
        usage
            .iter()
            .map(|u| u.used_by_user_id.as_str())
            .collect::<Vec<_>>(),
        ["new1", "new2"]
    );
    assert_eq!(usage[0].used_at, r1.used_at);
    let stats = s.referral_stats("owner").await.unwrap();
    assert_eq!(stats.total_uses, 2);
    assert_eq!(
        stats
            .codes
            .iter()
            .map(|c| c.code.as_str())
            .collect::<Vec<_>>(),
        ["AUTUMN24", "SPRING24"]
    );
    assert_eq!(stats.referred_user_ids, ["new1", "new2"]);
    let empty = s.referral_stats("nobody").await.unwrap();
    assert!(empty.codes.is_empty() && empty.referred_user_ids.is_empty() && empty.total_uses == 0);
}

async fn referral_error_cases_write_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for u in ["owner", "new1", "new2"] {
        user(s, u).await;
    }
    s.create_referral_code("owner", "C1").await.unwrap();
    s.redeem_referral("C1", "new1").await.unwrap();

    match s.create_referral_code("owner", "C1").await.unwrap_err() {
        Error::Duplicate {
            table: "referral_codes",
            column: "code",
            key,
        } => assert_eq!(key, "C1"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let err = s.create_referral_code("ghost", "C2").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "referral_codes",
                column: "owner_user_id",
                ..
            }
        ),
        "{err:?}"
    );
    match s.redeem_referral("NOPE", "new2").await.unwrap_err() {
        Error::UnknownReferralCode { code } => assert_eq!(code, "NOPE"),
        other => panic!("expected UnknownReferralCode, got {other:?}"),
    }
    match s.redeem_referral("C1", "owner").await.unwrap_err() {
        Error::SelfReferral { code, user_id } => {
            assert_eq!((code.as_str(), user_id.as_str()), ("C1", "owner"))
        }
        other => panic!("expected SelfReferral, got {other:?}"),
    }
    match s.redeem_referral("C1", "new1").await.unwrap_err() {
        Error::AlreadyReferred { user_id } => assert_eq!(user_id, "new1"),
        other => panic!("expected AlreadyReferred, got {other:?}"),
    }
    let err = s.redeem_referral("C1", "ghost").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "referral_tracking",
                column: "referred_user_id",
                ..
            }
        ),
        "{err:?}"
    );
    // None of the failures wrote anything.
    assert_eq!(
        s.get_referral_code("C1")
            .await
            .unwrap()
            .unwrap()
            .usage_count,
        Some(1)
    );
    assert_eq!(s.referral_usage("C1").await.unwrap().len(), 1);
    assert_eq!(
        s.referral_stats("owner").await.unwrap().referred_user_ids,
        ["new1"]
    );
}

async fn referral_concurrent_redemptions_keep_count(store: Arc<dyn Store>) {
    user(store.as_ref(), "owner").await;
    s_users(store.as_ref(), 50).await;
    store.create_referral_code("owner", "HOT").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let st = store.clone();
        tasks.push(tokio::spawn(async move {
            st.redeem_referral("HOT", &format!("n{i}")).await
        }));
    }
    // Each of the 50 also races a duplicate redemption of the same user.
    for i in 0..50 {
        let st = store.clone();
        tasks.push(tokio::spawn(async move {
            st.redeem_referral("HOT", &format!("n{i}")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::AlreadyReferred { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 50);
    let count = store
        .get_referral_code("HOT")
        .await
        .unwrap()
        .unwrap()
        .usage_count;
    let log = store.referral_usage("HOT").await.unwrap().len();
    assert_eq!(count, Some(50));
    assert_eq!(log, 50);
}

async fn s_users(s: &dyn Store, n: usize) {
    for i in 0..n {
        user(s, &format!("n{i}")).await;
    }
}

fn job(user: &str, priority: i32, chunks: usize) -> NewJob {
    NewJob {
        user_id: user.into(),
        priority,
        chunk_tweet_counts: (0..chunks).map(|i| 100 + i as i32).collect(),
    }
}

async fn queue_claims_by_priority_then_age(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    let low_old = s.enqueue_job(&job("u1", 0, 1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let high = s.enqueue_job(&job("u1", 5, 2)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let low_new = s.enqueue_job(&job("u1", 0, 1)).await.unwrap();
    assert_eq!(high.job.status, JobStatus::Pending);
    assert_eq!(high.job.total_chunks, 2);
    assert_eq!(high.job.processed_chunks, Some(0));
    assert_eq!(high.chunks.len(), 2);
    assert_eq!(high.chunks[1].chunk_index, 1);
    assert_eq!(high.chunks[1].tweet_count, 101);

    let order: Vec<i32> = [
        s.claim_next_job().await.unwrap().unwrap(),
        s.claim_next_job().await.unwrap().unwrap(),
        s.claim_next_job().await.unwrap().unwrap(),
    ]
    .iter()
    .map(|j| {
        assert_eq!(j.status, JobStatus::Processing);
        assert!(j.started_at.is_some());
        j.job_id
    })
    .collect();
    assert_eq!(
        order,
        [high.job.job_id, low_old.job.job_id, low_new.job.job_id]
    );
    assert_eq!(s.claim_next_job().await.unwrap(), None);

    let err = s.enqueue_job(&job("ghost", 0, 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingParent {
                table: "analysis_queue",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.enqueue_job(&job("u1", 0, 0)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

async fn queue_concurrent_claims_never_share_a_job(store: Arc<dyn Store>) {
    user(store.as_ref(), "u1").await;
    for i in 0..15 {
        store.enqueue_job(&job("u1", i % 3, 1)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let st = store.clone();
        tasks.push(tokio::spawn(
            async move { st.claim_next_job().await.unwrap() },
        ));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        if let Some(j) = t.await.unwrap() {
            claimed.push(j.job_id);
        }
    }
    let unique: HashSet<i32> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 15, "every job claimed once: {claimed:?}");
    assert_eq!(unique.len(), 15, "no job claimed twice: {claimed:?}");
    assert!(store
        .jobs_by_status(JobStatus::Pending, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn queue_chunk_lifecycle(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    let j = s.enqueue_job(&job("u1", 1, 3)).await.unwrap();
    let claimed = s.claim_next_job().await.unwrap().unwrap();
    assert_eq!(claimed.job_id, j.job.job_id);
    let [c0, c1, c2] = [&j.chunks[0], &j.chunks[1], &j.chunks[2]].map(|c| c.chunk_id);

    let started = s.start_chunk(c0).await.unwrap();
    assert_eq!(started.status, JobStatus::Processing);
    assert!(started.started_at.is_some());
    let done = s
        .complete_chunk(c0, &json!({"traits": {"x": 1}}))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.result, Some(json!({"traits": {"x": 1}})));
    assert!(done.completed_at.is_some());

    s.start_chunk(c1).await.unwrap();
    let failed = s.fail_chunk(c1, "model timeout").await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("model timeout"));
    // A failed chunk can be retried.
    s.start_chunk(c1).await.unwrap();
    s.complete_chunk(c1, &json!([1, 2])).await.unwrap();
    s.start_chunk(c2).await.unwrap();
    s.complete_chunk(c2, &json!(null)).await.unwrap();

    let got = s.get_job(j.job.job_id).await.unwrap().unwrap();
    assert_eq!(got.job.processed_chunks, Some(3));
    assert!(got.chunks.iter().all(|c| c.status == JobStatus::Completed));
    let completed = s.complete_job(j.job.job_id).await.unwrap();
    assert_eq!(completed.status, JobStatus::Completed);
    assert!(completed.completed_at.is_some());
    assert_eq!(
        s.get_job(j.job.job_id).await.unwrap().unwrap().job,
        completed
    );
    assert_eq!(s.get_job(999_999).await.unwrap(), None);

    // A second job fails as a whole.
    let j2 = s.enqueue_job(&job("u1", 0, 1)).await.unwrap();
    let f = s.fail_job(j2.job.job_id, "user suspended").await.unwrap();
    assert_eq!(f.status, JobStatus::Failed);
    assert_eq!(f.error.as_deref(), Some("user suspended"));
}

async fn queue_invalid_transitions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    let j = s.enqueue_job(&job("u1", 0, 1)).await.unwrap();
    let c = j.chunks[0].chunk_id;
    let err = s.complete_chunk(c, &json!({})).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                table: "analysis_chunks",
                action: "complete",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.fail_chunk(c, "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                table: "analysis_chunks",
                action: "fail",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.complete_job(j.job.job_id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                table: "analysis_queue",
                action: "complete",
                ..
            }
        ),
        "{err:?}"
    );
    s.start_chunk(c).await.unwrap();
    let err = s.start_chunk(c).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                table: "analysis_chunks",
                action: "start",
                ..
            }
        ),
        "{err:?}"
    );
    s.fail_job(j.job.job_id, "x").await.unwrap();
    let err = s.fail_job(j.job.job_id, "again").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                table: "analysis_queue",
                action: "fail",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.start_chunk(424_242).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                table: "analysis_chunks",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.complete_job(424_242).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                table: "analysis_queue",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn queue_listing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    user(s, "u1").await;
    user(s, "u2").await;
    let mut ids = Vec::new();
    for u in ["u1", "u2", "u1"] {
        ids.push(s.enqueue_job(&job(u, 0, 1)).await.unwrap().job.job_id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let pending: Vec<i32> = s
        .jobs_by_status(JobStatus::Pending, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(pending, ids);
    assert_eq!(
        s.jobs_by_status(JobStatus::Pending, 2).await.unwrap().len(),
        2
    );
    let claimed = s.claim_next_job().await.unwrap().unwrap();
    assert_eq!(claimed.job_id, ids[0]);
    let processing = s.jobs_by_status(JobStatus::Processing, 10).await.unwrap();
    assert_eq!(processing.len(), 1);
    let mine: Vec<i32> = s
        .user_jobs("u1")
        .await
        .unwrap()
        .iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(mine, [ids[2], ids[0]]);
    assert!(s.user_jobs("nobody").await.unwrap().is_empty());
}

async fn delete_user_removes_every_row(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for u in ["gone", "keep", "other"] {
        user(s, u).await;
    }
    s.save_tweets("gone", &[tweet("g1", ts(1), "bye")])
        .await
        .unwrap();
    s.save_tweets("keep", &[tweet("k1", ts(1), "hi")])
        .await
        .unwrap();
    s.save_analysis(&analysis("pa", "gone", None))
        .await
        .unwrap();
    s.complete_funnel_command("gone", "/start", &json!(1))
        .await
        .unwrap();
    s.mark_funnel_complete("gone", &json!({})).await.unwrap();
    s.create_referral_code("gone", "GONE1").await.unwrap();
    s.create_referral_code("keep", "KEEP1").await.unwrap();
    s.redeem_referral("GONE1", "other").await.unwrap();
    s.redeem_referral("KEEP1", "gone").await.unwrap();
    let j = s.enqueue_job(&job("gone", 0, 2)).await.unwrap();

    assert!(s.delete_user("gone").await.unwrap());
    assert!(!s.delete_user("gone").await.unwrap());
    assert_eq!(s.get_user("gone").await.unwrap(), None);
    assert_eq!(s.get_tweet("g1").await.unwrap(), None);
    assert!(s.get_tweet("k1").await.unwrap().is_some());
    assert_eq!(s.latest_analysis("gone").await.unwrap(), None);
    assert_eq!(s.funnel_progress("gone").await.unwrap(), None);
    assert_eq!(s.funnel_completion("gone").await.unwrap(), None);
    assert_eq!(s.get_referral_code("GONE1").await.unwrap(), None);
    assert!(s.referral_usage("GONE1").await.unwrap().is_empty());
    assert!(s
        .referral_stats("keep")
        .await
        .unwrap()
        .referred_user_ids
        .is_empty());
    assert!(s.referral_usage("KEEP1").await.unwrap().is_empty());
    // usage_count stays equal to the usage-log rows.
    assert_eq!(
        s.get_referral_code("KEEP1")
            .await
            .unwrap()
            .unwrap()
            .usage_count,
        Some(0)
    );
    assert_eq!(s.get_job(j.job.job_id).await.unwrap(), None);
    assert!(s.user_jobs("gone").await.unwrap().is_empty());
    // Since "other" was referred by a deleted user, they may be referred again.
    s.create_referral_code("keep", "KEEP2").await.unwrap();
    s.redeem_referral("KEEP2", "other").await.unwrap();
}

/// A top-level JSON null written into a nullable JSON column stays a JSON
/// null (`Some(Value::Null)`), apart from SQL NULL (`None`), on every store
/// and, through the dual store's copies, on the other side too.
async fn json_null_is_not_sql_null(store: Arc<dyn Store>) {
    let s = store.as_ref();

    // users.profile_data
    let mut p = profile("jn", "json-null", ts(0));
    p.profile_data = Some(Value::Null);
    let u = s.upsert_profile(&p).await.unwrap();
    assert_eq!(u.profile_data, Some(Value::Null), "upsert_profile");
    assert_eq!(
        s.get_user("jn").await.unwrap().unwrap().profile_data,
        Some(Value::Null),
        "get_user"
    );
    assert_eq!(
        s.get_user_by_username("json-null")
            .await
            .unwrap()
            .unwrap()
            .profile_data,
        Some(Value::Null),
        "get_user_by_username"
    );
    let mut q = profile("sn", "sql-null", ts(0));
    q.profile_data = None;
    assert_eq!(s.upsert_profile(&q).await.unwrap().profile_data, None);
    assert_eq!(s.get_user("sn").await.unwrap().unwrap().profile_data, None);

    // tweets.metadata
    let mut jt = tweet("tjn", ts(1), "metadata is a JSON null");
    jt.metadata = Some(Value::Null);
    let mut st = tweet("tsn", ts(2), "metadata is SQL NULL");
    st.metadata = None;
    assert_eq!(s.save_tweets("jn", &[jt, st]).await.unwrap(), 2);
    assert_eq!(
        s.get_tweet("tjn").await.unwrap().unwrap().metadata,
        Some(Value::Null),
        "get_tweet"
    );
    assert_eq!(s.get_tweet("tsn").await.unwrap().unwrap().metadata, None);
    let page: Vec<(String, Option<Value>)> = s
        .timeline("jn", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.metadata))
        .collect();
    assert_eq!(
        page,
        [
            ("tsn".to_string(), None),
            ("tjn".to_string(), Some(Value::Null))
        ],
        "timeline"
    );

    // funnel_completion.completion_data
    let c = s.mark_funnel_complete("jn", &Value::Null).await.unwrap();
    assert_eq!(c.completion_data, Some(Value::Null), "mark_funnel_complete");
    assert_eq!(
        s.funnel_completion("jn")
            .await
            .unwrap()
            .unwrap()
            .completion_data,
        Some(Value::Null),
        "funnel_completion"
    );

    // funnel_progress: the API writes no top-level value there; a null
    // response is kept as a null under its command.
    let fp = s
        .complete_funnel_command("jn", "/start", &Value::Null)
        .await
        .unwrap();
    assert_eq!(fp.command_responses, Some(json!({"/start": null})));
    assert_eq!(s.funnel_progress("jn").await.unwrap(), Some(fp));

    // analysis_chunks.result
    let j = s.enqueue_job(&job("jn", 0, 2)).await.unwrap();
    let (c0, c1) = (j.chunks[0].chunk_id, j.chunks[1].chunk_id);
    s.claim_next_job().await.unwrap().unwrap();
    s.start_chunk(c0).await.unwrap();
    let done = s.complete_chunk(c0, &Value::Null).await.unwrap();
    assert_eq!(done.result, Some(Value::Null), "complete_chunk");
    s.start_chunk(c1).await.unwrap();
    let failed = s.fail_chunk(c1, "no result").await.unwrap();
    assert_eq!(failed.result, None);
    let got = s.get_job(j.job.job_id).await.unwrap().unwrap();
    assert_eq!(got.chunks[0].result, Some(Value::Null), "get_job");
    assert_eq!(got.chunks[1].result, None);

    // personality_analysis: NOT NULL JSON columns take a JSON null as a value.
    let mut a = analysis("pjn", "jn", Some(ts(5)));
    a.traits = Value::Null;
    a.interests = Value::Null;
    a.communication_style = Value::Null;
    assert_eq!(s.save_analysis(&a).await.unwrap(), a, "save_analysis");
    assert_eq!(s.latest_analysis("jn").await.unwrap(), Some(a));
}
