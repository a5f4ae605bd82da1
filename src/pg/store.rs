//! `PgStore`: the application's queries on PostgreSQL through a sqlx pool.
//!
//! Every write is one transaction. Rules the data must follow (parents exist,
//! usernames and codes are unique, job states) are checked explicitly inside
//! the transaction so the errors name table, key and column exactly as the
//! SQLite store reports them; the schema's constraints stay as the backstop
//! for races between concurrent transactions, and their violations are mapped
//! to the same errors by constraint name.
//!
//! Text is ordered with `COLLATE "C"` (bytewise, like SQLite's BINARY), and
//! "now" is taken in Rust (`model::now`), never from the database clock.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use super::error::{violated_constraint, PoolLimits};
use super::row::{all, decode};
use crate::decode::{query_text, FromCells};
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::model::*;
use crate::store::{
    Detail, Store, Transition, COMPLETE_CHUNK, COMPLETE_JOB, FAIL_CHUNK, FAIL_JOB, START_CHUNK,
};

/// PostgreSQL as a `Store`.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    pub(super) limits: PoolLimits,
    pub(super) outbox: Arc<AtomicBool>,
    pub(super) warm: Arc<super::warm::Warm>,
    pub(super) schema: &'static crate::tables::Schema,
}

// ----- checks inside a transaction ---------------------------------------------

