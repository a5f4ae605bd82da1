//! The throwaway server starts, stops and starts again on the same data.

use cutover::pgserver::PgServer;
use sqlx::Connection;

#[tokio::test]
async fn restart_keeps_data() {
    let mut s = PgServer::start_new().unwrap();
    let opts = s.settings("postgres").connect_options();
    let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (42)")
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);
    s.stop().unwrap();
    assert!(sqlx::PgConnection::connect_with(&opts).await.is_err());
    s.start().unwrap();
    let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(x, 42);
}
