//! `cutover demo`: the whole cutover under simulated live traffic.
//!
//! A generated legacy file (with messy values) and a PostgreSQL (a throwaway
//! server from the local binaries, or a database of its own created on the
//! server given) are moved through every stage while workers run the
//! application's real mix of calls through the `Cutover` handle:
//! off → dualwrite (backfill) → shadow (PostgreSQL restarted) → verify →
//! live (PostgreSQL restarted: fallback) → rollback to shadow → live →
//! rampdown (final verify) → complete. The report says whether every
//! guarantee held: no failed call, no real mismatch, an empty outbox, a
//! clean verify, a reconciled backfill. Flip pauses and latencies are
//! reported beside them (figures of the machine, not guarantees).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::backfill::{self, BackfillOptions};
use crate::cutover::{Cutover, CutoverConfig};
use crate::error::{Error, Result};
use crate::generate::{self, GenerateOptions};
use crate::model::*;
use crate::pgserver::PgServer;
use crate::settings::PgSettings;
use crate::stage::Stage;
use crate::store::Store;
use crate::verify::{self, VerifyOptions};

/// What the demo runs on.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Total wall time of the traffic.
    pub duration: Duration,
    /// Users in the generated legacy file.
    pub users: u64,
    /// Tweets in the generated legacy file.
    pub tweets: u64,
    /// Fraction of generated rows with a messy value.
    pub dirty: f64,
    /// An existing server: the demo creates a database of its own there and
    /// drops it at the end. None: a throwaway server.
    pub postgres: Option<PgSettings>,
    /// Where to serve metrics (None: no exporter).
    pub metrics_addr: Option<SocketAddr>,
    /// Concurrent application workers.
    pub workers: usize,
    /// Show a live status line on stderr, pinned below the log lines
    /// (which must be written through the same `MultiProgress`).
    pub live_view: Option<indicatif::MultiProgress>,
    /// Seed of the generator and the traffic.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            users: 2_000,
            tweets: 50_000,
            dirty: 0.01,
            postgres: None,
            metrics_addr: None,
            workers: 8,
            live_view: None,
            seed: 42,
        }
    }
}

/// Latency of the calls made in one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageLatency {
    /// Stage name.
    pub stage: String,
    /// Calls made.
    pub ops: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// What the demo found.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Every guarantee held.
    pub ok: bool,
    /// Why `ok` is false (empty when true).
    pub broken: Vec<String>,
    /// Calls the workers made.
    pub ops: u64,
    /// Calls that returned an error (other than `outcome_unknown_ops`).
    pub failed_ops: u64,
    /// Writes whose COMMIT an outage cut (`Error::OutcomeUnknown`).
    pub outcome_unknown_ops: u64,
    /// The first failed calls' errors, with the stage they ran in.
    pub failures: Vec<String>,
    /// Stages visited, in order.
    pub stages: Vec<String>,
    /// Latency per stage.
    pub latency: Vec<StageLatency>,
    /// Longest pause writers saw at an authority flip.
    pub max_flip_pause_ms: f64,
    /// Every flip pause, in order.
    pub flip_pauses_ms: Vec<f64>,
    /// The transition of each flip pause ("off → dualwrite"), in order.
    pub flip_transitions: Vec<String>,
    /// Shadow comparisons made.
    pub shadow_comparisons: u64,
    /// Mismatches that were real divergence.
    pub shadow_mismatches_real: u64,
    /// Mismatches that went away once the outbox applied.
    pub shadow_mismatches_lag_resolved: u64,
    /// Mismatches on rows still changing when the re-check gave up (neither
    /// resolved nor shown to persist; the final verify checks the rows).
    pub shadow_mismatches_unsettled: u64,
    /// Mismatches on legacy rows recorded as rejects (accounted for).
    pub shadow_mismatches_rejected: u64,
    /// Outbox entries left at the end.
    pub outbox_pending_end: i64,
    /// Entries the replayer applied (after outages).
    pub outbox_replayed: u64,
    /// Secondary writes that failed and went through the outbox instead.
    pub secondary_write_failures: u64,
    /// Copies to PostgreSQL deferred in `dualwrite` because the row's
    /// parent was not copied yet (designed; through the outbox).
    pub secondary_writes_deferred: u64,
    /// Times the store fell back to SQLite.
    pub fallbacks: u64,
    /// PostgreSQL restarts made (0 with an external server).
    pub postgres_restarts: u32,
    /// Rows the backfill copied.
    pub backfill_copied: u64,
    /// Legacy rows rejected (kept in cutover.rejects).
    pub rejected_rows: u64,
    /// Backfill reconciliation (source = copied + rejected) held.
    pub backfill_reconciled: bool,
    /// Divergent rows found by the final verify.
    pub verify_divergent_rows: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

