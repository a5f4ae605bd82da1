//! Backfill: copy the legacy rows SQLite → PostgreSQL while traffic runs (docs/DESIGN.md §4).
//!
//! Tables are copied in the schema's order (parents first), each by
//! keyset pagination on SQLite's rowid. A batch is read from a SQLite
//! snapshot, holding no lock, so the application's writers never wait for
//! it. The race with live writes is made safe by how the batch loads:
//! insert-only (a row PostgreSQL holds already came from a live write, which
//! is newer), and, once the batch committed, its rows are checked against
//! SQLite again: a row the application deleted meanwhile, which the batch
//! may have brought back, is deleted from PostgreSQL under the same per-key
//! lock the dual writes' copies take (`target::settle_gone`). The PostgreSQL
//! side of a batch runs under a statement timeout, and a batch that times
//! out rolls back and is retried at half the size. Rows, rejects and the
//! table's checkpoint commit in one transaction, so a killed run resumes
//! with no duplicate and no gap; an advisory lock keeps a second run out.
//!
//! It runs only in `dualwrite` or `shadow` (see [`stage_refusal`];
//! `BackfillOptions::force` overrides), and only on a connection that can
//! take SQLite's write lock (a file this user cannot write is refused). It
//! refuses a file holding tables or columns the schema does not describe
//! (`crate::audit::drift`) until each is named in
//! `BackfillOptions::ignore_unknown`; those acknowledged are recorded in
//! `cutover.acknowledged_drift` and in the summary.
//!
//! Files: `options.rs` is what a run takes and reports, `guard.rs` keeps
//! it out of the wrong stage and a second run out, `source.rs` reads SQLite, `target.rs` loads PostgreSQL,
//! `encode.rs` is the binary `COPY` format, `indexes.rs` drops a table's
//! secondary indexes for its copy and builds them again, `progress.rs` the
//! progress reports, logs and metrics.

mod encode;
mod guard;
mod indexes;
mod options;
mod progress;
mod source;
mod target;

pub use guard::{stage_refusal, LOCK_KEY};
pub use options::{BackfillOptions, BackfillSummary, TableSummary};

use guard::{check_stage, RunLock};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::audit;
use crate::convert::RejectReason;
use crate::error::{Backend, DbErrorKind, Error, Result};
pub use crate::row::Policy;
use crate::settings::PgSettings;
use crate::stage::Stage;
use crate::tables::Table;

use progress::Progress;
use source::Source;

/// Timed-out attempts in a row at batch size 1 before the run gives up.
const MAX_ATTEMPTS_AT_ONE: u32 = 5;

/// Failed attempts in a row of a batch that raced a concurrent write.
const MAX_RACE_RETRIES: u32 = 5;
/// Retries (200 ms apart) of a batch whose row's parent the application
/// wrote and has not copied yet, before that row is rejected as an orphan.
const MAX_PARENT_WAITS: u32 = 25;

/// The PostgreSQL connection batches run on; replaced when a batch hangs.
struct Target {
    settings: PgSettings,
    // The application copies its own writes (dualwrite/shadow, not forced
    // elsewhere): a batch may wait for a parent's copy in flight.
    live_copies: bool,
    // Open connections; batches of one round load on one each.
    conns: Vec<PgConnection>,
}

impl Target {
    async fn conn(&mut self) -> Result<&mut PgConnection> {
        self.open(1).await?;
        Ok(&mut self.conns[0])
    }

    /// `n` connections, lent to a round of batches.
    async fn take(&mut self, n: usize) -> Result<Vec<PgConnection>> {
        self.open(n).await?;
        Ok(self.conns.drain(..n).collect())
    }

    /// Opens connections until `n` are at hand.
    async fn open(&mut self, n: usize) -> Result<()> {
        while self.conns.len() < n {
            self.conns
                .push(PgConnection::connect_with(&self.settings.connect_options()).await?);
        }
        Ok(())
    }

    /// Takes back a connection that is between transactions.
    fn put(&mut self, conn: PgConnection) {
        self.conns.push(conn);
    }
}

