//! `SqliteStore`: the application's queries on the legacy SQLite file.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Backend, Result};
use crate::model::*;
use crate::store::Store;

/// Options for opening the SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a statement waits for SQLite's write lock before failing `Busy`.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The legacy SQLite database as a `Store`.
#[derive(Clone)]
pub struct SqliteStore {
    conn: tokio_rusqlite::Connection,
}

impl SqliteStore {
    /// Opens `path` (creating the legacy schema when the file is new).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens `path` with options.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let _ = (path.as_ref(), options);
        todo!()
    }

    /// The underlying connection (for the backfill and export).
    pub fn connection(&self) -> &tokio_rusqlite::Connection {
        &self.conn
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        todo!()
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        todo!()
    }

    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        todo!()
    }

    async fn users_scraped_before(&self, before: Timestamp, limit: u32) -> Result<Vec<User>> {
        todo!()
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        todo!()
    }

    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        todo!()
    }

    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        todo!()
    }

    async fn timeline(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        todo!()
    }

    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        todo!()
    }

    async fn search_tweets(&self, query: &str, limit: u32) -> Result<Vec<Tweet>> {
        todo!()
    }

    async fn save_analysis(&self, analysis: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        todo!()
    }

    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        todo!()
    }

    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        todo!()
    }

    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        todo!()
    }

    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        todo!()
    }

    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        todo!()
    }

    async fn create_referral_code(&self, owner_user_id: &str, code: &str) -> Result<ReferralCode> {
        todo!()
    }

    async fn get_referral_code(&self, code: &str) -> Result<Option<ReferralCode>> {
        todo!()
    }

    async fn redeem_referral(&self, code: &str, referred_user_id: &str) -> Result<Referral> {
        todo!()
    }

    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        todo!()
    }

    async fn referral_usage(&self, code: &str) -> Result<Vec<ReferralUsage>> {
        todo!()
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<JobWithChunks> {
        todo!()
    }

    async fn claim_next_job(&self) -> Result<Option<Job>> {
        todo!()
    }

    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        todo!()
    }

    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        todo!()
    }

    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        todo!()
    }

    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        todo!()
    }

    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        todo!()
    }

    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        todo!()
    }

    async fn jobs_by_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>> {
        todo!()
    }

    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        todo!()
    }
}