/// Whether user `id` exists. `FOR KEY SHARE` keeps a concurrent `delete_user`
/// from removing it before this transaction commits, as the FK check would.
async fn user_exists(c: &mut PgConnection, id: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE")
            .bind(id)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

/// `MissingParent` for a row of `table` whose user column points nowhere.
fn missing_user(table: &'static str, key: &str, column: &'static str, user: &str) -> Error {
    Error::MissingParent {
        table,
        key: key.to_string(),
        column,
        parent_table: "users",
        parent_key: user.to_string(),
    }
}

/// Maps a foreign-key violation on `fk` (a race with `delete_user`) to
/// `MissingParent`; any other error converts as usual.
fn fk_backstop(e: sqlx::Error, fk: &str, missing: impl FnOnce() -> Error) -> Error {
    match violated_constraint(&e) {
        Some((DbErrorKind::ForeignKeyViolation, c)) if c == fk => missing(),
        _ => e.into(),
    }
}

/// Locks a job or chunk row and checks that its status allows `t`.
async fn lock_status(c: &mut PgConnection, t: &Transition, id: i32) -> Result<()> {
    let sql = format!(
        "SELECT status FROM {} WHERE {} = $1 FOR UPDATE",
        t.table, t.key
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await?;
    let Some(row) = row else {
        return Err(Error::NotFound {
            table: t.table,
            key: id.to_string(),
        });
    };
    let st: String = row.try_get("status")?;
    if JobStatus::parse(&st).is_some_and(|s| t.from.contains(&s)) {
        Ok(())
    } else {
        Err(Error::InvalidState {
            table: t.table,
            key: id.to_string(),
            status: st,
            action: t.action,
        })
    }
}

impl PgStore {
    /// One job or chunk state change (`store::Transition`): the row locked
    /// and its state checked, then changed and returned.
    async fn transition<T: FromCells>(
        &self,
        t: &Transition,
        id: i32,
        detail: Option<Detail<'_>>,
    ) -> Result<T> {
        let now = now();
        let mut tx = self.begin().await?;
        lock_status(&mut tx, t, id).await?;
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = $1 RETURNING {}",
            t.table,
            t.set_list(|i| format!("${i}")),
            t.key,
            T::TABLE.column_list()
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(now);
        let q = match detail {
            Some(Detail::Json(v)) => q.bind(v),
            Some(Detail::Text(s)) => q.bind(s),
            None => q,
        };
        let row = q.fetch_one(&mut *tx).await?;
        let out = decode::<T>(&row)?;
        if t.counts_on_job {
            sqlx::query(sqlx::AssertSqlSafe(Transition::count_on_job_sql(|i| {
                format!("${i}")
            })))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }
}

/// The words of a search query: runs of alphanumeric characters.
fn search_words(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

fn limit(n: u32) -> i64 {
    i64::from(n)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    // ----- users ---------------------------------------------------------------

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        let now = now();
        let mut tx = self.begin().await?;
        let duplicate = || Error::Duplicate {
            table: "users",
            column: "username",
            key: profile.username.clone(),
        };
        // A username another user holds fails the INSERT itself (one
        // round trip fewer than looking first).
        let row = sqlx::query(query_text!(
            User,
            "INSERT INTO users (id, username, profile_data, profile_picture_url, last_scraped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
             profile_data = EXCLUDED.profile_data, \
             profile_picture_url = EXCLUDED.profile_picture_url, \
             last_scraped = EXCLUDED.last_scraped \
             RETURNING {cols}"
        ))
        .bind(&profile.id)
        .bind(&profile.username)
        .bind(&profile.profile_data)
        .bind(&profile.profile_picture_url)
        .bind(profile.scraped_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match violated_constraint(&e) {
            Some((DbErrorKind::UniqueViolation, "users_username_key")) => duplicate(),
            _ => e.into(),
        })?;
        let u = decode::<User>(&row)?;
        self.commit(tx).await?;
        Ok(u)
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(User, "SELECT {cols} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        c.finished();
        row.as_ref().map(decode::<User>).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            User,
            "SELECT {cols} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<User>).transpose()
    }

    async fn users_scraped_before(&self, before: Timestamp, limit_n: u32) -> Result<Vec<User>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(query_text!(
            User,
            "SELECT {cols} FROM users WHERE last_scraped IS NULL OR last_scraped < $1 \
             ORDER BY last_scraped ASC NULLS FIRST, id COLLATE \"C\" ASC LIMIT $2"
        ))
        .bind(before)
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        c.finished();
        all::<User>(&rows)
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        // FOR UPDATE: concurrent writes that reference the user (their FK
        // checks take KEY SHARE) wait for this delete and then fail cleanly.
        let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        // Usage-log rows of other owners' codes disappear with the user; keep
        // usage_count equal to the number of usage-log rows of each code.
        sqlx::query(
            "UPDATE referral_codes c \
             SET usage_count = (COALESCE(c.usage_count, 0) - d.n)::integer \
             FROM (SELECT referral_code, count(*) AS n FROM referral_usage_log \
                   WHERE used_by_user_id = $1 GROUP BY referral_code) d \
             WHERE c.code = d.referral_code AND c.owner_user_id <> $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Children before parents, so no statement trips a foreign key.
        const DELETES: [&str; 10] = [
            "DELETE FROM analysis_chunks WHERE job_id IN \
             (SELECT job_id FROM analysis_queue WHERE user_id = $1)",
            "DELETE FROM analysis_queue WHERE user_id = $1",
            "DELETE FROM referral_usage_log WHERE used_by_user_id = $1 OR referral_code IN \
             (SELECT code FROM referral_codes WHERE owner_user_id = $1)",
            "DELETE FROM referral_tracking WHERE referrer_user_id = $1 OR referred_user_id = $1",
            "DELETE FROM referral_codes WHERE owner_user_id = $1",
            "DELETE FROM funnel_progress WHERE user_id = $1",
            "DELETE FROM funnel_completion WHERE user_id = $1",
            "DELETE FROM personality_analysis WHERE user_id = $1",
            "DELETE FROM tweets WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ];
        for sql in DELETES {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    // ----- tweets --------------------------------------------------------------

    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        let Some(first) = tweets.first() else {
            return Ok(0);
        };
        let now = now();
        let missing = || missing_user("tweets", &first.id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        // One statement cannot update the same row twice, so keep only the
        // last occurrence of each id (later duplicates win).
        let mut last = std::collections::HashMap::new();
        for (i, t) in tweets.iter().enumerate() {
            last.insert(t.id.as_str(), i);
        }
        let kept: Vec<&NewTweet> = tweets
            .iter()
            .enumerate()
            .filter(|(i, t)| last[t.id.as_str()] == *i)
            .map(|(_, t)| t)
            .collect();
        let ids: Vec<&str> = kept.iter().map(|t| t.id.as_str()).collect();
        let texts: Vec<&str> = kept.iter().map(|t| t.text.as_str()).collect();
        let created: Vec<Timestamp> = kept.iter().map(|t| t.created_at).collect();
        let urls: Vec<Option<&str>> = kept.iter().map(|t| t.url.as_deref()).collect();
        let replies: Vec<Option<bool>> = kept.iter().map(|t| t.is_reply).collect();
        let metas: Vec<Option<Value>> = kept.iter().map(|t| t.metadata.clone()).collect();
        sqlx::query(
            "INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata, created_in_db) \
             SELECT t.id, $1, t.text, t.created_at, t.url, t.is_reply, t.metadata, $8 \
             FROM UNNEST($2::varchar[], $3::text[], $4::timestamptz[], $5::text[], $6::boolean[], $7::jsonb[]) \
                  AS t(id, text, created_at, url, is_reply, metadata) \
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, text = EXCLUDED.text, \
             created_at = EXCLUDED.created_at, url = EXCLUDED.url, is_reply = EXCLUDED.is_reply, \
             metadata = EXCLUDED.metadata",
        )
        .bind(user_id)
        .bind(&ids)
        .bind(&texts)
        .bind(&created)
        .bind(&urls)
        .bind(&replies)
        .bind(&metas)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "tweets_user_id_fkey", missing))?;
        self.commit(tx).await?;
        Ok(tweets.len() as u64)
    }

    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            Tweet,
            "SELECT {cols} FROM tweets WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<Tweet>).transpose()
    }

    async fn timeline(
        &self,
        user_id: &str,
        limit_n: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        if limit_n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let rows = match cursor {
            None => {
                sqlx::query(query_text!(
                    Tweet,
                    "SELECT {cols} FROM tweets WHERE user_id = $1 \
                     ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit(limit_n))
                .fetch_all(&mut *c)
                .await?
            }
            Some(cur) => {
                sqlx::query(query_text!(
                    Tweet,
                    "SELECT {cols} FROM tweets WHERE user_id = $1 \
                     AND (created_at < $2 OR (created_at = $2 AND id COLLATE \"C\" < $3)) \
                     ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(cur.created_at)
                .bind(&cur.id)
                .bind(limit(limit_n))
                .fetch_all(&mut *c)
                .await?
            }
        };
        c.finished();
        all::<Tweet>(&rows)
    }

    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        let mut c = self.conn().await?;
        let n = sqlx::query_scalar("SELECT count(*) FROM tweets WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *c)
            .await?;
        c.finished();
        Ok(n)
    }

    async fn search_tweets(&self, query: &str, limit_n: u32) -> Result<Vec<Tweet>> {
        let words = search_words(query);
        if words.is_empty() || limit_n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        // The expression is written exactly as idx_tweets_text has it, so the
        // planner can use the GIN index.
        let rows = sqlx::query(query_text!(
            Tweet,
            "SELECT {cols} FROM tweets WHERE to_tsvector('english', text) @@ plainto_tsquery('english', $1) \
             ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $2"
        ))
        .bind(words.join(" "))
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        c.finished();
        all::<Tweet>(&rows)
    }

    // ----- personality analysis ------------------------------------------------

    async fn save_analysis(&self, a: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        let analyzed_at = a.analyzed_at.unwrap_or_else(now);
        let missing = || missing_user("personality_analysis", &a.id, "user_id", &a.user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, &a.user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(query_text!(
            PersonalityAnalysis,
            "INSERT INTO personality_analysis (id, user_id, traits, interests, communication_style, analyzed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, traits = EXCLUDED.traits, \
             interests = EXCLUDED.interests, communication_style = EXCLUDED.communication_style, \
             analyzed_at = EXCLUDED.analyzed_at RETURNING {cols}"
        ))
        .bind(&a.id)
        .bind(&a.user_id)
        .bind(&a.traits)
        .bind(&a.interests)
        .bind(&a.communication_style)
        .bind(analyzed_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "personality_analysis_user_id_fkey", missing))?;
        let out = decode::<PersonalityAnalysis>(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            PersonalityAnalysis,
            "SELECT {cols} FROM personality_analysis WHERE user_id = $1 \
             ORDER BY analyzed_at DESC NULLS LAST, id COLLATE \"C\" DESC LIMIT 1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<PersonalityAnalysis>).transpose()
    }

    // ----- funnel --------------------------------------------------------------

    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            FunnelProgress,
            "SELECT {cols} FROM funnel_progress WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<FunnelProgress>).transpose()
    }

    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        let now = now();
        let missing = || missing_user("funnel_progress", user_id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        // Create-if-missing and update as two statements: ON CONFLICT DO
        // NOTHING makes the creation race-free, and the UPDATE then takes the
        // row lock so concurrent commands for one user apply one after the other.
        sqlx::query(
            "INSERT INTO funnel_progress (user_id, current_command_index, completed_commands, \
             command_responses, last_updated) VALUES ($1, 0, '[]'::jsonb, '{}'::jsonb, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "funnel_progress_user_id_fkey", missing))?;
        let row = sqlx::query(query_text!(
            FunnelProgress,
            "UPDATE funnel_progress SET \
             current_command_index = COALESCE(current_command_index, 0) + 1, \
             completed_commands = (CASE WHEN jsonb_typeof(completed_commands) = 'array' \
                 THEN completed_commands ELSE '[]'::jsonb END) || jsonb_build_array($2::text), \
             command_responses = (CASE WHEN jsonb_typeof(command_responses) = 'object' \
                 THEN command_responses ELSE '{}'::jsonb END) || jsonb_build_object($2::text, $3::jsonb), \
             last_updated = $4 \
             WHERE user_id = $1 RETURNING {cols}"
        ))
        .bind(user_id)
        .bind(command)
        .bind(response)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = decode::<FunnelProgress>(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        let now = now();
        let missing = || missing_user("funnel_completion", user_id, "user_id", user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(query_text!(
            FunnelCompletion,
            "INSERT INTO funnel_completion (user_id, completed_at, completion_data) \
             VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
             completed_at = EXCLUDED.completed_at, completion_data = EXCLUDED.completion_data \
             RETURNING {cols}"
        ))
        .bind(user_id)
        .bind(now)
        .bind(data)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "funnel_completion_user_id_fkey", missing))?;
        let out = decode::<FunnelCompletion>(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            FunnelCompletion,
            "SELECT {cols} FROM funnel_completion WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<FunnelCompletion>).transpose()
    }

    // ----- referrals -----------------------------------------------------------

    async fn create_referral_code(
        &self,
        owner_user_id: &str,
        code_s: &str,
    ) -> Result<ReferralCode> {
        let now = now();
        let missing = || missing_user("referral_codes", code_s, "owner_user_id", owner_user_id);
        let duplicate = || Error::Duplicate {
            table: "referral_codes",
            column: "code",
            key: code_s.to_string(),
        };
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, owner_user_id).await? {
            return Err(missing());
        }
        // ON CONFLICT DO NOTHING: an existing code (even one inserted by a
        // concurrent transaction) yields no row instead of an error.
        let row = sqlx::query(query_text!(
            ReferralCode,
            "INSERT INTO referral_codes (code, owner_user_id, usage_count, created_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (code) DO NOTHING RETURNING {cols}"
        ))
        .bind(code_s)
        .bind(owner_user_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "referral_codes_owner_user_id_fkey", missing))?;
        let Some(row) = row else {
            return Err(duplicate());
        };
        let out = decode::<ReferralCode>(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn get_referral_code(&self, code_s: &str) -> Result<Option<ReferralCode>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(query_text!(
            ReferralCode,
            "SELECT {cols} FROM referral_codes WHERE code = $1"
        ))
        .bind(code_s)
        .fetch_optional(&mut *c)
        .await?;
        c.finished();
        row.as_ref().map(decode::<ReferralCode>).transpose()
    }

    async fn redeem_referral(&self, code_s: &str, referred: &str) -> Result<Referral> {
        let now = now();
        let missing = || missing_user("referral_tracking", referred, "referred_user_id", referred);
        let already = || Error::AlreadyReferred {
            user_id: referred.to_string(),
        };
        let mut tx = self.begin().await?;
        // The code row lock serialises redemptions of one code, so the
        // usage_count increment and the usage-log insert stay in step.
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT owner_user_id FROM referral_codes WHERE code = $1 FOR UPDATE",
        )
        .bind(code_s)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owner) = owner else {
            return Err(Error::UnknownReferralCode {
                code: code_s.to_string(),
            });
        };
        if !user_exists(&mut tx, referred).await? {
            return Err(missing());
        }
        if owner == referred {
            return Err(Error::SelfReferral {
                code: code_s.to_string(),
                user_id: referred.to_string(),
            });
        }
        let seen = sqlx::query("SELECT 1 FROM referral_tracking WHERE referred_user_id = $1")
            .bind(referred)
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_some() {
            return Err(already());
        }
        let row = sqlx::query(query_text!(
            Referral,
            "INSERT INTO referral_tracking (referral_code, referrer_user_id, referred_user_id, used_at) \
             VALUES ($1, $2, $3, $4) \
             RETURNING {cols}"
        ))
        .bind(code_s)
        .bind(&owner)
        .bind(referred)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match violated_constraint(&e) {
            // A concurrent redemption of another code for the same user won.
            Some((DbErrorKind::UniqueViolation, "referral_tracking_referred_user_id_key")) => {
                already()
            }
            Some((DbErrorKind::ForeignKeyViolation, "referral_tracking_referred_user_id_fkey")) => {
                missing()
            }
            _ => e.into(),
        })?;
        let out = decode::<Referral>(&row)?;
        sqlx::query(
            "INSERT INTO referral_usage_log (referral_code, used_by_user_id, used_at) \
             VALUES ($1, $2, $3)",
        )
        .bind(code_s)
        .bind(referred)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE referral_codes SET usage_count = COALESCE(usage_count, 0) + 1 WHERE code = $1",
        )
        .bind(code_s)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        let mut tx = self.begin_read().await?;
        // One snapshot for both reads, so the codes and the referred users agree.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(query_text!(
            ReferralCode,
            "SELECT {cols} FROM referral_codes WHERE owner_user_id = $1 ORDER BY code COLLATE \"C\""
        ))
        .bind(owner_user_id)
        .fetch_all(&mut *tx)
        .await?;
        let codes = all::<ReferralCode>(&rows)?;
        let referred_user_ids: Vec<String> = sqlx::query_scalar(
            "SELECT referred_user_id FROM referral_tracking WHERE referrer_user_id = $1 ORDER BY id",
        )
        .bind(owner_user_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let total_uses = codes
            .iter()
            .map(|c| i64::from(c.usage_count.unwrap_or(0)))
            .sum();
        Ok(ReferralStats {
            owner_user_id: owner_user_id.to_string(),
            codes,
            total_uses,
            referred_user_ids,
        })
    }

    async fn referral_usage(&self, code_s: &str) -> Result<Vec<ReferralUsage>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(query_text!(
            ReferralUsage,
            "SELECT {cols} FROM referral_usage_log WHERE referral_code = $1 ORDER BY id"
        ))
        .bind(code_s)
        .fetch_all(&mut *c)
        .await?;
        c.finished();
        all::<ReferralUsage>(&rows)
    }

    // ----- analysis queue ------------------------------------------------------

    async fn enqueue_job(&self, new: &NewJob) -> Result<JobWithChunks> {
        if new.chunk_tweet_counts.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "analysis_queue: a job for user {:?} needs at least one chunk (chunk_tweet_counts is empty)",
                new.user_id
            )));
        }
        let n = i32::try_from(new.chunk_tweet_counts.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "analysis_queue: {} chunks do not fit total_chunks (INTEGER)",
                new.chunk_tweet_counts.len()
            ))
        })?;
        let now = now();
        let missing = || missing_user("analysis_queue", &new.user_id, "user_id", &new.user_id);
        let mut tx = self.begin().await?;
        if !user_exists(&mut tx, &new.user_id).await? {
            return Err(missing());
        }
        let row = sqlx::query(query_text!(
            Job,
            "INSERT INTO analysis_queue (user_id, status, priority, total_chunks, processed_chunks, created_at) \
             VALUES ($1, 'pending', $2, $3, 0, $4) RETURNING {cols}"
        ))
        .bind(&new.user_id)
        .bind(new.priority)
        .bind(n)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fk_backstop(e, "analysis_queue_user_id_fkey", missing))?;
        let job_row = decode::<Job>(&row)?;
        let indexes: Vec<i32> = (0..n).collect();
        let rows = sqlx::query(query_text!(
            Chunk,
            "INSERT INTO analysis_chunks (job_id, chunk_index, tweet_count, status) \
             SELECT $1, c.i, c.n, 'pending' FROM UNNEST($2::integer[], $3::integer[]) AS c(i, n) \
             RETURNING {cols}"
        ))
        .bind(job_row.job_id)
        .bind(&indexes)
        .bind(&new.chunk_tweet_counts)
        .fetch_all(&mut *tx)
        .await?;
        // RETURNING does not promise an order.
        let mut chunks = all::<Chunk>(&rows)?;
        chunks.sort_by_key(|c| (c.chunk_index, c.chunk_id));
        self.commit(tx).await?;
        Ok(JobWithChunks {
            job: job_row,
            chunks,
        })
    }

    async fn claim_next_job(&self) -> Result<Option<Job>> {
        let now = now();
        let mut tx = self.begin().await?;
        // SKIP LOCKED: a job another worker is claiming right now is passed
        // over instead of waited for, so two workers never get the same job.
        let id: Option<i32> = sqlx::query_scalar(
            "SELECT job_id FROM analysis_queue WHERE status = 'pending' \
             ORDER BY priority DESC NULLS LAST, created_at ASC NULLS LAST, job_id ASC \
             LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let row = sqlx::query(query_text!(
            Job,
            "UPDATE analysis_queue SET status = 'processing', started_at = $2 \
             WHERE job_id = $1 RETURNING {cols}"
        ))
        .bind(id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let out = decode::<Job>(&row)?;
        self.commit(tx).await?;
        Ok(Some(out))
    }

    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        let mut tx = self.begin_read().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(query_text!(
            Job,
            "SELECT {cols} FROM analysis_queue WHERE job_id = $1"
        ))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let j = decode::<Job>(&row)?;
        let rows = sqlx::query(query_text!(
            Chunk,
            "SELECT {cols} FROM analysis_chunks WHERE job_id = $1 ORDER BY chunk_index, chunk_id"
        ))
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        let chunks = all::<Chunk>(&rows)?;
        tx.commit().await?;
        Ok(Some(JobWithChunks { job: j, chunks }))
    }

    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        self.transition::<Chunk>(&START_CHUNK, chunk_id, None).await
    }

    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        let detail = Some(Detail::Json(result));
        self.transition::<Chunk>(&COMPLETE_CHUNK, chunk_id, detail)
            .await
    }

    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        let detail = Some(Detail::Text(error));
        self.transition::<Chunk>(&FAIL_CHUNK, chunk_id, detail)
            .await
    }

    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        self.transition::<Job>(&COMPLETE_JOB, job_id, None).await
    }

    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        let detail = Some(Detail::Text(error));
        self.transition::<Job>(&FAIL_JOB, job_id, detail).await
    }

    async fn jobs_by_status(&self, st: JobStatus, limit_n: u32) -> Result<Vec<Job>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(query_text!(
            Job,
            "SELECT {cols} FROM analysis_queue WHERE status = $1 \
             ORDER BY created_at ASC NULLS LAST, job_id ASC LIMIT $2"
        ))
        .bind(st.as_str())
        .bind(limit(limit_n))
        .fetch_all(&mut *c)
        .await?;
        c.finished();
        all::<Job>(&rows)
    }

    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(query_text!(
            Job,
            "SELECT {cols} FROM analysis_queue WHERE user_id = $1 \
             ORDER BY created_at DESC NULLS LAST, job_id DESC"
        ))
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?;
        c.finished();
        all::<Job>(&rows)
    }
}
