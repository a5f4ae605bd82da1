//! The `Store` trait: every query the application makes.
//!
//! This is the plan's `DatabaseAdapter`, complete. `SqliteStore` and `PgStore`
//! implement it over the two databases, `DualStore` routes it by stage. All
//! three return the same domain types and the same errors for the same input,
//! which the conformance suite (`tests/conformance.rs`) checks by running one
//! set of tests against each backend.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Backend, Result};
use crate::model::*;

/// Every operation of the Twitter-analysis application.
///
/// Writes are atomic: each call is one transaction on the database that
/// serves it. Timestamps that a call stamps ("now") are taken once in the
/// store and truncated to microseconds.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which database answers (for `DualStore`, the authoritative side right now).
    fn backend(&self) -> Backend;

    // ----- users -------------------------------------------------------------

    /// Inserts or updates a scraped profile (by id); `created_at` is kept on update.
    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User>;
    /// A user by id.
    async fn get_user(&self, id: &str) -> Result<Option<User>>;
    /// A user by username.
    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>>;
    /// Users whose `last_scraped` is before `before` or unknown, oldest first
    /// (never scraped first), at most `limit`.
    async fn users_scraped_before(&self, before: Timestamp, limit: u32) -> Result<Vec<User>>;
    /// Deletes a user and every row that refers to them (tweets, analyses,
    /// funnel rows, their codes with their usage, referrals either way, jobs
    /// with their chunks). Returns false when the user did not exist.
    async fn delete_user(&self, id: &str) -> Result<bool>;

    // ----- tweets ------------------------------------------------------------

    /// Upserts a batch of tweets for `user_id` (by tweet id) in one transaction.
    /// Fails with `MissingParent` when the user does not exist. Returns the
    /// number of tweets written.
    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64>;
    /// A tweet by id.
    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>>;
    /// A user's tweets, newest first (`created_at` desc, then `id` desc),
    /// at most `limit`, strictly after `cursor` when given.
    async fn timeline(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>>;
    /// Number of tweets of a user.
    async fn count_tweets(&self, user_id: &str) -> Result<i64>;
    /// Full-text search: tweets containing every word of `query`, newest first.
    ///
    /// PostgreSQL uses the plan's `to_tsvector('english', text)` index with
    /// `plainto_tsquery` (stemmed, stop words dropped); SQLite matches each word
    /// case-insensitively as a substring. The two agree on plain words and
    /// differ on stems and stop words, which the shadow comparator knows.
    async fn search_tweets(&self, query: &str, limit: u32) -> Result<Vec<Tweet>>;

    // ----- personality analysis ----------------------------------------------

    /// Inserts or replaces an analysis (by id). `analyzed_at` None means now.
    async fn save_analysis(&self, analysis: &PersonalityAnalysis) -> Result<PersonalityAnalysis>;
    /// The newest analysis of a user (`analyzed_at` desc, then `id` desc).
    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>>;

    // ----- funnel ------------------------------------------------------------

    /// A user's funnel progress.
    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>>;
    /// Records that `command` was completed with `response`: increments the
    /// index, appends the command to `completed_commands`, stores the response
    /// under the command's name. Creates the progress row when missing.
    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress>;
    /// Marks the funnel completed with `data` (replaces an earlier completion).
    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion>;
    /// A user's funnel completion.
    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>>;

    // ----- referrals ---------------------------------------------------------

    /// Creates a referral code owned by `owner_user_id`. `Duplicate` when the
    /// code exists, `MissingParent` when the owner does not.
    async fn create_referral_code(&self, owner_user_id: &str, code: &str) -> Result<ReferralCode>;
    /// A referral code.
    async fn get_referral_code(&self, code: &str) -> Result<Option<ReferralCode>>;
    /// Redeems `code` for `referred_user_id`: a tracking row, a usage-log row
    /// and `usage_count + 1`, in one transaction. `UnknownReferralCode`,
    /// `SelfReferral`, `AlreadyReferred`, `MissingParent` on bad input, and
    /// then nothing is written.
    async fn redeem_referral(&self, code: &str, referred_user_id: &str) -> Result<Referral>;
    /// Codes, uses and referred users of a referrer.
    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats>;
    /// The usage log of a code, oldest first.
    async fn referral_usage(&self, code: &str) -> Result<Vec<ReferralUsage>>;

    // ----- analysis queue ----------------------------------------------------

    /// Enqueues a pending job with one pending chunk per entry of
    /// `chunk_tweet_counts` (at least one).
    async fn enqueue_job(&self, job: &NewJob) -> Result<JobWithChunks>;
    /// Claims the next pending job (highest priority, then oldest, then lowest
    /// id) and marks it processing. Two concurrent callers never get the same job.
    async fn claim_next_job(&self) -> Result<Option<Job>>;
    /// A job with its chunks.
    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>>;
    /// Marks a pending chunk processing.
    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk>;
    /// Marks a chunk completed with its result and increments the job's
    /// `processed_chunks`.
    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk>;
    /// Marks a chunk failed with an error message.
    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk>;
    /// Marks a processing job completed.
    async fn complete_job(&self, job_id: i32) -> Result<Job>;
    /// Marks a job failed with an error message.
    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job>;
    /// Jobs in a status, oldest first, at most `limit`.
    async fn jobs_by_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>>;
    /// A user's jobs, newest first.
    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>>;
}

