//! Domain types shared by every store.
//!
//! These are the values the application sees, whichever database answered:
//! timestamps are UTC with microsecond precision, JSON columns are
//! `serde_json::Value`, booleans are `bool`. Nullable columns of the plan's
//! PostgreSQL schema are `Option`s here, so a row read from either side maps
//! to the same value.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A UTC instant as every store reads and writes it (microsecond precision).
pub type Timestamp = DateTime<Utc>;

/// The current time truncated to microseconds, the precision both databases keep.
///
/// Stores stamp rows with this value rather than with the database's own clock,
/// so the two sides of a dual write hold the same instant.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Twitter user id (primary key).
    pub id: String,
    /// Unique handle.
    pub username: String,
    /// The scraped profile as JSON.
    pub profile_data: Option<Value>,
    /// Avatar URL.
    pub profile_picture_url: Option<String>,
    /// When the profile was last scraped.
    pub last_scraped: Option<Timestamp>,
    /// When the row was first written.
    pub created_at: Option<Timestamp>,
}

/// A freshly scraped profile, as the scraper hands it to `Store::upsert_profile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapedProfile {
    /// Twitter user id.
    pub id: String,
    /// Handle; may change between scrapes.
    pub username: String,
    /// The profile JSON.
    pub profile_data: Option<Value>,
    /// Avatar URL.
    pub profile_picture_url: Option<String>,
    /// When the scrape happened; becomes `last_scraped`.
    pub scraped_at: Timestamp,
}

/// A row of `tweets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tweet {
    /// Tweet id (primary key).
    pub id: String,
    /// Author.
    pub user_id: String,
    /// Tweet text.
    pub text: String,
    /// When the tweet was posted.
    pub created_at: Timestamp,
    /// Permalink.
    pub url: Option<String>,
    /// Whether the tweet replies to another.
    pub is_reply: Option<bool>,
    /// Extra JSON (entities, counts).
    pub metadata: Option<Value>,
    /// When the row was first written.
    pub created_in_db: Option<Timestamp>,
}

/// A tweet as the scraper produces it, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTweet {
    /// Tweet id.
    pub id: String,
    /// Tweet text.
    pub text: String,
    /// When the tweet was posted.
    pub created_at: Timestamp,
    /// Permalink.
    pub url: Option<String>,
    /// Whether the tweet replies to another.
    pub is_reply: Option<bool>,
    /// Extra JSON.
    pub metadata: Option<Value>,
}

/// Position in a timeline: the last tweet of the previous page.
///
/// Timelines are ordered by `(created_at, id)` descending, so the cursor is that pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineCursor {
    /// `created_at` of the last tweet seen.
    pub created_at: Timestamp,
    /// `id` of the last tweet seen.
    pub id: String,
}

impl TimelineCursor {
    /// The cursor that continues after `tweet`.
    pub fn after(tweet: &Tweet) -> Self {
        Self {
            created_at: tweet.created_at,
            id: tweet.id.clone(),
        }
    }
}

/// A row of `personality_analysis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalityAnalysis {
    /// Analysis id (primary key).
    pub id: String,
    /// The analysed user.
    pub user_id: String,
    /// Trait scores.
    pub traits: Value,
    /// Interests found.
    pub interests: Value,
    /// Communication style.
    pub communication_style: Value,
    /// When the analysis ran.
    pub analyzed_at: Option<Timestamp>,
}

/// A row of `funnel_progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelProgress {
    /// The user (primary key).
    pub user_id: String,
    /// Index of the next command.
    pub current_command_index: Option<i32>,
    /// JSON array of completed command names.
    pub completed_commands: Option<Value>,
    /// JSON object: command name → response.
    pub command_responses: Option<Value>,
    /// Last change.
    pub last_updated: Option<Timestamp>,
}

/// A row of `funnel_completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelCompletion {
    /// The user (primary key).
    pub user_id: String,
    /// When the funnel was completed.
    pub completed_at: Option<Timestamp>,
    /// Data recorded at completion.
    pub completion_data: Option<Value>,
}

/// A row of `referral_codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralCode {
    /// The code (primary key).
    pub code: String,
    /// The user who shares it.
    pub owner_user_id: String,
    /// How many times it was redeemed.
    pub usage_count: Option<i32>,
    /// When it was created.
    pub created_at: Option<Timestamp>,
}

/// A row of `referral_tracking`: who referred whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    /// Serial id.
    pub id: i32,
    /// The code redeemed.
    pub referral_code: String,
    /// Owner of the code.
    pub referrer_user_id: String,
    /// The new user.
    pub referred_user_id: String,
    /// When the code was redeemed.
    pub used_at: Option<Timestamp>,
}

/// A row of `referral_usage_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralUsage {
    /// Serial id.
    pub id: i32,
    /// The code redeemed.
    pub referral_code: String,
    /// Who redeemed it.
    pub used_by_user_id: String,
    /// When.
    pub used_at: Option<Timestamp>,
}

/// What a referrer has achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralStats {
    /// The referrer.
    pub owner_user_id: String,
    /// Their codes, ordered by code.
    pub codes: Vec<ReferralCode>,
    /// Sum of `usage_count` over their codes.
    pub total_uses: i64,
    /// Users they referred, ordered by referral id.
    pub referred_user_ids: Vec<String>,
}

/// Status of a job or chunk (the plan's CHECK set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker.
    Processing,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
}

impl JobStatus {
    /// Every status, in the order of the CHECK constraint.
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    /// Parses a stored `status` value; `None` when it is outside the CHECK set.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `analysis_queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Serial id.
    pub job_id: i32,
    /// The user whose tweets are analysed.
    pub user_id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: Option<i32>,
    /// Number of chunks.
    pub total_chunks: i32,
    /// Chunks completed so far.
    pub processed_chunks: Option<i32>,
    /// When it was enqueued.
    pub created_at: Option<Timestamp>,
    /// When a worker claimed it.
    pub started_at: Option<Timestamp>,
    /// When it completed or failed.
    pub completed_at: Option<Timestamp>,
    /// Failure message.
    pub error: Option<String>,
}

/// A row of `analysis_chunks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Serial id.
    pub chunk_id: i32,
    /// The job it belongs to.
    pub job_id: Option<i32>,
    /// Position within the job.
    pub chunk_index: i32,
    /// Tweets in the chunk.
    pub tweet_count: i32,
    /// Where the chunk is.
    pub status: JobStatus,
    /// When processing started.
    pub started_at: Option<Timestamp>,
    /// When it completed or failed.
    pub completed_at: Option<Timestamp>,
    /// The analysis result.
    pub result: Option<Value>,
    /// Failure message.
    pub error: Option<String>,
}

/// A job to enqueue: the user, its priority and the tweet count of each chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The user whose tweets are analysed.
    pub user_id: String,
    /// Higher runs first.
    pub priority: i32,
    /// One entry per chunk: how many tweets it covers.
    pub chunk_tweet_counts: Vec<i32>,
}

/// A job together with its chunks, ordered by `chunk_index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobWithChunks {
    /// The job row.
    pub job: Job,
    /// Its chunks.
    pub chunks: Vec<Chunk>,
}
