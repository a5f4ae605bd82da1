//! Clears of PostgreSQL's outbox from several processes at once: each
//! process clears the entries it applied, in its own order, and several
//! apply the same entries (their writes' landings, their replayers, a
//! flip's drain under its lock). A clear must never wait for another
//! transaction holding some of its entries while holding others: two such
//! waits crosswise are a deadlock, which PostgreSQL breaks only after a
//! second (`deadlock_timeout`) by failing one side — under a flip's lock,
//! that second is the writers' pause.

mod common;

use std::time::Duration;

use common::TestDb;
use cutover::changes::Change;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_skips_entries_another_transaction_holds_instead_of_waiting_crosswise() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO cutover.outbox (table_name, row_key) \
         SELECT 'users', 'k' || g FROM generate_series(1, 100) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let max: i64 = sqlx::query_scalar("SELECT max(id) FROM cutover.outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    let all: Vec<(Change, i64)> = (1..=100)
        .map(|i| (Change::new("users", format!("k{i}")), max))
        .collect();

    // Another process's clear holds k50 (its transaction not yet committed).
    let mut other = sqlx::PgConnection::connect_with(&db.settings.connect_options())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; DELETE FROM cutover.outbox WHERE row_key = 'k50'")
        .execute(&mut other)
        .await
        .unwrap();

    // This process clears every key; meanwhile the other clears the rest.
    let clear = {
        let pool = pool.clone();
        tokio::spawn(async move { cutover::outbox::pg_clear_many(&pool, &all).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let theirs = sqlx::raw_sql("DELETE FROM cutover.outbox WHERE row_key <> 'k50'; COMMIT")
        .execute(&mut other)
        .await;
    let ours = clear.await.unwrap();
    assert!(theirs.is_ok(), "the other clear failed: {theirs:?}");
    let ours = ours.expect("this clear");
    assert_eq!(ours, 99, "every entry but the one the other clear held");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM cutover.outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
