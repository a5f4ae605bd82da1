//! The `Store` operations, each a routed write or a routed (and sampled)
//! read.

use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use crate::changes::capture;
use crate::error::{Backend, Result};
use crate::model::*;
use crate::shadow::Policy;
use crate::store::Store;

use super::queries::Side;
use super::routing::{other_side_of, Routing};
use super::write::{routed_write, runs_again, write_op, BUSY_RETRIES};
use super::DualStore;

/// A read: the authoritative side answers; in shadow stages a sample is
/// compared with the other side on a spawned task. `$owned` are owned copies
/// of the arguments the shadow read needs.
macro_rules! routed_read {
    ($self:ident, $op:expr, $table:expr, $policy:expr, [$($v:ident : $t:ty = $init:expr),*], |$s:ident| $call:expr) => {{
        $(let $v: $t = $init;)*
        let routing = $self.routing();
        let side = routing.authoritative();
        let started = Instant::now();
        let res = {
            let $s = $self.side(side);
            $call.await
        };
        $self.observe($op, side, started);
        let res = match res {
            Err(e) if $self.should_fall_back(&routing, &e) => {
                if $self.fall_back_for_read(&e).await {
                    let $s = Side::Sqlite(&$self.inner.sqlite);
                    $call.await
                } else {
                    // PostgreSQL answers a fresh connection: the one this
                    // read used was cut; a read runs again safely.
                    let $s = $self.side(side);
                    $call.await
                }
            }
            other => other,
        };
        $self.count(&res);
        let value = res?;
        if routing.stage.shadows_reads() && !routing.fallback && $self.sampled() {
            if let Ok(primary) = serde_json::to_value(&value) {
                let me = $self.clone();
                let other = other_side_of(side);
                tokio::spawn(me.shadow_compare($op, $table, $policy, primary, other, move |d: DualStore, b: Backend| {
                    $(let $v = $v.clone();)*
                    async move {
                        let $s = d.side(b);
                        $call.await
                    }
                }));
            }
        }
        Ok(value)
    }};
}

pub(super) use routed_read;

/// A `Store` operation's read (`routed_read`, the side as a `Store`).
macro_rules! read_op {
    ($self:ident, $op:literal, $table:literal, $policy:expr, [$($v:ident : $t:ty = $init:expr),*], |$s:ident| $call:expr) => {{
        debug_assert!(
            crate::metrics::READ_OPS.contains(&($op, $table)),
            "{} on {} is missing from metrics::READ_OPS (its metrics would not start at 0)",
            $op,
            $table
        );
        routed_read!($self, $op, $table, $policy, [$($v: $t = $init),*], |side| {
            let $s: &dyn Store = side.store();
            $call
        })
    }};
}

