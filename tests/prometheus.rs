//! The operator's cockpit against a real Prometheus server: it scrapes an
//! application process (this test, embedding the dual store) and a
//! `cutover backfill --metrics-addr` running beside it, evaluates every
//! expression of `dashboards/cutover.json` and every rule of
//! `ops/alerts.yml` through its HTTP API, and each must return data of the
//! right shape. The alert rules' own unit tests run through `promtool`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::stage::Stage;
use cutover::{Cutover, CutoverConfig, ScrapedProfile, Store};

/// `N` distinct free addresses (held together while chosen, so none repeats).
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn fetch(addr: SocketAddr, path: String) -> String {
    tokio::task::spawn_blocking(move || common::http_get(addr, &path).unwrap_or_default())
        .await
        .unwrap()
}

/// An instant query, at `at` (Unix seconds) when given.
async fn query(prom: SocketAddr, expr: &str, at: Option<f64>) -> serde_json::Value {
    let mut path = format!("/api/v1/query?query={}", encode(expr));
    if let Some(t) = at {
        path.push_str(&format!("&time={t:.3}"));
    }
    let body = fetch(prom, path).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Every `expr` of the dashboard, with Grafana's variables filled in.
fn dashboard_exprs() -> Vec<(String, String)> {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("dashboards/cutover.json")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let e = t["expr"].as_str().unwrap().to_string();
                let e = e
                    .replace("$instance", ".*")
                    .replace("$__rate_interval", "1m");
                assert!(!e.contains('$'), "a Grafana variable left in {e}");
                out.push((p["title"].as_str().unwrap_or("").to_string(), e));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut out);
    out
}