/// Copies the selected tables; stops at a committed batch when `shutdown`
/// completes. The schema must exist (`crate::pg::migrate`). Refuses outside
/// `dualwrite`/`shadow` unless `opts.force` (see [`stage_refusal`]), when
/// SQLite's write lock cannot be taken on the file, and while the file holds
/// a table or column the schema does not describe that
/// `opts.ignore_unknown` does not name; nothing is copied then.
pub async fn run(
    opts: BackfillOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<BackfillSummary> {
    let started = Instant::now();
    let tables = opts.selected_tables()?;
    if !(opts.busy_share >= 0.0 && opts.busy_share.is_finite()) {
        return Err(Error::InvalidArgument(
            "busy_share must be a number >= 0".into(),
        ));
    }
    if !(opts.writer_share >= 0.0 && opts.writer_share.is_finite()) {
        return Err(Error::InvalidArgument(
            "writer_share must be a number >= 0".into(),
        ));
    }
    if opts.jobs == 0 {
        return Err(Error::InvalidArgument("--jobs must be at least 1".into()));
    }
    if opts.batch_size == 0 {
        return Err(Error::InvalidArgument(
            "--batch-size must be at least 1".into(),
        ));
    }
    // An unreachable server fails here, at once, saying why.
    crate::pg::preflight(&opts.postgres).await?;
    tokio::pin!(shutdown);
    let mut waited = Duration::ZERO;
    let mut summary = loop {
        let attempt = async {
            let lock = RunLock::take(&opts.postgres).await?;
            let result = match check_stage(&opts).await {
                Ok(forced_stage) => {
                    // Plain index builds block writes to the table: only
                    // where PostgreSQL is not authoritative.
                    let build = match forced_stage {
                        Some(s) if s >= Stage::Live => indexes::Build::Concurrently,
                        _ => indexes::Build::Plain,
                    };
                    run_locked(
                        &opts,
                        &tables,
                        build,
                        forced_stage.is_none(),
                        shutdown.as_mut(),
                    )
                    .await
                    .map(|s| BackfillSummary { forced_stage, ..s })
                }
                Err(e) => Err(e),
            };
            lock.release().await;
            result
        }
        .await;
        match attempt {
            // PostgreSQL went away mid-run (a restart): wait for it, then
            // resume from the checkpoints (what committed stays; a batch
            // cut off committed nothing).
            Err(e) if e.is_unavailable() && waited < opts.postgres_wait => {
                tracing::warn!(error = %e, waited_s = waited.as_secs(), limit_s = opts.postgres_wait.as_secs(), "PostgreSQL unreachable: waiting for it, then resuming from the checkpoint");
                if let Some(p) = &opts.progress {
                    p.notice(&format!(
                        "PostgreSQL unreachable ({e}); waiting up to {} s, then resuming from the checkpoint",
                        opts.postgres_wait.as_secs()
                    ));
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    waited += Duration::from_secs(1);
                    if crate::pg::preflight(&opts.postgres).await.is_ok() {
                        break;
                    }
                    if waited >= opts.postgres_wait {
                        return Err(e);
                    }
                }
            }
            other => break other?,
        }
    };
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn run_locked(
    opts: &BackfillOptions,
    tables: &[&'static Table],
    build: indexes::Build,
    live_copies: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<BackfillSummary> {
    tokio::pin!(shutdown);
    let source = Source::open(&opts.sqlite_path, opts.busy_timeout).await?;
    let mut target = Target {
        live_copies,
        settings: opts.postgres.clone(),
        conns: Vec::new(),
    };
    // Nothing dropped silently: what the schema does not describe is left
    // behind only when the operator named it, and that is on record.
    let unknown = source.drift(opts.schema).await?;
    let left = audit::unacknowledged(&unknown, &opts.ignore_unknown)?;
    if !left.is_empty() {
        return Err(Error::InvalidArgument(audit::refusal(&left)));
    }
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
        tracing::warn!(
            "left behind as acknowledged (--ignore-unknown): {}",
            names.join(", ")
        );
        target::record_acknowledged(target.conn().await?, &unknown).await?;
    }
    let bar = opts.progress.clone();
    let mut summary = BackfillSummary {
        acknowledged_drift: unknown,
        ..BackfillSummary::default()
    };
    let mut pace = Pace {
        throttle: Throttle::new(opts.max_rows_per_sec),
        app: AppWatch::new(&source).await?,
    };
    let copied: Result<()> = async {
    for &table in tables {
        // Insert-triggered autovacuum would otherwise scan the table again
        // and again while it grows batch by batch (a single-transaction load
        // never shows it rows to vacuum); it is switched back on, and the
        // table analyzed, when the table is done, stopped or failed.
        let deferred = opts.defer_indexes && {
            let cp = target::checkpoint(target.conn().await?, table).await?;
            let left = source.count_after(table, cp.last_rowid).await?;
            let held = target::estimated_rows(target.conn().await?, table).await?;
            left >= opts.defer_min_rows && left as f64 >= held * 0.5
        };
        if deferred {
            indexes::defer(target.conn().await?, table, opts.defer_full_text).await?;
        }
        target::pause_autovacuum(target.conn().await?, table).await?;
        // The full-text indexes left in place take the batches' rows in
        // their pending lists, which a connection of their own merges while
        // the copy goes on (see `indexes::merge_pending`); while the
        // application writes, the copy merges them itself between rounds.
        let (merging, merger_state) = tokio::sync::watch::channel(indexes::Merging::Beside);
        let merger = tokio::spawn(indexes::merge_pending(
            opts.postgres.clone(),
            table,
            merger_state,
        ));
        let copied = copy_table(
            opts,
            &source,
            &mut target,
            table,
            &mut pace,
            &merging,
            &mut shutdown,
        )
        .await;
        let _ = merging.send(indexes::Merging::Stop);
        if let Ok(Err(e)) = merger.await {
            tracing::warn!(table = table.name, error = %e, "merging the full-text pending list during the copy stopped; it is merged at the end");
        }
        if matches!(copied, Ok((_, false))) && deferred {
            // The table is copied: its indexes are built again now, before
            // the next table starts (a stopped or failed run builds them on
            // its way out, below).
            let started = Instant::now();
            if let Some(p) = &bar {
                p.notice(&format!("{}: copied; building its indexes again", table.name));
            }
            let built = indexes::rebuild(&opts.postgres, target.conn().await?, Some(table.name), build).await?;
            if !built.is_empty() {
                tracing::info!(table = table.name, indexes = ?built, seconds = started.elapsed().as_secs_f64(), "indexes built again");
                summary.index_seconds += started.elapsed().as_secs_f64();
            }
            summary.indexes_rebuilt.extend(built);
        }
        let resumed = async { target::resume_autovacuum(target.conn().await?, table).await };
        if let Err(e) = resumed.await {
            tracing::warn!(table = table.name, error = %e, "could not switch autovacuum back on; the next backfill run does");
        }
        let (t, stopped) = copied?;
        summary.tables.push(t);
        if stopped {
            summary.interrupted = true;
            break;
        }
    }
    if !summary.interrupted {
        for &table in tables.iter().filter(|t| t.serial) {
            let max = source.max_id(table).await?;
            let v = crate::sequences::pg_raise(target.conn().await?, table, max).await?;
            summary.sequences.push((table.name, v));
        }
    }
    Ok(())
    }
    .await;
    // Built on every way out (an interruption, a failure): the
    // application needs them, and a resumed run drops them again. When PostgreSQL cannot take it now, the next run (any
    // run) rebuilds what is recorded, and this one says so.
    let rebuilt = match target.conn().await {
        Ok(c) => indexes::rebuild(&opts.postgres, c, None, build).await,
        Err(e) => Err(e),
    };
    match (copied, rebuilt) {
        (Ok(()), Ok(names)) => {
            summary.indexes_rebuilt.extend(names);
            Ok(summary)
        }
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Ok(names)) => {
            if !names.is_empty() {
                tracing::warn!(indexes = ?names, "the run failed; the indexes it had dropped are rebuilt");
            }
            Err(e)
        }
        (Err(e), Err(re)) => {
            tracing::error!(error = %re, "the indexes dropped for the copy could not be built again now; the next backfill run builds them (recorded in cutover.deferred_indexes)");
            Err(e)
        }
    }
}

/// What spaces the copy's rounds over the whole run.
struct Pace {
    throttle: Throttle,
    app: AppWatch,
}

/// Whether the application is writing to SQLite, from `PRAGMA
/// data_version` (it moves when another connection commits), watched
/// round by round over the whole run.
struct AppWatch {
    version: i64,
    /// The application committed during the last round, or no round was
    /// watched yet: the next round loads `busy_jobs` batches side by side,
    /// not `jobs`. A table's first round is thus never a burst of `jobs`
    /// connections into a busy application's writes; on an idle file the
    /// first round alone is narrower.
    busy: bool,
}

impl AppWatch {
    async fn new(source: &Source) -> Result<Self> {
        Ok(Self {
            version: source.data_version().await?,
            busy: true,
        })
    }

    /// Before a table's first round: `busy` also when the application
    /// committed since the last round watched.
    async fn watch_from_here(&mut self, source: &Source) -> Result<()> {
        let version = source.data_version().await?;
        self.busy |= version != self.version;
        self.version = version;
        Ok(())
    }

    /// Whether the application committed since the last call (the round
    /// just made); the copy then makes room for it (`busy_share`).
    async fn saw_commits(&mut self, source: &Source) -> Result<bool> {
        let version = source.data_version().await?;
        self.busy = version != self.version;
        self.version = version;
        Ok(self.busy)
    }
}

/// Spaces batches so the run stays under `max_rows_per_sec`.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    rows: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0),
            started: Instant::now(),
            rows: 0,
        }
    }

    /// How long to wait after `n` more rows.
    fn after(&mut self, n: u64) -> Option<Duration> {
        let rate = self.rate?;
        self.rows += n;
        let due = Duration::from_secs_f64(self.rows as f64 / rate as f64);
        due.checked_sub(self.started.elapsed())
    }
}

