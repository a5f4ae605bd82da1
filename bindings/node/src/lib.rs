//! The cutover store for Node.js: the N-API half of the `cutover` npm
//! package (`index.js` wraps it; `index.d.ts` types it).
//!
//! Four requests cross the boundary, as methods of a [`Channel`] (one per
//! JavaScript environment): `open` (settings → a handle), `call` (handle,
//! operation, arguments → result), `close` and `startMetrics`. Each runs
//! its first step on the calling thread and answers at once when that is
//! all it needed, else later through the channel, tagged with the request
//! id. Arguments and results cross as JSON text in a fixed wire form,
//! which keeps every value exact:
//!
//! - JSON columns are JSON *text* (a string), both ways: a JavaScript
//!   number cannot hold every JSON number, so the stored text is handed
//!   over as it is (`serde_json` with `arbitrary_precision` never rounds).
//! - Timestamps go out as `[milliseconds, microseconds within the
//!   millisecond]` (the wrapper makes a `Date` with a `micros` property)
//!   and come in as RFC 3339 text (`index.js` cuts digits past the
//!   microsecond, so both databases store one instant).
//! - Results are `{"ok": value}` or `{"err": {"code", "message", …}}`; the
//!   wrapper throws a typed `Error` subclass for the latter.
//!
//! The addon runs its own tokio runtime, started on first use and never
//! shut down before the process exits (its image is pinned so Node never
//! unloads it under running threads). Results come back through one
//! threadsafe function per JavaScript environment, so a worker thread that
//! loads the addon and exits takes nothing down with it: napi-rs's managed
//! runtime, shut down when an environment exits, is not used. A handle of
//! `DB_TYPE=cutover` owns a [`Cutover`] (replayer, stage watcher, heartbeat); `close` waits
//! for the copies in flight. A process that exits without it loses
//! nothing: every write not yet copied is in an outbox, and the next start
//! replays it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cutover::settings::{open_store, Overrides, StoreKind};
use cutover::{Cutover, CutoverConfig, Error, Settings, Stage, Store};
use napi::bindgen_prelude::{Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

mod wire;

use wire::{Args, BadArgument};

/// An open store: a plain one (`sqlite`, `postgres`) or the dual store.
struct Handle {
    store: Arc<dyn Store>,
    cutover: tokio::sync::RwLock<Option<Cutover>>,
    closed: AtomicBool,
}

fn handles() -> &'static Mutex<HashMap<u32, Arc<Handle>>> {
    static HANDLES: OnceLock<Mutex<HashMap<u32, Arc<Handle>>>> = OnceLock::new();
    HANDLES.get_or_init(Default::default)
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// The addon's runtime: one per process, alive until the process exits. A
/// current-thread runtime driven by a thread of its own: every request and
/// its I/O run on that one thread.
///
/// A call crosses two threads (JavaScript → runtime → JavaScript), and on a
/// machine whose idle cores sleep each wake-up costs tens of microseconds.
/// With `CUTOVER_NODE_SPIN_US=N` the runtime thread stays awake (polling)
/// for N µs after its last activity, so a busy application's next call and
/// PostgreSQL's answer find it running; it costs CPU while it spins. 0 (the
/// default) parks at once.
fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        napi::bindgen_prelude::retain_current_module_for_unload_safety();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the addon's tokio runtime starts");
        let handle = rt.handle().clone();
        let spin = spin_micros();
        std::thread::Builder::new()
            .name("cutover-node".into())
            .spawn(move || {
                rt.block_on(async move {
                    if spin == 0 {
                        return std::future::pending::<()>().await;
                    }
                    loop {
                        activity().notified().await;
                        while since_start_micros().saturating_sub(LAST.load(Ordering::Relaxed))
                            < spin
                        {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .expect("the addon's runtime thread starts");
        handle
    })
}

fn spin_micros() -> u64 {
    static SPIN: OnceLock<u64> = OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var("CUTOVER_NODE_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

static LAST: AtomicU64 = AtomicU64::new(0);

fn since_start_micros() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

fn activity() -> &'static tokio::sync::Notify {
    static N: OnceLock<tokio::sync::Notify> = OnceLock::new();
    N.get_or_init(tokio::sync::Notify::new)
}

/// Marks the runtime busy (and wakes a spinning-capable runtime thread).
fn touch() {
    if spin_micros() > 0 {
        LAST.store(since_start_micros(), Ordering::Relaxed);
        activity().notify_one();
    }
}

/// Where results go back to JavaScript: one threadsafe function per
/// JavaScript environment (`index.js` makes one `Channel` when it loads),
/// called with `[request id, result text]` for the calls that did not
/// answer at once. It is weak (it does not keep
/// Node's event loop alive; `index.js` does while calls are pending), and
/// one for every call, not one per call, keeps a call's round trip short.
type Done = ThreadsafeFunction<(u32, String), Unknown<'static>, (u32, String), Status, false, true>;

#[napi]
pub struct Channel {
    done: Arc<Done>,
}

#[napi]
impl Channel {
    #[napi(constructor)]
    pub fn new(done: Function<(u32, String), Unknown<'static>>) -> napi::Result<Self> {
        let done = done
            .build_threadsafe_function::<(u32, String)>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        Ok(Self {
            done: Arc::new(done),
        })
    }

    /// Starts `fut` on the calling (JavaScript) thread: its first poll runs
    /// here, inside the runtime's context, so a query is on its way to the
    /// database before the runtime thread has anything to do. A future done
    /// at once answers at once (`Some`, no thread crossed). One that is not
    /// is handed to the runtime thread only when it is woken (its answer
    /// came in, its timer fired): the runtime thread wakes for PostgreSQL's
    /// answers, not also to take the call over before there is anything
    /// to do. First polls never block: every blocking step
    /// of the store (SQLite, a contended `flock`) runs on threads of its
    /// own.
    fn start<F>(&self, id: u32, fut: F) -> Option<String>
    where
        F: std::future::Future<Output = String> + Send + 'static,
    {
        let rt = runtime();
        let _in_runtime = rt.enter();
        let mut fut: Call = Box::pin(fut);
        let parked = Arc::new(Parked {
            call: Mutex::new(None),
            woken: AtomicBool::new(false),
            id,
            done: self.done.clone(),
        });
        let waker = std::task::Waker::from(parked.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        // A panic is an answer too (an error), never an abort of Node nor a
        // promise left pending.
        let first =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        match first {
            Err(_) => Some(panicked()),
            Ok(std::task::Poll::Ready(text)) => Some(text),
            Ok(std::task::Poll::Pending) => {
                // A call is out: a spinning runtime thread stays awake for
                // its answer (no-op without `CUTOVER_NODE_SPIN_US`).
                touch();
                *lock(&parked.call) = Some(fut);
                // Woken while it was being polled or put away: hand it
                // over now (`hand_over` runs it once whoever calls it).
                if parked.woken.load(Ordering::SeqCst) {
                    parked.hand_over();
                }
                None
            }
        }
    }

    /// Opens a store; `options` is the JSON of `OpenOptions`. Answers
    /// `{"ok": handle}` or `{"err": …}`.
    #[napi]
    pub fn open(&self, id: u32, options: String) -> Option<String> {
        self.start(id, async move {
            let options: OpenOptions = match serde_json::from_str(&options) {
                Ok(o) => o,
                Err(e) => return config_err(format!("createDbAdapter options: {e}")),
            };
            match open_inner(options).await {
                Ok(h) => ok(json!(h)),
                Err(e) => err(&e),
            }
        })
    }

    /// Runs one operation; `args` is a JSON array in the wire form.
    #[napi]
    pub fn call(&self, id: u32, handle_id: u32, op: String, args: String) -> Option<String> {
        self.start(id, call_inner(handle_id, op, args))
    }

    /// Waits for the copies in flight and stops the handle's tasks.
    #[napi]
    pub fn close(&self, id: u32, handle_id: u32) -> Option<String> {
        self.start(id, close_inner(handle_id))
    }

    /// Serves Prometheus metrics on `addr` (once per process).
    #[napi]
    pub fn start_metrics(&self, id: u32, addr: String) -> Option<String> {
        self.start(id, start_metrics_inner(addr))
    }
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// A call whose first poll (on the JavaScript thread) did not finish it,
/// until something it waits for wakes it: then it moves to the runtime
/// thread, which polls it with its own waker from there on.
struct Parked {
    call: Mutex<Option<Call>>,
    woken: AtomicBool,
    id: u32,
    done: Arc<Done>,
}

impl Parked {
    /// Spawns the call on the runtime (once, whoever gets here first) and
    /// sends its answer back to JavaScript when it is done.
    fn hand_over(&self) {
        let Some(call) = lock(&self.call).take() else {
            return;
        };
        let rt = runtime();
        let work = rt.spawn(call);
        let (id, done) = (self.id, self.done.clone());
        rt.spawn(async move {
            let text = work.await.unwrap_or_else(|_| panicked());
            touch();
            done.call((id, text), ThreadsafeFunctionCallMode::NonBlocking);
        });
        touch();
    }
}

impl std::task::Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.hand_over();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `createDbAdapter(options)` passes (every field optional: the
/// environment and `.env.migration` fill in the rest, as for the CLI).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptions {
    db_type: Option<String>,
    sqlite_path: Option<String>,
    database_url: Option<String>,
    env_file: Option<String>,
    actor: Option<String>,
    migrate: Option<bool>,
    pool_size: Option<u32>,
    log: Option<String>,
}

fn ok(v: Value) -> String {
    json!({ "ok": v }).to_string()
}

fn err(e: &Error) -> String {
    json!({ "err": wire::error(e) }).to_string()
}

/// The answer of a call whose work panicked (a bug: reported, not fatal).
fn panicked() -> String {
    err(&Error::Config(
        "internal error: the call panicked; the adapter stays usable (see stderr)".into(),
    ))
}

fn config_err(message: String) -> String {
    err(&Error::Config(message))
}

fn install_logging(level: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = std::env::var("CUTOVER_LOG").unwrap_or_else(|_| level.to_string());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    });
}

async fn open_inner(options: OpenOptions) -> Result<u32, Error> {
    install_logging(options.log.as_deref().unwrap_or("warn"));
    let overrides = Overrides {
        sqlite: options.sqlite_path.map(Into::into),
        postgres: options.database_url,
        env_file: options.env_file.map(Into::into),
    };
    // The dbType option wins over DB_TYPE (a bad one in the environment
    // is then not an error).
    let given = options.db_type.is_some();
    let file = overrides
        .env_file
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(cutover::settings::ENV_FILE));
    let mut settings = Settings::resolve_with(
        &overrides,
        |k| {
            if given && k == "DB_TYPE" {
                None
            } else {
                std::env::var(k).ok()
            }
        },
        Some(&file),
    )?;
    if let Some(t) = options.db_type.as_deref() {
        settings.store_kind = match t.to_ascii_lowercase().as_str() {
            "sqlite" => StoreKind::Sqlite,
            "postgres" | "postgresql" => StoreKind::Postgres,
            "cutover" => StoreKind::Cutover,
            _ => {
                return Err(Error::Config(format!(
                    "dbType {t:?} is not known; use sqlite, postgres or cutover"
                )))
            }
        };
    }
    if let (Some(n), Some(pg)) = (options.pool_size, settings.postgres.as_mut()) {
        pg.pool.max_connections = n.max(1);
    }
    let handle = match settings.store_kind {
        StoreKind::Cutover => {
            let mut config = CutoverConfig::new(
                settings.require_sqlite()?.to_path_buf(),
                settings.require_postgres()?.clone(),
            );
            if let Some(a) = options.actor {
                config.actor = a;
            }
            config.migrate = options.migrate.unwrap_or(false);
            let c = Cutover::start(config).await?;
            Handle {
                store: Arc::new(c.store()),
                cutover: tokio::sync::RwLock::new(Some(c)),
                closed: AtomicBool::new(false),
            }
        }
        _ => Handle {
            store: open_store(&settings).await?,
            cutover: tokio::sync::RwLock::new(None),
            closed: AtomicBool::new(false),
        },
    };
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    handles()
        .lock()
        .expect("handles lock")
        .insert(id, Arc::new(handle));
    Ok(id)
}

fn handle(id: u32) -> Option<Arc<Handle>> {
    handles().lock().expect("handles lock").get(&id).cloned()
}

async fn call_inner(handle_id: u32, op: String, args: String) -> String {
    let Some(h) = handle(handle_id) else {
        return config_err("the adapter is closed (shutdown() was called)".into());
    };
    if h.closed.load(Ordering::Acquire) {
        return config_err("the adapter is closed (shutdown() was called)".into());
    }
    let args = match Args::parse(&args) {
        Ok(a) => a,
        Err(e) => return err(&e.into_error(&op)),
    };
    let result = match op.as_str() {
        // Boxed: a flip's future is tens of kB, and a call's future is as
        // large as its largest branch (copied into its box on every call).
        "stage" | "setStage" | "status" => Box::pin(control(&h, &op, &args)).await,
        _ => store_op(h.store.as_ref(), &op, &args).await,
    };
    match result {
        Ok(v) => ok(wire::out(v)),
        Err(e) => err(&e),
    }
}

async fn close_inner(handle_id: u32) -> String {
    let Some(h) = handles().lock().expect("handles lock").remove(&handle_id) else {
        return ok(Value::Null);
    };
    h.closed.store(true, Ordering::Release);
    if let Some(c) = h.cutover.write().await.take() {
        Box::pin(c.shutdown()).await;
    }
    ok(Value::Null)
}

async fn start_metrics_inner(addr: String) -> String {
    let parsed = match addr.parse() {
        Ok(a) => a,
        Err(_) => return config_err(format!("metrics address {addr:?} is not host:port")),
    };
    match cutover::metrics::install_exporter(parsed) {
        Ok(_) => ok(Value::Null),
        Err(e) => err(&e),
    }
}

async fn control(h: &Handle, op: &str, args: &Args) -> Result<Value, Error> {
    let guard = h.cutover.read().await;
    if h.closed.load(Ordering::Acquire) {
        return Err(Error::Config(
            "the adapter is closed (shutdown() was called)".into(),
        ));
    }
    let Some(c) = guard.as_ref() else {
        return Err(Error::Config(format!(
            "{op}: only an adapter with DB_TYPE=cutover has stages"
        )));
    };
    match op {
        "stage" => Ok(json!(c.stage().as_str())),
        "setStage" => {
            let name: String = args.get(0, "stage")?;
            let force: Option<bool> = args.get(1, "force")?;
            let to = Stage::parse(&name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "stage {name:?} is not one of off, dualwrite, shadow, live, rampdown, complete"
                ))
            })?;
            let pause = c.set_stage(to, force.unwrap_or(false)).await?;
            Ok(json!({ "stage": to.as_str(), "pause_ms": pause.as_secs_f64() * 1000.0 }))
        }
        _ => {
            let s = c.status().await?;
            let healthy = s.healthy();
            let mut v = serde_json::to_value(&s).map_err(|e| Error::Config(e.to_string()))?;
            if let Value::Object(m) = &mut v {
                m.insert("healthy".into(), json!(healthy));
            }
            Ok(v)
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::InvalidArgument(e.to_string()))
}

async fn store_op(s: &dyn Store, op: &str, a: &Args) -> Result<Value, Error> {
    fn arg<T: DeserializeOwned>(a: &Args, i: usize, name: &str) -> Result<T, BadArgument> {
        a.get(i, name)
    }
    let v = match op {
        "upsertProfile" => to_value(s.upsert_profile(&arg(a, 0, "profile")?).await?)?,
        "getUser" => to_value(s.get_user(&arg::<String>(a, 0, "id")?).await?)?,
        "getUserByUsername" => to_value(
            s.get_user_by_username(&arg::<String>(a, 0, "username")?)
                .await?,
        )?,
        "usersScrapedBefore" => to_value(
            s.users_scraped_before(arg(a, 0, "before")?, arg(a, 1, "limit")?)
                .await?,
        )?,
        "deleteUser" => to_value(s.delete_user(&arg::<String>(a, 0, "id")?).await?)?,
        "saveTweets" => {
            let tweets: Vec<cutover::model::NewTweet> = arg(a, 1, "tweets")?;
            to_value(
                s.save_tweets(&arg::<String>(a, 0, "userId")?, &tweets)
                    .await?,
            )?
        }
        "getTweet" => to_value(s.get_tweet(&arg::<String>(a, 0, "id")?).await?)?,
        "timeline" => {
            let cursor: Option<cutover::model::TimelineCursor> = arg(a, 2, "cursor")?;
            to_value(
                s.timeline(
                    &arg::<String>(a, 0, "userId")?,
                    arg(a, 1, "limit")?,
                    cursor.as_ref(),
                )
                .await?,
            )?
        }
        "countTweets" => to_value(s.count_tweets(&arg::<String>(a, 0, "userId")?).await?)?,
        "searchTweets" => to_value(
            s.search_tweets(&arg::<String>(a, 0, "query")?, arg(a, 1, "limit")?)
                .await?,
        )?,
        "saveAnalysis" => to_value(s.save_analysis(&arg(a, 0, "analysis")?).await?)?,
        "latestAnalysis" => to_value(s.latest_analysis(&arg::<String>(a, 0, "userId")?).await?)?,
        "funnelProgress" => to_value(s.funnel_progress(&arg::<String>(a, 0, "userId")?).await?)?,
        "completeFunnelCommand" => to_value(
            s.complete_funnel_command(
                &arg::<String>(a, 0, "userId")?,
                &arg::<String>(a, 1, "command")?,
                &a.json(2, "response")?,
            )
            .await?,
        )?,
        "markFunnelComplete" => to_value(
            s.mark_funnel_complete(&arg::<String>(a, 0, "userId")?, &a.json(1, "data")?)
                .await?,
        )?,
        "funnelCompletion" => {
            to_value(s.funnel_completion(&arg::<String>(a, 0, "userId")?).await?)?
        }
        "createReferralCode" => to_value(
            s.create_referral_code(
                &arg::<String>(a, 0, "ownerUserId")?,
                &arg::<String>(a, 1, "code")?,
            )
            .await?,
        )?,
        "getReferralCode" => to_value(s.get_referral_code(&arg::<String>(a, 0, "code")?).await?)?,
        "redeemReferral" => to_value(
            s.redeem_referral(
                &arg::<String>(a, 0, "code")?,
                &arg::<String>(a, 1, "referredUserId")?,
            )
            .await?,
        )?,
        "referralStats" => to_value(
            s.referral_stats(&arg::<String>(a, 0, "ownerUserId")?)
                .await?,
        )?,
        "referralUsage" => to_value(s.referral_usage(&arg::<String>(a, 0, "code")?).await?)?,
        "enqueueJob" => to_value(s.enqueue_job(&arg(a, 0, "job")?).await?)?,
        "claimNextJob" => to_value(s.claim_next_job().await?)?,
        "getJob" => to_value(s.get_job(arg(a, 0, "jobId")?).await?)?,
        "startChunk" => to_value(s.start_chunk(arg(a, 0, "chunkId")?).await?)?,
        "completeChunk" => to_value(
            s.complete_chunk(arg(a, 0, "chunkId")?, &a.json(1, "result")?)
                .await?,
        )?,
        "failChunk" => to_value(
            s.fail_chunk(arg(a, 0, "chunkId")?, &arg::<String>(a, 1, "error")?)
                .await?,
        )?,
        "completeJob" => to_value(s.complete_job(arg(a, 0, "jobId")?).await?)?,
        "failJob" => to_value(
            s.fail_job(arg(a, 0, "jobId")?, &arg::<String>(a, 1, "error")?)
                .await?,
        )?,
        "jobsByStatus" => {
            let status: String = arg(a, 0, "status")?;
            let status = cutover::model::JobStatus::parse(&status).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "job status {status:?} is not one of pending, processing, completed, failed"
                ))
            })?;
            to_value(s.jobs_by_status(status, arg(a, 1, "limit")?).await?)?
        }
        "userJobs" => to_value(s.user_jobs(&arg::<String>(a, 0, "userId")?).await?)?,
        "backend" => json!(s.backend().as_str()),
        // The same calls timed inside Rust, for the bench's per-call overhead.
        "_benchStore" => bench_store(s, a).await?,
        _ => return Err(Error::InvalidArgument(format!("unknown operation {op:?}"))),
    };
    Ok(v)
}

