//! DualStore overhead per stage against the bare stores, and the authority
//! flip pause under load (criterion).
//!
//! `cargo bench --bench dual` (PostgreSQL from `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the bench creates and drops
//! a database of its own there).
//!
//! - `read/*`: `get_user` of an existing user: bare SQLite, bare PostgreSQL,
//!   then the dual store in each stage (shadow stages at the default sample
//!   rate, so the comparison task is included in the cost).
//! - `write/*`: `upsert_profile` of an existing user (one row changed), bare
//!   and through the dual store in each stage (both sides written in the
//!   dual-write stages).
//! - `flip/*`: the pause writers see at `shadow → live` and `live → shadow`
//!   while 8 writers run; each sample is one flip.
//! - `overhead/read/*`: bare and dual reads timed back to back in one loop
//!   (the order alternating); each sample prints both means and the ratio.
//! - `overhead/write/*`: blocks of bare PostgreSQL writes alternate with
//!   blocks of dual-store writes; each sample prints both medians (p50),
//!   their ratio and both p90s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover::dual::{DualConfig, DualStore};
use cutover::internals::Internals;
use cutover::settings::PgSettings;
use cutover::stage::Stage;
use cutover::{PgStore, ScrapedProfile, SqliteStore, Store};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const USERS: usize = 200;

fn profile(i: usize, n: u64) -> ScrapedProfile {
    ScrapedProfile {
        id: format!("bench-{i}"),
        username: format!("@bench{i}"),
        profile_data: Some(json!({"followers": n, "bio": "benchmarking 🚀"})),
        profile_picture_url: Some(format!("https://pbs.example/{i}.jpg")),
        scraped_at: Utc::now(),
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    sqlite: SqliteStore,
    pg: PgStore,
    dual: DualStore,
    admin: PgSettings,
    database: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgSettings::from_url(&url).expect("DATABASE_URL");
    let database = format!("cutover_bench_dual_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let (sqlite, pg, dual) = rt.block_on(async {
        let mut c = PgConnection::connect_with(&admin.connect_options())
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\" TEMPLATE template0 ENCODING 'UTF8'"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.ok();
        let sqlite = SqliteStore::open(&path).await.unwrap();
        let pg = PgStore::connect(&admin.with_database(&database))
            .await
            .unwrap();
        cutover::pg::migrate(pg.pool()).await.unwrap();
        // The dual store gets stores of its own: a store's outbox switch
        // is shared by its clones, and the bare stores must not record.
        let dual = DualStore::forced(
            SqliteStore::open(&path).await.unwrap(),
            PgStore::connect(&admin.with_database(&database))
                .await
                .unwrap(),
            Stage::Off,
            DualConfig::default(),
        )
        .await
        .unwrap();
        // The same users on both sides, written through the dual store so
        // that both hold the very same rows (each store stamps created_at
        // itself): shadow reads then compare equal rows, and no lag
        // re-checks run beside the measurements.
        dual.switch(Stage::DualWrite).await.unwrap();
        for i in 0..USERS {
            dual.upsert_profile(&profile(i, 0)).await.unwrap();
        }
        dual.switch(Stage::Off).await.unwrap();
        (sqlite, pg, dual)
    });
    Env {
        rt,
        sqlite,
        pg,
        dual,
        admin,
        database,
        _dir: dir,
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let (admin, database) = (self.admin.clone(), self.database.clone());
        self.rt.block_on(async move {
            if let Ok(mut c) = PgConnection::connect_with(&admin.connect_options()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        });
    }
}

fn bench_overhead(c: &mut Criterion) {
    let owned = setup();
    let env = &owned;
    let mut n = 0usize;
    let mut next = move || {
        n = n.wrapping_add(1);
        n
    };

    let bare: [(&str, &dyn Store); 2] = [("sqlite", &env.sqlite), ("postgres", &env.pg)];

    let mut g = c.benchmark_group("read");
    for (name, store) in bare {
        g.bench_function(name, |b| {
            b.to_async(&env.rt).iter(|| {
                let i = next() % USERS;
                async move { store.get_user(&format!("bench-{i}")).await.unwrap() }
            })
        });
    }
    for stage in Stage::ALL {
        env.rt.block_on(env.dual.switch(stage)).unwrap();
        g.bench_with_input(BenchmarkId::new("dual", stage), &stage, |b, _| {
            b.to_async(&env.rt).iter(|| {
                let i = next() % USERS;
                async move { env.dual.get_user(&format!("bench-{i}")).await.unwrap() }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("write");
    for (name, store) in bare {
        g.bench_function(name, |b| {
            b.to_async(&env.rt).iter(|| {
                let k = next();
                async move {
                    store
                        .upsert_profile(&profile(k % USERS, k as u64))
                        .await
                        .unwrap()
                }
            })
        });
    }
    for stage in Stage::ALL {
        env.rt.block_on(env.dual.switch(stage)).unwrap();
        g.bench_with_input(BenchmarkId::new("dual", stage), &stage, |b, _| {
            b.to_async(&env.rt).iter(|| {
                let k = next();
                async move {
                    env.dual
                        .upsert_profile(&profile(k % USERS, k as u64))
                        .await
                        .unwrap()
                }
            })
        });
    }
    g.finish();
}

fn bench_flip(c: &mut Criterion) {
    let owned = setup();
    let env = &owned;
    env.rt.block_on(env.dual.switch(Stage::Shadow)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (d, stop) = (env.dual.clone(), stop.clone());
            env.rt.spawn(async move {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let i = (w * 25 + (k as usize % 25)) % USERS;
                    let _ = d.upsert_profile(&profile(i, k)).await;
                    let _ = d.get_user(&format!("bench-{i}")).await;
                }
            })
        })
        .collect();
    let mut g = c.benchmark_group("flip");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    for (name, to, back) in [
        ("shadow_to_live", Stage::Live, Stage::Shadow),
        ("live_to_shadow", Stage::Shadow, Stage::Live),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                env.rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += env.dual.switch(to).await.unwrap();
                        // Back again; not measured.
                        env.dual.switch(back).await.unwrap();
                    }
                    total
                })
            })
        });
        // Keep each case starting from the stage its name says.
        if env.dual.stage() != Stage::Shadow {
            env.rt.block_on(env.dual.switch(Stage::Shadow)).unwrap();
        }
    }
    g.finish();
    stop.store(true, Ordering::Relaxed);
    env.rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
}