fn scraped_value(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_every_panel_and_rule() {
    let prometheus = which("prometheus");
    let [app, backfill_addr, prom] = free_addrs::<3>();
    cutover::metrics::install_exporter(app).unwrap();

    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let sqlite = dir.file("legacy.db");
    common::generated(&sqlite, 60, 3_000, 0.01, 3);
    let mut config = CutoverConfig::new(&sqlite, db.settings.clone());
    config.dual.shadow_sample_rate = 1.0;
    config.heartbeat = Duration::from_millis(500);
    let c = Cutover::start(config).await.unwrap();

    // Go/no-go counters and the flip gauges exist at 0 before anything
    // happened (a panel shows 0, not "no data").
    let body = fetch(app, "/metrics".into()).await;
    for name in [
        "cutover_shadow_mismatches_total{",
        "cutover_busy_retries_total{",
        "cutover_secondary_write_failures_total{",
        "cutover_secondary_writes_deferred_total{",
        "cutover_conflicts_total{",
        "cutover_flip_pause_max_seconds ",
        "cutover_authority_epoch ",
        "cutover_fallback_active ",
    ] {
        assert_eq!(
            scraped_value(&body, name),
            Some(0.0),
            "{name} not at 0 from the start:\n{body}"
        );
    }

    // Prometheus scrapes this process and the backfill every second and
    // evaluates the alert rules as often.
    let pdir = dir.file("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    let cfg = pdir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{app}']\n  - job_name: backfill\n    static_configs:\n      - targets: ['{backfill_addr}']\n",
            repo("ops/alerts.yml").display()
        ),
    )
    .unwrap();
    let _server = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(pdir.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fetch(prom, "/-/ready".into()).await.contains("Ready") {
        assert!(
            Instant::now() < deadline,
            "prometheus did not start: {}",
            std::fs::read_to_string(pdir.join("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Targets are picked up a few seconds after start: wait for the first
    // scrape of this process before the migration begins.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = query(prom, "up{job=\"app\"} == 1", None).await;
        if r["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped this process"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let store = c.store();
    let traffic = |n: usize| {
        let store = store.clone();
        async move {
            for i in 0..n {
                let id = format!("p{i}");
                store
                    .upsert_profile(&ScrapedProfile {
                        id: id.clone(),
                        username: id.clone(),
                        profile_data: None,
                        profile_picture_url: None,
                        scraped_at: cutover::now(),
                    })
                    .await
                    .unwrap();
                store.get_user(&id).await.unwrap();
            }
        }
    };
    traffic(20).await;
    let mut pauses = vec![c.set_stage(Stage::DualWrite, false).await.unwrap()];

    // The backfill as the runbook runs it, throttled so that it is scraped.
    let backfill = common::cutover_cmd(
        dir.0.path(),
        &sqlite,
        Some(&db),
        &[
            "backfill",
            "--metrics-addr",
            &backfill_addr.to_string(),
            "--max-rows-per-sec",
            "800",
            "--metrics-linger",
            "2",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = unix_now();
    let out = tokio::task::spawn_blocking(move || backfill.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let ended = unix_now();
    let (o, e) = common::text(&out);
    assert!(out.status.success(), "backfill: {o}{e}");
    traffic(10).await;
    // A moment while the backfill ran at which Prometheus had its metrics.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The latest moment the backfill's metrics were there (the most
    // samples behind a rate over its run).
    let mut during_backfill = None;
    let mut t = ended + 1.0;
    while t >= started && during_backfill.is_none() {
        let r = query(
            prom,
            "cutover_backfill_remaining{job=\"backfill\"}",
            Some(t),
        )
        .await;
        if r["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            during_backfill = Some(t);
        }
        t -= 0.25;
    }
    let Some(during_backfill) = during_backfill else {
        let up = query(
            prom,
            "count_over_time(up{job=\"backfill\"}[1m]) or sum_over_time(up{job=\"backfill\"}[1m])",
            None,
        )
        .await;
        let names = query(
            prom,
            "count by (__name__) ({job=\"backfill\"})",
            Some(ended),
        )
        .await;
        let targets = format!("{up} {names}");
        panic!("Prometheus never scraped `cutover backfill --metrics-addr` ({:.1} s run): targets {targets}\nbackfill: {e}", ended - started);
    };

    pauses.push(c.set_stage(Stage::Shadow, false).await.unwrap());
    traffic(20).await;
    let report = cutover::verify::verify(&cutover::verify::VerifyOptions::new(
        &sqlite,
        db.settings.clone(),
    ))
    .await
    .unwrap();
    assert!(report.clean, "{report:?}");
    pauses.push(c.set_stage(Stage::Live, false).await.unwrap());
    traffic(20).await;

    // The max gauge is the real longest pause, not a bucket bound.
    let body = fetch(app, "/metrics".into()).await;
    let max = pauses.iter().map(|p| p.as_secs_f64()).fold(0.0, f64::max);
    assert_eq!(
        scraped_value(&body, "cutover_flip_pause_max_seconds "),
        Some(max),
        "{pauses:?}"
    );
    assert_eq!(scraped_value(&body, "cutover_stage "), Some(3.0));
    drop(body);

    // A flip made by the command, as the runbook does it, shows on this
    // process's flip gauges too (its heartbeat reads the recorded pause).
    let (o, e) = {
        let out = common::cutover_cmd(
            dir.0.path(),
            &sqlite,
            Some(&db),
            &["stage", "set", "rampdown"],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{:?}", common::text(&out));
        common::text(&out)
    };
    let pool = db.pool().await;
    let cli_pause: f64 = sqlx::query_scalar(
        "SELECT pause_ms FROM cutover.stage_history WHERE to_stage = 'rampdown' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = fetch(app, "/metrics".into()).await;
        let last = scraped_value(&body, "cutover_flip_pause_last_seconds ");
        if last.is_some_and(|l| (l * 1000.0 - cli_pause).abs() < 1e-6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI's flip pause ({cli_pause} ms) never reached this process: last {last:?}; {o}{e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Let Prometheus take a few scrapes of the end state.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut problems = Vec::new();
    for (title, expr) in dashboard_exprs() {
        let mut shown = false;
        for at in [None, Some(during_backfill)] {
            let r = query(prom, &expr, at).await;
            if r["status"] != "success" {
                problems.push(format!("{title}: {expr}: {r}"));
                break;
            }
            let data = &r["data"];
            match data["resultType"].as_str() {
                Some("vector") => {
                    let rows = data["result"].as_array().unwrap();
                    if rows.iter().any(|row| row["value"][1].as_str().is_none()) {
                        problems.push(format!("{title}: {expr}: a sample without a value: {r}"));
                    }
                    if !rows.is_empty() {
                        shown = true;
                        break;
                    }
                }
                other => problems.push(format!("{title}: {expr}: result type {other:?}")),
            }
        }
        if !shown {
            problems.push(format!(
                "{title}: {expr}: no data at the end of the run nor during the backfill"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard panels without data:\n{}",
        problems.join("\n")
    );

    // Every alert rule evaluated without error; none of the go/no-go alerts
    // fires on a healthy migration.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rules = loop {
        let r: serde_json::Value =
            serde_json::from_str(&fetch(prom, "/api/v1/rules".into()).await).unwrap();
        let rules: Vec<serde_json::Value> = r["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        if rules.iter().all(|r| r["health"] == "ok") || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(rules.len() >= 5, "{rules:?}");
    for r in &rules {
        assert_eq!(
            r["health"], "ok",
            "rule {} does not evaluate: {}",
            r["name"], r["lastError"]
        );
        let q = query(prom, r["query"].as_str().unwrap(), None).await;
        assert_eq!(q["status"], "success", "{}: {q}", r["name"]);
        assert_eq!(q["data"]["resultType"], "vector", "{}: {q}", r["name"]);
    }
    for name in [
        "CutoverShadowMismatch",
        "CutoverFallbackActive",
        "CutoverSecondaryWriteFailures",
        "CutoverProcessBehindAuthority",
    ] {
        let r = rules
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            r["state"], "inactive",
            "{name} fires on a healthy migration: {r}"
        );
    }
    c.shutdown().await;
}

fn which(tool: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} is needed (scripts/install-tools.sh installs it)"))
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = which("promtool");
    for args in [
        vec!["check", "rules", "ops/alerts.yml"],
        vec!["test", "rules", "ops/alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_dashboard_names_stages_and_has_a_per_process_view() {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("dashboards/cutover.json")).unwrap())
            .unwrap();
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "instance"),
        "no instance variable"
    );
    let panels = d["panels"].as_array().unwrap();
    let stage = panels
        .iter()
        .find(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("cutover_stage"))
        })
        .unwrap();
    let text = stage["fieldConfig"].to_string();
    for name in ["off", "dualwrite", "shadow", "live", "rampdown", "complete"] {
        assert!(
            text.contains(&format!("\"{name}\"")),
            "stage {name} not mapped: {text}"
        );
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let exprs = p["targets"].to_string();
        assert!(
            !(exprs.contains("cutover_backfill_rows_total")
                && exprs.contains("cutover_backfill_remaining")),
            "{}: rows/s and remaining rows on one axis",
            p["title"]
        );
        assert!(
            p["fieldConfig"]["defaults"]["unit"].is_string(),
            "panel {} has no unit",
            p["title"]
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            assert!(
                !e.contains("histogram_quantile(1"),
                "{}: a quantile of 1 shows a bucket bound, not the max",
                p["title"]
            );
        }
    }
}