/// A state change of an analysis job or chunk, described once for both
/// stores: which rows, from which states, to which, what it stamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transition {
    /// `analysis_queue` or `analysis_chunks`.
    pub table: &'static str,
    /// Its key column.
    pub key: &'static str,
    /// What the caller asked (named in an `InvalidState` error).
    pub action: &'static str,
    /// States the row may be in.
    pub from: &'static [JobStatus],
    /// The state it moves to.
    pub to: JobStatus,
    /// The timestamp column set to now.
    pub stamp: &'static str,
    /// The column set to the caller's value (`result`, `error`), if any.
    pub detail: Option<&'static str>,
    /// Whether `error` is cleared.
    pub clears_error: bool,
    /// A completed chunk counts on its job's `processed_chunks`.
    pub counts_on_job: bool,
}

impl Transition {
    /// The `SET` list, with placeholders `p(2)` for now and `p(3)` for the
    /// detail (`p(1)` is the key).
    pub fn set_list(&self, p: impl Fn(usize) -> String) -> String {
        let mut set = format!("status = '{}', {} = {}", self.to.as_str(), self.stamp, p(2));
        if let Some(d) = self.detail {
            set.push_str(&format!(", {d} = {}", p(3)));
        }
        if self.clears_error {
            set.push_str(", error = NULL");
        }
        set
    }

    /// `SET processed_chunks` of the chunk's job, with `p(1)` the chunk id.
    pub fn count_on_job_sql(p: impl Fn(usize) -> String) -> String {
        format!(
            "UPDATE analysis_queue SET processed_chunks = COALESCE(processed_chunks, 0) + 1 \
             WHERE job_id = (SELECT job_id FROM analysis_chunks WHERE chunk_id = {})",
            p(1)
        )
    }
}

const CHUNKS: (&str, &str) = ("analysis_chunks", "chunk_id");
const JOBS: (&str, &str) = ("analysis_queue", "job_id");

const fn transition(
    (table, key): (&'static str, &'static str),
    action: &'static str,
    from: &'static [JobStatus],
    to: JobStatus,
    stamp: &'static str,
    detail: Option<&'static str>,
    clears_error: bool,
) -> Transition {
    Transition {
        table,
        key,
        action,
        from,
        to,
        stamp,
        detail,
        clears_error,
        counts_on_job: false,
    }
}

/// `start_chunk`.
pub(crate) const START_CHUNK: Transition = transition(
    CHUNKS,
    "start",
    &[JobStatus::Pending, JobStatus::Failed],
    JobStatus::Processing,
    "started_at",
    None,
    true,
);
/// `complete_chunk`.
pub(crate) const COMPLETE_CHUNK: Transition = Transition {
    counts_on_job: true,
    ..transition(
        CHUNKS,
        "complete",
        &[JobStatus::Processing],
        JobStatus::Completed,
        "completed_at",
        Some("result"),
        true,
    )
};
/// `fail_chunk`.
pub(crate) const FAIL_CHUNK: Transition = transition(
    CHUNKS,
    "fail",
    &[JobStatus::Processing],
    JobStatus::Failed,
    "completed_at",
    Some("error"),
    false,
);
/// `complete_job`.
pub(crate) const COMPLETE_JOB: Transition = transition(
    JOBS,
    "complete",
    &[JobStatus::Processing],
    JobStatus::Completed,
    "completed_at",
    None,
    false,
);
/// `fail_job`.
pub(crate) const FAIL_JOB: Transition = transition(
    JOBS,
    "fail",
    &[JobStatus::Pending, JobStatus::Processing],
    JobStatus::Failed,
    "completed_at",
    Some("error"),
    false,
);

/// The caller's value a transition stores (`Transition::detail`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Detail<'a> {
    /// A JSON value (`result`).
    Json(&'a Value),
    /// Text (`error`).
    Text(&'a str),
}