struct Traffic {
    stop: AtomicBool,
    ops: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    unknown: AtomicU64,
    latencies: Mutex<BTreeMap<Stage, Vec<f64>>>,
}

/// Failed calls whose errors the report keeps.
const KEPT_FAILURES: usize = 10;

const WORDS: [&str; 12] = [
    "rust",
    "database",
    "migration",
    "coffee",
    "launch",
    "weekend",
    "music",
    "postgres",
    "travel",
    "startup",
    "design",
    "football",
];

/// One round of the demo's application traffic by worker `w` (its `i`th):
/// scraping (a profile and five tweets), timelines, searches, the funnel,
/// referrals, the analysis queue or an analysis, drawn at random. Returns
/// whether the round wrote (the timeline and search rounds only read).
pub async fn one_round(store: &dyn Store, rng: &mut StdRng, w: usize, i: u64) -> Result<bool> {
    let user = format!("demo-w{w}-u{}", rng.random_range(0..8));
    let now = now();
    let draw = rng.random_range(0..100);
    let wrote = !(20..=54).contains(&draw);
    match draw {
        0..=19 => {
            store
                .upsert_profile(&ScrapedProfile {
                    id: user.clone(),
                    username: format!("@{user}"),
                    profile_data: Some(json!({"followers": rng.random_range(0..10_000), "bio": "building things 🚀"})),
                    profile_picture_url: Some(format!("https://pbs.example/{user}.jpg")),
                    scraped_at: now,
                })
                .await?;
            let tweets: Vec<NewTweet> = (0..5)
                .map(|k| NewTweet {
                    id: format!("{user}-t{i}-{k}"),
                    text: format!(
                        "{} and {} today #{} @friend https://t.co/{i}{k} 🎉",
                        WORDS[rng.random_range(0..WORDS.len())],
                        WORDS[rng.random_range(0..WORDS.len())],
                        WORDS[rng.random_range(0..WORDS.len())]
                    ),
                    created_at: now - chrono::Duration::seconds(rng.random_range(0..86_400)),
                    url: Some(format!("https://twitter.com/{user}/status/{i}{k}")),
                    is_reply: Some(k % 3 == 0),
                    metadata: Some(json!({"likes": k, "retweets": i % 7, "lang": "en"})),
                })
                .collect();
            store.save_tweets(&user, &tweets).await?;
        }
        20..=44 => {
            let page = store.timeline(&user, 20, None).await?;
            if let Some(last) = page.last() {
                store
                    .timeline(&user, 20, Some(&TimelineCursor::after(last)))
                    .await?;
            }
            store.count_tweets(&user).await?;
        }
        45..=54 => {
            store
                .search_tweets(WORDS[rng.random_range(0..WORDS.len())], 20)
                .await?;
        }
        55..=64 => {
            if store.get_user(&user).await?.is_some() {
                store
                    .complete_funnel_command(
                        &user,
                        &format!("/step{}", i % 5),
                        &json!({"answer": i}),
                    )
                    .await?;
                store.funnel_progress(&user).await?;
                if i.is_multiple_of(10) {
                    store
                        .mark_funnel_complete(&user, &json!({"score": i % 100}))
                        .await?;
                }
            }
        }
        65..=74 => {
            if store.get_user(&user).await?.is_some() {
                let code = format!("REF-{user}");
                if store.get_referral_code(&code).await?.is_none() {
                    store.create_referral_code(&user, &code).await?;
                }
                let newcomer = format!("demo-new-w{w}-{i}");
                store
                    .upsert_profile(&ScrapedProfile {
                        id: newcomer.clone(),
                        username: format!("@{newcomer}"),
                        profile_data: None,
                        profile_picture_url: None,
                        scraped_at: now,
                    })
                    .await?;
                store.redeem_referral(&code, &newcomer).await?;
                store.referral_stats(&user).await?;
            }
        }
        75..=89 => {
            if store.get_user(&user).await?.is_some() {
                store
                    .enqueue_job(&NewJob {
                        user_id: user.clone(),
                        priority: rng.random_range(0..3),
                        chunk_tweet_counts: vec![50, 50, 20],
                    })
                    .await?;
                if let Some(job) = store.claim_next_job().await? {
                    if let Some(j) = store.get_job(job.job_id).await? {
                        for c in &j.chunks {
                            store.start_chunk(c.chunk_id).await?;
                            store
                                .complete_chunk(c.chunk_id, &json!({"traits": {"openness": 0.5}}))
                                .await?;
                        }
                        store.complete_job(job.job_id).await?;
                    }
                }
                store.user_jobs(&user).await?;
            }
        }
        _ => {
            if store.get_user(&user).await?.is_some() {
                store
                    .save_analysis(&PersonalityAnalysis {
                        id: format!("pa-{user}-{}", i % 3),
                        user_id: user.clone(),
                        traits: json!({"openness": 0.7}),
                        interests: json!(["rust", "coffee"]),
                        communication_style: json!({"tone": "warm"}),
                        analyzed_at: None,
                    })
                    .await?;
                store.latest_analysis(&user).await?;
            }
        }
    }
    Ok(wrote)
}

