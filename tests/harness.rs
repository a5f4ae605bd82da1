//! The harness itself works: a database per test, isolated from the others.

mod common;

use common::TestDb;

#[tokio::test]
async fn each_test_database_is_fresh_and_migrates() {
    let a = TestDb::migrated().await;
    let b = TestDb::new().await;
    assert_ne!(a.name, b.name);
    let pa = a.pool().await;
    let pb = b.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'users'")
        .fetch_one(&pa)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'users'")
        .fetch_one(&pb)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