/// True when `shutdown` has completed.
async fn stopping(shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.as_mut() => true,
        _ = std::future::ready(()) => false,
    }
}

async fn copy_table(
    opts: &BackfillOptions,
    source: &Source,
    target: &mut Target,
    table: &'static Table,
    pace: &mut Pace,
    merging: &tokio::sync::watch::Sender<indexes::Merging>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(TableSummary, bool)> {
    let started = Instant::now();
    let mut cp = target::checkpoint(target.conn().await?, table).await?;
    // Set once a batch raced a live write to one of its keys: the table's
    // later batches load through a staging table, `ON CONFLICT DO NOTHING`
    // (the live write is newer), so writes at the table's growing end
    // cannot fail them again and again.
    let mut staged = false;
    let skip_fk_triggers = !table.foreign_keys.is_empty()
        && target::may_skip_fk_triggers(target.conn().await?, table).await?;
    let (remaining, losers) = source.prepare_table(table, cp.last_rowid).await?;
    let losers = Arc::new(losers);
    let mut progress = Progress::new(table.name, remaining, opts.progress.clone());
    let mut summary = TableSummary {
        table: table.name,
        ..TableSummary::default()
    };
    let mut size = opts.batch_size;
    let mut prefetched: Option<(RoundPlan, Round)> = None;
    let gin = indexes::gin_indexes(target.conn().await?, table).await?;
    // The application may have started writing since the last round (of
    // the table before, during its index builds).
    pace.app.watch_from_here(source).await?;
    let mut failures = 0u32;
    let mut at_one = 0u32;
    // Retries of a batch that met a parent the application wrote whose
    // copy has not landed; past the limit its children are orphans.
    let mut parent_waits = 0u32;
    let mut stopped = false;
    // Tables whose only unique value is the key load several batches side
    // by side (disjoint rowid ranges cannot collide); the others one at a
    // time, as does every round after a failure.
    let parallel = opts.jobs > 1 && source::unique_columns(table).len() == 1;
    // The client-side limit covers what statement_timeout cannot: a server
    // or network that stops answering altogether.
    let limit = opts.statement_timeout + opts.statement_timeout / 2 + Duration::from_secs(1);
    loop {
        if stopping(shutdown).await {
            stopped = true;
            break;
        }
        // One round: its batches are read from SQLite (while the round
        // before loaded, when it went as planned), then loaded side by side;
        // no SQLite lock is held at any point.
        let round_at = Instant::now();
        // While the application writes, the copy does one thing at a time:
        // the next round is not read ahead, and the full-text pending lists
        // are merged after the round's commit, not beside it.
        let one_at_a_time = pace.app.busy;
        merging.send_if_modified(|m| {
            let want = if one_at_a_time {
                indexes::Merging::Held
            } else {
                indexes::Merging::Beside
            };
            let changed = *m != want;
            *m = want;
            changed
        });
        let width = if parallel && failures == 0 {
            if pace.app.busy {
                opts.jobs.min(opts.busy_jobs.max(1))
            } else {
                opts.jobs
            }
        } else {
            1
        };
        let plan = (cp.last_rowid, size, width);
        let batches = match prefetched.take() {
            Some((planned, batches)) if planned == plan => batches,
            _ => read_round(source, table, plan, opts.policy, &losers).await?,
        };
        summary.sqlite_seconds += round_at.elapsed().as_secs_f64();
        if batches.is_empty() {
            // The rows the copy covered: those up to the last rowid read
            // (later ones were written since, and copied by their writes).
            summary.source_rows = Some(source.count_through(table, cp.last_rowid).await?);
            target::mark_completed(target.conn().await?, table).await?;
            break;
        }
        let conns = target.take(batches.len()).await?;
        // The next round, read while this one loads (used if this one
        // commits whole and the next is planned alike).
        let next_plan = batches
            .last()
            .and_then(|(_, b)| b.last_rowid)
            .filter(|_| !one_at_a_time)
            .map(|last| (last, size, width));
        crate::failpoint::gate("backfill.after_read").await;
        let loading_at = Instant::now();
        let loading = target::Loading {
            source,
            table,
            policy: opts.policy,
            statement_timeout: opts.statement_timeout,
            skip_fk_triggers,
            staged,
            wait_for_parents: target.live_copies && parent_waits < MAX_PARENT_WAITS,
        };
        let loading = &loading;
        // Each batch commits after the one before it (see `target::Order`).
        let mut before = None;
        let mut orders = Vec::with_capacity(batches.len());
        for _ in 0..batches.len() {
            let (done, next) = tokio::sync::oneshot::channel();
            orders.push(target::Order {
                before: before.take(),
                done,
            });
            before = Some(next);
        }
        let loads = futures_util::future::join_all(conns.into_iter().zip(batches).zip(orders).map(
            |((mut conn, (after, batch)), order)| async move {
                let (read, last) = (batch.read, batch.last_rowid);
                let r = tokio::time::timeout(
                    limit,
                    target::load_batch(&mut conn, loading, after, batch, order),
                )
                .await;
                (conn, after, read, last, r)
            },
        ));
        let ahead = async {
            match next_plan {
                Some(p) => Some((p, read_round(source, table, p, opts.policy, &losers).await)),
                None => None,
            }
        };
        let (results, ahead) = tokio::join!(loads, ahead);
        // A read that failed is simply made again when its round comes.
        prefetched = ahead.and_then(|(p, r)| r.ok().map(|b| (p, b)));
        summary.postgres_seconds += loading_at.elapsed().as_secs_f64();
        // Batches commit in order, so the first failure ends what committed.
        let mut failed: Option<(i64, Option<i64>, Option<Error>)> = None;
        let mut read_total = 0;
        let mut committed_rows = Vec::new();
        for (conn, after, read, last, r) in results {
            let mut loaded = match r {
                Ok(Ok(l)) if failed.is_none() => l,
                Ok(Ok(_)) => unreachable!("a batch committed after one that did not"),
                Ok(Err(e)) => {
                    // A broken connection is not reused.
                    if e.db_kind() != Some(DbErrorKind::Unavailable) {
                        target.put(conn);
                    }
                    failed.get_or_insert((after, last, Some(e)));
                    continue;
                }
                // The connection is mid-protocol: drop it and start afresh.
                Err(_) => {
                    failed.get_or_insert((after, last, None));
                    continue;
                }
            };
            target.put(conn);
            read_total += read;
            committed_rows.extend(std::mem::take(&mut loaded.rows));
            cp.last_rowid = last.expect("a batch that read rows has a last rowid");
            cp.copied += loaded.copied();
            cp.rejected += loaded.rejected_total();
            summary.copied += loaded.copied();
            summary.already_present += loaded.present;
            summary.nulled_values += loaded.nulled;
            for (r, n) in &loaded.rejected {
                *summary.rejected.entry(*r).or_default() += n;
            }
            debug_assert_eq!(
                read,
                loaded.copied() + loaded.rejected_total() + loaded.gone
            );
            summary.deleted_meanwhile += loaded.gone;
            progress.batch(loaded.copied(), loaded.rejected_total());
        }
        if one_at_a_time && failed.is_none() && !gin.is_empty() {
            // Optional: what is not merged now is merged when the table is
            // done (`resume_autovacuum`); a lost connection shows again in
            // the next round, which handles it.
            let merging_at = Instant::now();
            if let Err(e) = indexes::merge_now(target.conn().await?, &gin).await {
                tracing::warn!(table = table.name, error = %e, "merging the full-text pending list after a round failed; it is merged at the end");
            }
            summary.postgres_seconds += merging_at.elapsed().as_secs_f64();
        }
        // What committed is checked against SQLite again: rows the
        // application deleted since the batch read them go from PostgreSQL
        // too (the batch may have brought them back).
        if !committed_rows.is_empty() {
            crate::failpoint::gate("backfill.before_recheck").await;
            let gone = source.gone(table, committed_rows).await?;
            if !gone.is_empty() {
                let n = gone.len() as u64;
                let removed =
                    target::settle_gone(target.conn().await?, source, table, gone).await?;
                tracing::info!(table = table.name, rows = n, removed, "rows deleted or rewritten by the application while their batch loaded; settled against SQLite");
                cp.copied -= n.min(cp.copied);
                summary.copied -= n.min(summary.copied);
                summary.deleted_meanwhile += n;
            }
        }
        let took = round_at.elapsed();
        let app_busy = pace.app.saw_commits(source).await?;
        if app_busy {
            summary.busy_rounds += 1;
        }
        if failed.is_none() {
            let room = if app_busy {
                took.mul_f64(opts.busy_share)
            } else {
                Duration::ZERO
            };
            summary.room_seconds += room.as_secs_f64();
            tracing::debug!(
                table = table.name,
                batches = width,
                rows = read_total,
                took_ms = took.as_millis() as u64,
                app_busy,
                room_ms = room.as_millis() as u64,
                "round committed"
            );
            let pause = took.mul_f64(opts.writer_share) + room;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        } else {
            // PostgreSQL is in trouble: back off as long as the attempt took.
            tokio::time::sleep(took.min(Duration::from_secs(1))).await;
        }
        match failed {
            None => {
                failures = 0;
                at_one = 0;
                parent_waits = 0;
                // Grow back towards the configured size after a success.
                size = (size * 2).min(opts.batch_size);
            }
            Some((
                _,
                _,
                Some(Error::MissingParent {
                    parent_table,
                    parent_key,
                    ..
                }),
            )) if parent_waits < MAX_PARENT_WAITS => {
                parent_waits += 1;
                tracing::debug!(table = table.name, parent_table, parent_key = %parent_key, "a row's parent was written by the application and its copy has not landed; waiting for it");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some((after, last, Some(e))) => {
                let kind = e.db_kind();
                let timeout = kind == Some(DbErrorKind::Timeout);
                // A value PostgreSQL refuses that no rule here foresaw: the
                // batch is split until the row is alone, then that row is
                // rejected with PostgreSQL's message (one bad value never
                // stops a table).
                let refused = matches!(
                    kind,
                    Some(
                        DbErrorKind::CheckViolation
                            | DbErrorKind::NotNullViolation
                            | DbErrorKind::InvalidData
                    )
                );
                if refused && size > 1 {
                    size = (size / 2).max(1);
                    tracing::info!(table = table.name, batch_size = size, error = %e, "PostgreSQL refused a row of the batch; splitting it");
                    continue;
                }
                if let (true, Some(rowid)) = (refused, last) {
                    target::reject_refused(
                        target.conn().await?,
                        source,
                        table,
                        opts.policy,
                        after,
                        rowid,
                        &e.to_string(),
                    )
                    .await?;
                    tracing::warn!(table = table.name, rowid, error = %e, "row refused by PostgreSQL; recorded in cutover.rejects");
                    cp.last_rowid = rowid;
                    cp.rejected += 1;
                    *summary.rejected.entry(RejectReason::Refused).or_default() += 1;
                    progress.batch(0, 1);
                    failures = 0;
                    continue;
                }
                let raced = matches!(
                    kind,
                    Some(DbErrorKind::UniqueViolation | DbErrorKind::ForeignKeyViolation)
                );
                failures += 1;
                if raced && failures <= MAX_RACE_RETRIES {
                    if !staged && kind == Some(DbErrorKind::UniqueViolation) {
                        staged = true;
                        tracing::info!(table = table.name, "a batch raced a live write to one of its keys; the table's next batches load through a staging table, keeping the live rows");
                    } else {
                        tracing::warn!(table = table.name, error = %e, "batch raced a live write; retrying");
                    }
                    continue;
                }
                if timeout && (size > 1 || at_one < MAX_ATTEMPTS_AT_ONE) {
                    at_one += u32::from(size == 1);
                    size = (size / 2).max(1);
                    tracing::warn!(
                        table = table.name,
                        batch_size = size,
                        "batch timed out in PostgreSQL; retrying smaller"
                    );
                    continue;
                }
                return Err(annotate(e, table, after));
            }
            Some((after, _, None)) => {
                failures += 1;
                if size > 1 || at_one < MAX_ATTEMPTS_AT_ONE {
                    at_one += u32::from(size == 1);
                    size = (size / 2).max(1);
                    tracing::warn!(
                        table = table.name,
                        batch_size = size,
                        "PostgreSQL did not answer in time; retrying smaller"
                    );
                    continue;
                }
                return Err(Error::Database {
                    backend: Backend::Postgres,
                    kind: DbErrorKind::Timeout,
                    message: format!(
                        "{}: a batch of one row after rowid {after} got no answer within {limit:?}",
                        table.name
                    ),
                });
            }
        }
        if let Some(wait) = pace.throttle.after(read_total) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.as_mut() => { stopped = true; break; }
            }
        }
    }
    progress.finish(!stopped);
    summary.total_copied = cp.copied;
    summary.total_rejected = cp.rejected;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok((summary, stopped))
}