fn worker(
    cutover: Arc<Cutover>,
    t: Arc<Traffic>,
    w: usize,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let store = cutover.store();
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 * 7919));
        let mut i = 0u64;
        while !t.stop.load(Ordering::Relaxed) {
            i += 1;
            let stage = cutover.stage();
            let started = Instant::now();
            let r = one_round(&store, &mut rng, w, i).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            t.ops.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = r {
                if matches!(e, crate::Error::OutcomeUnknown { .. }) {
                    // An outage cut the COMMIT: reported, not a broken
                    // guarantee (the write is applied once or not at all).
                    t.unknown.fetch_add(1, Ordering::Relaxed);
                } else {
                    t.failed.fetch_add(1, Ordering::Relaxed);
                }
                tracing::error!(worker = w, error = %e, "application call failed");
                let mut kept = t.failures.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() < KEPT_FAILURES {
                    kept.push(format!("{stage}: {e:#}"));
                }
            }
            t.latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(stage)
                .or_default()
                .push(ms);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The PostgreSQL the demo runs on: a throwaway server, or a database of its
/// own on a given server.
enum Target {
    Embedded(PgServer),
    External {
        admin: Box<PgSettings>,
        database: String,
    },
}

impl Target {
    async fn create(given: Option<PgSettings>) -> Result<(Target, PgSettings)> {
        match given {
            None => {
                let server = tokio::task::spawn_blocking(PgServer::start_new)
                    .await
                    .map_err(|e| Error::Config(format!("starting PostgreSQL: {e}")))??;
                let s = server.settings("postgres");
                Ok((Target::Embedded(server), s))
            }
            Some(admin) => {
                let database = format!(
                    "cutover_demo_{}_{}",
                    std::process::id(),
                    chrono::Utc::now().timestamp()
                );
                let pool = sqlx::PgPool::connect_with(admin.connect_options()).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE \"{database}\""
                )))
                .execute(&pool)
                .await?;
                pool.close().await;
                let s = admin.with_database(&database);
                Ok((
                    Target::External {
                        admin: Box::new(admin),
                        database,
                    },
                    s,
                ))
            }
        }
    }

    async fn restart(&mut self, down_for: Duration) -> Result<bool> {
        let Target::Embedded(server) = self else {
            return Ok(false);
        };
        tracing::warn!("demo: stopping PostgreSQL");
        tokio::task::block_in_place(|| server.stop())?;
        tokio::time::sleep(down_for).await;
        tokio::task::block_in_place(|| server.start())?;
        tracing::warn!("demo: PostgreSQL is back");
        Ok(true)
    }

    async fn cleanup(self) {
        if let Target::External { admin, database } = self {
            if let Ok(pool) = sqlx::PgPool::connect_with(admin.connect_options()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                )))
                .execute(&pool)
                .await;
            }
        }
    }
}

