//! The Prometheus exporter serves the metrics of docs/DESIGN.md §8 in a form
//! `promtool check metrics` accepts.

mod common;

use std::io::Write;
use std::time::Duration;

use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::stage::Stage;
use cutover::{PgStore, ScrapedProfile, SqliteStore, Store};

fn scrape(addr: std::net::SocketAddr) -> String {
    common::http_get(addr, "/metrics").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_serves_valid_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    cutover::metrics::install_exporter(addr).unwrap();

    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let s = SqliteStore::open(dir.file("m.db")).await.unwrap();
    let p = PgStore::connect(&db.settings).await.unwrap();
    let d = DualStore::forced(s, p, Stage::Shadow, DualConfig::default())
        .await
        .unwrap();
    d.upsert_profile(&ScrapedProfile {
        id: "u".into(),
        username: "u".into(),
        profile_data: None,
        profile_picture_url: None,
        scraped_at: cutover::now(),
    })
    .await
    .unwrap();
    d.get_user("u").await.unwrap();
    d.outbox_pending().await.unwrap();
    let names = [
        "cutover_stage",
        "cutover_op_duration_seconds",
        "cutover_outbox_pending",
        "cutover_shadow_comparisons_total",
    ];
    // The shadow comparison runs on its own task: scrape until it is in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .unwrap();
        if names.iter().all(|n| body.contains(n)) || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for name in names {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    assert!(body.contains("backend=\"sqlite\""), "{body}");

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool rejected the metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => panic!("promtool is needed (scripts/install-tools.sh installs it): {e}"),
    }
}
