//! Rows: the column lists of each table's queries and the decoders from a
//! PostgreSQL row to the domain types.

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::convert::RejectReason;
use crate::error::{Error, Result};
use crate::model::*;

// Column lists as macros so that `concat!` can build `&'static str` queries
// (sqlx only accepts non-static SQL wrapped in `AssertSqlSafe`).
// Column lists as macros so that `concat!` can build `&'static str` queries
// (sqlx only accepts non-static SQL wrapped in `AssertSqlSafe`).
macro_rules! user_cols {
    () => {
        "id, username, profile_data, profile_picture_url, last_scraped, created_at"
    };
}
macro_rules! tweet_cols {
    () => {
        "id, user_id, text, created_at, url, is_reply, metadata, created_in_db"
    };
}
macro_rules! analysis_cols {
    () => {
        "id, user_id, traits, interests, communication_style, analyzed_at"
    };
}
macro_rules! progress_cols {
    () => {
        "user_id, current_command_index, completed_commands, command_responses, last_updated"
    };
}
macro_rules! completion_cols {
    () => {
        "user_id, completed_at, completion_data"
    };
}
macro_rules! code_cols {
    () => {
        "code, owner_user_id, usage_count, created_at"
    };
}
macro_rules! job_cols {
    () => {
        "job_id, user_id, status, priority, total_chunks, processed_chunks, created_at, \
         started_at, completed_at, error"
    };
}
macro_rules! chunk_cols {
    () => {
        "chunk_id, job_id, chunk_index, tweet_count, status, started_at, completed_at, \
         result, error"
    };
}

// ----- row decoding ------------------------------------------------------------

pub(super) fn user(r: &PgRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        profile_data: r.try_get("profile_data")?,
        profile_picture_url: r.try_get("profile_picture_url")?,
        last_scraped: r.try_get("last_scraped")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn tweet(r: &PgRow) -> Result<Tweet> {
    Ok(Tweet {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        text: r.try_get("text")?,
        created_at: r.try_get("created_at")?,
        url: r.try_get("url")?,
        is_reply: r.try_get("is_reply")?,
        metadata: r.try_get("metadata")?,
        created_in_db: r.try_get("created_in_db")?,
    })
}

pub(super) fn analysis(r: &PgRow) -> Result<PersonalityAnalysis> {
    Ok(PersonalityAnalysis {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        traits: r.try_get("traits")?,
        interests: r.try_get("interests")?,
        communication_style: r.try_get("communication_style")?,
        analyzed_at: r.try_get("analyzed_at")?,
    })
}

pub(super) fn progress(r: &PgRow) -> Result<FunnelProgress> {
    Ok(FunnelProgress {
        user_id: r.try_get("user_id")?,
        current_command_index: r.try_get("current_command_index")?,
        completed_commands: r.try_get("completed_commands")?,
        command_responses: r.try_get("command_responses")?,
        last_updated: r.try_get("last_updated")?,
    })
}

pub(super) fn completion(r: &PgRow) -> Result<FunnelCompletion> {
    Ok(FunnelCompletion {
        user_id: r.try_get("user_id")?,
        completed_at: r.try_get("completed_at")?,
        completion_data: r.try_get("completion_data")?,
    })
}

pub(super) fn code(r: &PgRow) -> Result<ReferralCode> {
    Ok(ReferralCode {
        code: r.try_get("code")?,
        owner_user_id: r.try_get("owner_user_id")?,
        usage_count: r.try_get("usage_count")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn referral(r: &PgRow) -> Result<Referral> {
    Ok(Referral {
        id: r.try_get("id")?,
        referral_code: r.try_get("referral_code")?,
        referrer_user_id: r.try_get("referrer_user_id")?,
        referred_user_id: r.try_get("referred_user_id")?,
        used_at: r.try_get("used_at")?,
    })
}

pub(super) fn usage(r: &PgRow) -> Result<ReferralUsage> {
    Ok(ReferralUsage {
        id: r.try_get("id")?,
        referral_code: r.try_get("referral_code")?,
        used_by_user_id: r.try_get("used_by_user_id")?,
        used_at: r.try_get("used_at")?,
    })
}

/// The CHECK constraint keeps `status` in the set; a value outside it means
/// the constraint was dropped, which is reported rather than guessed around.
pub(super) fn status(r: &PgRow, table: &'static str, key: String) -> Result<JobStatus> {
    let s: String = r.try_get("status")?;
    JobStatus::parse(&s).ok_or_else(|| Error::InvalidValue {
        table,
        key,
        column: "status",
        reason: RejectReason::CheckViolation,
        detail: format!("{s:?} is not one of pending, processing, completed, failed"),
    })
}

pub(super) fn job(r: &PgRow) -> Result<Job> {
    let job_id: i32 = r.try_get("job_id")?;
    Ok(Job {
        job_id,
        user_id: r.try_get("user_id")?,
        status: status(r, "analysis_queue", job_id.to_string())?,
        priority: r.try_get("priority")?,
        total_chunks: r.try_get("total_chunks")?,
        processed_chunks: r.try_get("processed_chunks")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        error: r.try_get("error")?,
    })
}

pub(super) fn chunk(r: &PgRow) -> Result<Chunk> {
    let chunk_id: i32 = r.try_get("chunk_id")?;
    Ok(Chunk {
        chunk_id,
        job_id: r.try_get("job_id")?,
        chunk_index: r.try_get("chunk_index")?,
        tweet_count: r.try_get("tweet_count")?,
        status: status(r, "analysis_chunks", chunk_id.to_string())?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        result: r.try_get("result")?,
        error: r.try_get("error")?,
    })
}

pub(super) fn all<T>(rows: &[PgRow], f: fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}