#[async_trait]
impl Store for DualStore {
    fn backend(&self) -> Backend {
        self.routing().authoritative()
    }

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        write_op!(self, "upsert_profile", |s| s.upsert_profile(profile))
    }
    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        read_op!(self, "get_user", "users", Policy::Exact, [id: String = id.to_string()], |s| s.get_user(&id))
    }
    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        read_op!(self, "get_user_by_username", "users", Policy::Exact, [u: String = username.to_string()], |s| s
            .get_user_by_username(&u))
    }
    async fn users_scraped_before(&self, before: Timestamp, limit: u32) -> Result<Vec<User>> {
        read_op!(
            self,
            "users_scraped_before",
            "users",
            Policy::Ordered("id"),
            [],
            |s| s.users_scraped_before(before, limit)
        )
    }
    async fn delete_user(&self, id: &str) -> Result<bool> {
        write_op!(self, "delete_user", |s| s.delete_user(id))
    }
    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        write_op!(self, "save_tweets", |s| s.save_tweets(user_id, tweets))
    }
    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        read_op!(self, "get_tweet", "tweets", Policy::Exact, [id: String = id.to_string()], |s| s.get_tweet(&id))
    }
    async fn timeline(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        read_op!(self, "timeline", "tweets", Policy::Ordered("id"),
            [u: String = user_id.to_string(), cur: Option<TimelineCursor> = cursor.cloned()],
            |s| s.timeline(&u, limit, cur.as_ref()))
    }
    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        read_op!(self, "count_tweets", "tweets", Policy::Exact, [u: String = user_id.to_string()], |s| s.count_tweets(&u))
    }
    async fn search_tweets(&self, query: &str, limit: u32) -> Result<Vec<Tweet>> {
        read_op!(self, "search_tweets", "tweets", Policy::Intersection("id"), [q: String = query.to_string()], |s| s
            .search_tweets(&q, limit))
    }
    async fn save_analysis(&self, analysis: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        write_op!(self, "save_analysis", |s| s.save_analysis(analysis))
    }
    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        read_op!(self, "latest_analysis", "personality_analysis", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .latest_analysis(&u))
    }
    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        read_op!(self, "funnel_progress", "funnel_progress", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .funnel_progress(&u))
    }
    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        write_op!(self, "complete_funnel_command", |s| s
            .complete_funnel_command(user_id, command, response))
    }
    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        write_op!(self, "mark_funnel_complete", |s| s
            .mark_funnel_complete(user_id, data))
    }
    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        read_op!(self, "funnel_completion", "funnel_completion", Policy::Exact, [u: String = user_id.to_string()], |s| s
            .funnel_completion(&u))
    }
    async fn create_referral_code(&self, owner_user_id: &str, code: &str) -> Result<ReferralCode> {
        write_op!(self, "create_referral_code", |s| s
            .create_referral_code(owner_user_id, code))
    }
    async fn get_referral_code(&self, code: &str) -> Result<Option<ReferralCode>> {
        read_op!(self, "get_referral_code", "referral_codes", Policy::Exact, [c: String = code.to_string()], |s| s
            .get_referral_code(&c))
    }
    async fn redeem_referral(&self, code: &str, referred_user_id: &str) -> Result<Referral> {
        write_op!(self, "redeem_referral", |s| s
            .redeem_referral(code, referred_user_id))
    }
    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        read_op!(self, "referral_stats", "referral_codes", Policy::Exact, [o: String = owner_user_id.to_string()], |s| s
            .referral_stats(&o))
    }
    async fn referral_usage(&self, code: &str) -> Result<Vec<ReferralUsage>> {
        read_op!(self, "referral_usage", "referral_usage_log", Policy::Ordered("id"), [c: String = code.to_string()], |s| s
            .referral_usage(&c))
    }
    async fn enqueue_job(&self, job: &NewJob) -> Result<JobWithChunks> {
        write_op!(self, "enqueue_job", |s| s.enqueue_job(job))
    }
    async fn claim_next_job(&self) -> Result<Option<Job>> {
        write_op!(self, "claim_next_job", |s| s.claim_next_job())
    }
    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        read_op!(self, "get_job", "analysis_queue", Policy::Exact, [], |s| s
            .get_job(job_id))
    }
    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        write_op!(self, "start_chunk", |s| s.start_chunk(chunk_id))
    }
    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        write_op!(self, "complete_chunk", |s| s
            .complete_chunk(chunk_id, result))
    }
    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        write_op!(self, "fail_chunk", |s| s.fail_chunk(chunk_id, error))
    }
    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        write_op!(self, "complete_job", |s| s.complete_job(job_id))
    }
    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        write_op!(self, "fail_job", |s| s.fail_job(job_id, error))
    }
    async fn jobs_by_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>> {
        read_op!(
            self,
            "jobs_by_status",
            "analysis_queue",
            Policy::Ordered("job_id"),
            [],
            |s| s.jobs_by_status(status, limit)
        )
    }
    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        read_op!(self, "user_jobs", "analysis_queue", Policy::Ordered("job_id"), [u: String = user_id.to_string()], |s| s
            .user_jobs(&u))
    }
}