/// Verifies, draining first and trying again when writes in flight made a
/// pass see rows mid-copy.
async fn settled_verify(cutover: &Cutover, opts: &VerifyOptions) -> Result<verify::VerifyReport> {
    let mut last = None;
    for _ in 0..4 {
        let store = cutover.store();
        let _ = store.drain(crate::Backend::Sqlite, 1000).await;
        let _ = store.drain(crate::Backend::Postgres, 1000).await;
        let r = verify::verify(opts).await?;
        if r.clean {
            return Ok(r);
        }
        tracing::info!(
            divergent = r.divergent_rows,
            "verify saw rows in flight; verifying again"
        );
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(last.expect("at least one pass"))
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> Result<DemoReport> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("cutover-demo-")
        .tempdir()
        .map_err(|e| Error::Io {
            context: "creating the demo directory".into(),
            source: e,
        })?;
    let sqlite_path: PathBuf = dir.path().join("twitter.db");
    tracing::info!(
        users = opts.users,
        tweets = opts.tweets,
        "demo: generating the legacy database"
    );
    let gen_opts = GenerateOptions {
        users: opts.users,
        tweets: opts.tweets,
        dirty: opts.dirty,
        seed: opts.seed,
    };
    let p = sqlite_path.clone();
    tokio::task::spawn_blocking(move || generate::generate(&p, &gen_opts))
        .await
        .map_err(|e| Error::Config(format!("generator: {e}")))??;

    let (mut target, mut pg) = Target::create(opts.postgres.clone()).await?;
    pg.pool.acquire_timeout = Duration::from_millis(800);
    pg.pool.max_connections = 20;
    let result = drive(&opts, &sqlite_path, &pg, &mut target, started).await;
    target.cleanup().await;
    result
}

async fn drive(
    opts: &DemoOptions,
    sqlite_path: &std::path::Path,
    pg: &PgSettings,
    target: &mut Target,
    started: Instant,
) -> Result<DemoReport> {
    let mut config = CutoverConfig::new(sqlite_path, pg.clone());
    config.actor = "demo".into();
    // The demo's database is its own: it applies the schema itself.
    config.migrate = true;
    config.dual.shadow_sample_rate = 0.5;
    let cutover = Arc::new(Cutover::start(config).await?);
    let traffic = Arc::new(Traffic {
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        unknown: AtomicU64::new(0),
        latencies: Mutex::new(BTreeMap::new()),
    });
    let workers: Vec<_> = (0..opts.workers)
        .map(|w| worker(cutover.clone(), traffic.clone(), w, opts.seed))
        .collect();

    let view_stop = Arc::new(AtomicBool::new(false));
    let view = opts.live_view.clone().map(|multi| {
        let (c, t, s) = (cutover.clone(), traffic.clone(), view_stop.clone());
        tokio::spawn(async move {
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            let mut last_ops = 0;
            while !s.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let ops = t.ops.load(Ordering::Relaxed);
                let d = c.store();
                let k = d.counters();
                let pending = d.outbox_pending().await.unwrap_or(-1);
                bar.set_message(format!(
                    "stage {:<9} {:>5} ops/s  failed {}  shadow {} compared, {} mismatched ({} lag)  outbox {}  fallback {}",
                    c.stage().as_str(),
                    (ops - last_ops) * 2,
                    t.failed.load(Ordering::Relaxed),
                    k.comparisons,
                    k.mismatches_real,
                    k.mismatches_lag_resolved,
                    pending,
                    if d.routing().fallback { "ACTIVE" } else { "off" }
                ));
                bar.tick();
                last_ops = ops;
            }
            bar.finish_and_clear();
        })
    });

    let d = opts.duration.as_secs_f64();
    let phase = |f: f64| Duration::from_secs_f64((d * f).max(0.5));
    let mut stages = vec![Stage::Off.to_string()];
    let mut pauses = Vec::new();
    let mut restarts = 0;

    let set = |to: Stage, force: bool| {
        let c = cutover.clone();
        async move { c.set_stage(to, force).await }
    };

    tokio::time::sleep(phase(0.06)).await;
    pauses.push(set(Stage::DualWrite, false).await?);
    stages.push(Stage::DualWrite.to_string());

    // Backfill while traffic runs.
    let bf = BackfillOptions::new(sqlite_path, pg.clone());
    let phase_start = Instant::now();
    let summary = backfill::run(bf, std::future::pending()).await?;
    let backfill_copied: u64 = summary.tables.iter().map(|t| t.copied).sum();
    let rejected_rows: u64 = summary.tables.iter().map(|t| t.rejected_total()).sum();
    let reconciled = summary.reconciled();
    tracing::info!(
        copied = backfill_copied,
        rejected = rejected_rows,
        "demo: backfill done"
    );
    if let Some(rest) = phase(0.12).checked_sub(phase_start.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    pauses.push(set(Stage::Shadow, false).await?);
    stages.push(Stage::Shadow.to_string());
    tokio::time::sleep(phase(0.06)).await;
    if target.restart(Duration::from_millis(1500)).await? {
        restarts += 1;
    } else {
        tracing::info!("demo: external PostgreSQL, restarts skipped");
    }
    tokio::time::sleep(phase(0.08)).await;

    let vopts = VerifyOptions::new(sqlite_path, pg.clone());
    let v = settled_verify(&cutover, &vopts).await?;
    tracing::info!(
        clean = v.clean,
        divergent = v.divergent_rows,
        "demo: verify before going live"
    );

    pauses.push(set(Stage::Live, false).await?);
    stages.push(Stage::Live.to_string());
    tokio::time::sleep(phase(0.07)).await;
    if target.restart(Duration::from_millis(1500)).await? {
        restarts += 1;
    }
    tokio::time::sleep(phase(0.08)).await;

    pauses.push(set(Stage::Shadow, false).await?);
    stages.push(Stage::Shadow.to_string());
    tokio::time::sleep(phase(0.1)).await;
    // The rollback window wrote SQLite first; check before going live again.
    let v = settled_verify(&cutover, &vopts).await?;
    tracing::info!(
        clean = v.clean,
        divergent = v.divergent_rows,
        "demo: verify after the rollback"
    );
    pauses.push(set(Stage::Live, false).await?);
    stages.push(Stage::Live.to_string());
    tokio::time::sleep(phase(0.1)).await;

    pauses.push(set(Stage::Rampdown, false).await?);
    stages.push(Stage::Rampdown.to_string());
    tokio::time::sleep(phase(0.1)).await;
    let final_verify = settled_verify(&cutover, &vopts).await?;

    pauses.push(set(Stage::Complete, false).await?);
    stages.push(Stage::Complete.to_string());
    tokio::time::sleep(phase(0.08)).await;

    traffic.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    view_stop.store(true, Ordering::Relaxed);
    if let Some(v) = view {
        let _ = v.await;
    }
    // Let pending shadow comparisons finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = cutover.store();
    let outbox_pending_end = store.outbox_pending().await?;
    let k = store.counters();

    let latencies = traffic
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let latency = latencies
        .into_iter()
        .map(|(stage, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            StageLatency {
                stage: stage.to_string(),
                ops: v.len() as u64,
                p50_ms: percentile(&v, 0.5),
                p99_ms: percentile(&v, 0.99),
            }
        })
        .collect();
    let flip_pauses_ms: Vec<f64> = pauses.iter().map(|p| p.as_secs_f64() * 1000.0).collect();
    let flip_transitions: Vec<String> = stages
        .windows(2)
        .map(|w| format!("{} → {}", w[0], w[1]))
        .collect();
    let max_flip_pause_ms = flip_pauses_ms.iter().cloned().fold(0.0, f64::max);
    let ops = traffic.ops.load(Ordering::Relaxed);
    let failed_ops = traffic.failed.load(Ordering::Relaxed);

    let mut broken = Vec::new();
    if failed_ops > 0 {
        broken.push(format!("{failed_ops} application calls failed"));
    }
    if k.mismatches_real > 0 {
        // Which rows: the report says what to look at.
        let which: Vec<String> = store
            .recent_mismatches()
            .iter()
            .map(|m| {
                format!(
                    "{} {} {:?} key {:?} field {:?}",
                    m.op, m.table, m.kind, m.key, m.field
                )
            })
            .collect();
        broken.push(format!(
            "{} real shadow mismatches ({})",
            k.mismatches_real,
            which.join("; ")
        ));
    }
    if outbox_pending_end != 0 {
        broken.push(format!("{outbox_pending_end} outbox entries left"));
    }
    if !final_verify.clean {
        broken.push(format!(
            "final verify found {} divergent rows",
            final_verify.divergent_rows
        ));
    }
    if !reconciled {
        broken.push("backfill reconciliation failed".into());
    }
    let report = DemoReport {
        ok: broken.is_empty(),
        broken,
        ops,
        failed_ops,
        outcome_unknown_ops: traffic.unknown.load(Ordering::Relaxed),
        failures: traffic
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        stages,
        latency,
        max_flip_pause_ms,
        flip_pauses_ms,
        flip_transitions,
        shadow_comparisons: k.comparisons,
        shadow_mismatches_real: k.mismatches_real,
        shadow_mismatches_lag_resolved: k.mismatches_lag_resolved,
        shadow_mismatches_unsettled: k.mismatches_unsettled,
        shadow_mismatches_rejected: k.mismatches_rejected,
        outbox_pending_end,
        outbox_replayed: k.replayed,
        secondary_write_failures: k.secondary_failures,
        secondary_writes_deferred: k.secondary_deferred,
        fallbacks: k.fallbacks,
        postgres_restarts: restarts,
        backfill_copied,
        rejected_rows,
        backfill_reconciled: reconciled,
        verify_divergent_rows: final_verify.divergent_rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    match Arc::try_unwrap(cutover) {
        Ok(c) => c.shutdown().await,
        Err(_) => tracing::debug!("cutover handle still shared at the end"),
    }
    Ok(report)
}