/// Where a round starts, its batch size and width: (after, size, width).
type RoundPlan = (i64, usize, usize);

/// A round's batches, each with the rowid it starts after.
type Round = Vec<(i64, source::Batch)>;

/// Reads one round: up to `width` batches of `size` rows after rowid
/// `after` (plan = (after, size, width)), each with the rowid it starts
/// after; empty when nothing is left.
async fn read_round(
    source: &Source,
    table: &'static Table,
    (after, size, width): RoundPlan,
    policy: Policy,
    losers: &Arc<source::Losers>,
) -> Result<Round> {
    let mut batches: Vec<(i64, source::Batch)> = Vec::with_capacity(width);
    let mut from = after;
    while batches.len() < width {
        let b = source
            .read_batch(table, from, size, policy, losers.clone())
            .await?;
        if b.read == 0 {
            break;
        }
        let last = b
            .last_rowid
            .expect("a batch that read rows has a last rowid");
        batches.push((from, b));
        from = last;
    }
    Ok(batches)
}

/// Names the table and position of a batch in a database error.
fn annotate(e: Error, table: &Table, after: i64) -> Error {
    match e {
        Error::Database {
            backend,
            kind,
            message,
        } => Error::Database {
            backend,
            kind,
            message: format!("{}: batch after rowid {after}: {message}", table.name),
        },
        other => other,
    }
}
