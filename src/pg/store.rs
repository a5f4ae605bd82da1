//! `PgStore`: the application's queries on PostgreSQL through a sqlx pool.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;

use crate::error::{Backend, Result};
use crate::model::*;
use crate::settings::PgSettings;
use crate::store::Store;

/// PostgreSQL as a `Store`.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects a pool with the settings' limits.
    pub async fn connect(settings: &PgSettings) -> Result<Self> {
        let _ = settings;
        todo!()
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