impl From<BadArgument> for Error {
    fn from(b: BadArgument) -> Self {
        b.into_error("")
    }
}

/// Runs `n` reads (`get_user`) or writes (`upsert_profile`) of `id` on the
/// store from Rust, one after another; returns each call's microseconds.
/// The bench compares them with the same calls made from JavaScript.
async fn bench_store(s: &dyn Store, a: &Args) -> Result<Value, Error> {
    let kind: String = a.get(0, "kind")?;
    let n: u32 = a.get(1, "n")?;
    let id: String = a.get(2, "id")?;
    let mut micros = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = std::time::Instant::now();
        if kind == "write" {
            let p = cutover::model::ScrapedProfile {
                id: id.clone(),
                username: format!("bench_{id}"),
                profile_data: Some(json!({ "i": i })),
                profile_picture_url: None,
                scraped_at: cutover::model::now(),
            };
            s.upsert_profile(&p).await?;
        } else {
            s.get_user(&id).await?;
        }
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(json!(micros))
}

#[cfg(test)]
mod tests {
    /// A call's future is boxed (and so copied) on every call: it must stay
    /// small. One branch awaiting a flip inline made it 92,832 bytes.
    #[test]
    fn a_calls_future_is_small() {
        let call = super::call_inner(1, "getUser".into(), "[\"u\"]".into());
        let size = std::mem::size_of_val(&call);
        assert!(size <= 2048, "a call's future is {size} bytes");
        let close = super::close_inner(1);
        let size = std::mem::size_of_val(&close);
        assert!(size <= 2048, "closing's future is {size} bytes");
    }
}