/// The read overhead measured paired: each iteration times one bare call
/// and one dual-store call of the same key back to back, so machine noise
/// hits both alike; criterion reports the dual read, each sample prints both
/// means and their ratio (quote the median of those ratios).
fn bench_paired(c: &mut Criterion) {
    let owned = setup();
    let env = &owned;
    let mut g = c.benchmark_group("overhead");
    for (stage, bare) in [
        (Stage::Off, &env.sqlite as &dyn Store),
        (Stage::Complete, &env.pg as &dyn Store),
    ] {
        env.rt.block_on(env.dual.switch(stage)).unwrap();
        g.bench_function(BenchmarkId::new("read", stage), |b| {
            b.iter_custom(|iters| {
                env.rt.block_on(async {
                    let (mut bare_total, mut dual_total) = (Duration::ZERO, Duration::ZERO);
                    for k in 0..iters {
                        let id = format!("bench-{}", k as usize % USERS);
                        // Which goes first alternates: SQLite reads go to
                        // its reader connections in turn, so a fixed order
                        // would pin each side to one reader thread.
                        for dual_turn in [k % 2 == 1, k % 2 == 0] {
                            let t = std::time::Instant::now();
                            if dual_turn {
                                env.dual.get_user(&id).await.unwrap();
                                dual_total += t.elapsed();
                            } else {
                                bare.get_user(&id).await.unwrap();
                                bare_total += t.elapsed();
                            }
                        }
                    }
                    eprintln!(
                        "    {stage}: bare {:.1} µs, dual {:.1} µs per read ({:+.1} %)",
                        bare_total.as_secs_f64() * 1e6 / iters as f64,
                        dual_total.as_secs_f64() * 1e6 / iters as f64,
                        (dual_total.as_secs_f64() / bare_total.as_secs_f64() - 1.0) * 100.0
                    );
                    dual_total
                })
            })
        });
    }
    g.finish();
}

/// Write latency medians, paired: blocks of writes through the bare store of
/// the slower backend (PostgreSQL) alternate with blocks through the dual
/// store, and every call's latency is kept; each sample prints both medians
/// and their ratio (the target compares medians, p50), so machine noise hits
/// both alike.
fn bench_paired_write(c: &mut Criterion) {
    let owned = setup();
    let env = &owned;
    let mut g = c.benchmark_group("overhead");
    g.sample_size(30);
    let quantile = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6
    };
    for stage in [
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::Rampdown,
    ] {
        env.rt.block_on(env.dual.switch(stage)).unwrap();
        g.bench_function(BenchmarkId::new("write", stage), |b| {
            b.iter_custom(|iters| {
                env.rt.block_on(async {
                    let (mut bare, mut dual) = (Vec::new(), Vec::new());
                    let mut total = Duration::ZERO;
                    // Blocks of 25 calls each way; the dual store's queued
                    // outbox clears are flushed (untimed) before a bare
                    // block, so bare calls do not pay for them.
                    let mut k = 0usize;
                    while dual.len() < iters as usize {
                        env.dual.flush_clears().await.unwrap();
                        for _ in 0..25 {
                            k += 1;
                            let p = profile(k % USERS, k as u64);
                            let t = std::time::Instant::now();
                            env.pg.upsert_profile(&p).await.unwrap();
                            bare.push(t.elapsed());
                        }
                        for _ in 0..25 {
                            k += 1;
                            let p = profile(k % USERS, k as u64);
                            let t = std::time::Instant::now();
                            env.dual.upsert_profile(&p).await.unwrap();
                            let d = t.elapsed();
                            total += d;
                            dual.push(d);
                        }
                    }
                    let (b, d) = (quantile(&mut bare, 0.5), quantile(&mut dual, 0.5));
                    eprintln!(
                        "    {stage}: p50 bare PostgreSQL {b:.0} µs, dual {d:.0} µs, ratio {:.2} \
                         (p90 {:.0} / {:.0} µs)",
                        d / b,
                        quantile(&mut bare, 0.9),
                        quantile(&mut dual, 0.9),
                    );
                    total
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_overhead,
    bench_flip,
    bench_paired,
    bench_paired_write
);
criterion_main!(benches);
