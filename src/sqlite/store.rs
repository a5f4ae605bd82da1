//! `SqliteStore`: the application's queries on the legacy SQLite file.
//!
//! One `tokio_rusqlite::Connection` runs every call on its own thread, one
//! call at a time, so calls of this process never interleave; writes still
//! take SQLite's write lock up front (`BEGIN IMMEDIATE`) so a read-then-write
//! (claiming a job, redeeming a code) cannot race another process on the
//! same file, such as the legacy application itself.
//!
//! Ordering by timestamp happens in Rust, never in SQL. The legacy file holds
//! timestamps in mixed forms ('YYYY-MM-DD HH:MM:SS', ISO 8601 with `T`,
//! Twitter strings, epoch milliseconds as integers), and SQLite compares them
//! as text or numbers, which does not order instants: an integer sorts before
//! every text, 'Wed Oct ...' sorts after every '2…'. So those queries narrow
//! the rows in SQL (by user, by status, by `LIKE`), convert every row, then
//! sort and page the converted values exactly as PostgreSQL orders them.

use std::cmp::Ordering;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::convert::format_timestamp;
use crate::error::{Backend, Error, Result};
use crate::model::*;
use crate::sqlite::row::{self, FromCells};
use crate::store::{
    Store, Transition, COMPLETE_CHUNK, COMPLETE_JOB, FAIL_CHUNK, FAIL_JOB, START_CHUNK,
};
use crate::tables;

use super::connect::SqliteStore;

/// How a timestamp is written: RFC 3339 UTC with microseconds.
fn ts(t: &Timestamp) -> String {
    format_timestamp(t)
}

/// How JSON is written: its compact text.
fn json(v: &Value) -> String {
    v.to_string()
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(json)
}

/// Whether a row with `key` exists in `table` (by primary key).
fn exists(c: &Connection, table: &tables::Table, key: &dyn rusqlite::ToSql) -> Result<bool> {
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} = ?1",
        table.name, table.primary_key
    );
    Ok(c.prepare_cached(&sql)?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fails with `MissingParent` unless user `user_id` exists; the SQLite file
/// has foreign keys off, so the store checks every parent itself.
fn require_user(
    c: &Connection,
    table: &'static str,
    key: &str,
    column: &'static str,
    user_id: &str,
) -> Result<()> {
    if exists(c, &tables::USERS, &user_id)? {
        Ok(())
    } else {
        Err(Error::MissingParent {
            table,
            key: key.to_string(),
            column,
            parent_table: "users",
            parent_key: user_id.to_string(),
        })
    }
}

/// Reads back the row just written, which must exist.
fn stored<T: FromCells>(c: &Connection, key: impl rusqlite::ToSql + ToString) -> Result<T> {
    let k = key.to_string();
    row::by_key(c, key)?.ok_or(Error::NotFound {
        table: T::TABLE.name,
        key: k,
    })
}

/// Ascending with NULL last (PostgreSQL's default for ASC is NULLS LAST).
fn asc_nulls_last<T: Ord>(a: &Option<T>, b: &Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Descending with NULL last: `None < Some` in `Option`'s order, so
/// reversing it puts NULL at the end.
fn desc_nulls_last<T: Ord>(a: &Option<T>, b: &Option<T>) -> Ordering {
    b.cmp(a)
}

fn newest_tweets_first(tweets: &mut [Tweet]) {
    tweets.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
}

/// `%word%` for `LIKE ... ESCAPE '\'`, with the pattern characters escaped.
fn like_pattern(word: &str) -> String {
    let mut p = String::with_capacity(word.len() + 2);
    p.push('%');
    for ch in word.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// Loads a job or chunk for a state change, `NotFound` when missing.
fn for_change<T: FromCells>(c: &Connection, id: i32) -> Result<T> {
    row::by_key(c, id)?.ok_or(Error::NotFound {
        table: T::TABLE.name,
        key: id.to_string(),
    })
}

/// A job or chunk row, whose state the shared transitions check.
trait Queued: FromCells {
    fn status(&self) -> JobStatus;
}

impl Queued for Job {
    fn status(&self) -> JobStatus {
        self.status
    }
}

impl Queued for Chunk {
    fn status(&self) -> JobStatus {
        self.status
    }
}

/// The caller's value a transition stores, owned for the write's thread.
enum Owned {
    Json(Value),
    Text(String),
}

/// One job or chunk state change (`store::Transition`), inside the write:
/// the row read and its state checked, then changed and returned.
fn transition<T: Queued>(
    tx: &Connection,
    t: &Transition,
    id: i32,
    detail: Option<&Owned>,
) -> Result<T> {
    let row: T = for_change(tx, id)?;
    if !t.from.contains(&row.status()) {
        return Err(invalid_state(t.table, id, row.status(), t.action));
    }
    let sql = format!(
        "UPDATE {} SET {} WHERE {} = ?1",
        t.table,
        t.set_list(|i| format!("?{i}")),
        t.key
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let at = ts(&now());
    match detail {
        Some(Owned::Json(v)) => stmt.execute(params![id, at, json(v)])?,
        Some(Owned::Text(e)) => stmt.execute(params![id, at, e])?,
        None => stmt.execute(params![id, at])?,
    };
    if t.counts_on_job {
        tx.prepare_cached(&Transition::count_on_job_sql(|i| format!("?{i}")))?
            .execute([id])?;
    }
    stored(tx, id)
}

fn invalid_state(table: &'static str, id: i32, status: JobStatus, action: &'static str) -> Error {
    Error::InvalidState {
        table,
        key: id.to_string(),
        status: status.as_str().to_string(),
        action,
    }
}

fn chunks_of(c: &Connection, job_id: i32) -> Result<Vec<Chunk>> {
    let mut chunks: Vec<Chunk> = row::all(c, "WHERE job_id = ?1", [job_id])?;
    // Sorted after conversion: a legacy chunk_index may be stored as text.
    chunks.sort_by_key(|ch| (ch.chunk_index, ch.chunk_id));
    Ok(chunks)
}

fn job_with_chunks(c: &Connection, job_id: i32) -> Result<Option<JobWithChunks>> {
    let Some(job) = row::by_key::<Job>(c, job_id)? else {
        return Ok(None);
    };
    let chunks = chunks_of(c, job_id)?;
    Ok(Some(JobWithChunks { job, chunks }))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn upsert_profile(&self, profile: &ScrapedProfile) -> Result<User> {
        let p = profile.clone();
        self.write(move |tx| {
            let taken = tx
                .prepare_cached("SELECT 1 FROM users WHERE username = ?1 AND id <> ?2")?
                .query_row(params![p.username, p.id], |_| Ok(()))
                .optional()?;
            if taken.is_some() {
                return Err(Error::Duplicate {
                    table: "users",
                    column: "username",
                    key: p.username,
                });
            }
            if exists(tx, &tables::USERS, &p.id)? {
                tx.prepare_cached(
                    "UPDATE users SET username = ?2, profile_data = ?3, profile_picture_url = ?4, \
                     last_scraped = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    p.id,
                    p.username,
                    opt_json(&p.profile_data),
                    p.profile_picture_url,
                    ts(&p.scraped_at)
                ])?;
            } else {
                tx.prepare_cached(
                    "INSERT INTO users (id, username, profile_data, profile_picture_url, \
                     last_scraped, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    p.id,
                    p.username,
                    opt_json(&p.profile_data),
                    p.profile_picture_url,
                    ts(&p.scraped_at),
                    ts(&now())
                ])?;
            }
            stored(tx, p.id)
        })
        .await
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        self.read(move |c| row::by_key(c, id)).await
    }

    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_string();
        self.read(move |c| row::first(c, "WHERE username = ?1", [username]))
            .await
    }

    async fn users_scraped_before(&self, before: Timestamp, limit: u32) -> Result<Vec<User>> {
        // Every user is read: `last_scraped` in mixed legacy forms cannot be
        // compared in SQL (see the module header).
        let mut users: Vec<User> = self.read(|c| row::all(c, "", [])).await?;
        users.retain(|u| u.last_scraped.is_none_or(|t| t < before));
        // Never scraped first (None < Some), then oldest, then id.
        users.sort_by(|a, b| (&a.last_scraped, &a.id).cmp(&(&b.last_scraped, &b.id)));
        users.truncate(limit as usize);
        Ok(users)
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| {
            if !exists(tx, &tables::USERS, &id)? {
                return Ok(false);
            }
            // Usage-log rows of this user on codes someone else owns go away
            // with the user; those codes' counts drop by as much, so
            // usage_count keeps equal to the number of usage-log rows.
            tx.prepare_cached(
                "UPDATE referral_codes SET usage_count = usage_count - ( \
                   SELECT count(*) FROM referral_usage_log l \
                   WHERE l.referral_code = referral_codes.code AND l.used_by_user_id = ?1) \
                 WHERE owner_user_id <> ?1 AND code IN ( \
                   SELECT referral_code FROM referral_usage_log WHERE used_by_user_id = ?1)",
            )?
            .execute([&id])?;
            for sql in [
                "DELETE FROM analysis_chunks WHERE job_id IN \
                   (SELECT job_id FROM analysis_queue WHERE user_id = ?1)",
                "DELETE FROM analysis_queue WHERE user_id = ?1",
                "DELETE FROM referral_usage_log WHERE used_by_user_id = ?1 OR referral_code IN \
                   (SELECT code FROM referral_codes WHERE owner_user_id = ?1)",
                "DELETE FROM referral_tracking WHERE referrer_user_id = ?1 OR referred_user_id = ?1",
                "DELETE FROM referral_codes WHERE owner_user_id = ?1",
                "DELETE FROM funnel_progress WHERE user_id = ?1",
                "DELETE FROM funnel_completion WHERE user_id = ?1",
                "DELETE FROM personality_analysis WHERE user_id = ?1",
                "DELETE FROM tweets WHERE user_id = ?1",
                "DELETE FROM users WHERE id = ?1",
            ] {
                tx.prepare_cached(sql)?.execute([&id])?;
            }
            Ok(true)
        })
        .await
    }

    async fn save_tweets(&self, user_id: &str, tweets: &[NewTweet]) -> Result<u64> {
        if tweets.is_empty() {
            return Ok(0);
        }
        let user_id = user_id.to_string();
        let tweets = tweets.to_vec();
        self.write(move |tx| {
            require_user(tx, "tweets", &tweets[0].id, "user_id", &user_id)?;
            let now = ts(&now());
            let mut stmt = tx.prepare_cached(
                "INSERT INTO tweets (id, user_id, text, created_at, url, is_reply, metadata, \
                 created_in_db) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, text = excluded.text, \
                 created_at = excluded.created_at, url = excluded.url, \
                 is_reply = excluded.is_reply, metadata = excluded.metadata",
            )?;
            for t in &tweets {
                stmt.execute(params![
                    t.id,
                    user_id,
                    t.text,
                    ts(&t.created_at),
                    t.url,
                    t.is_reply.map(i64::from),
                    opt_json(&t.metadata),
                    now
                ])?;
            }
            Ok(tweets.len() as u64)
        })
        .await
    }

    async fn get_tweet(&self, id: &str) -> Result<Option<Tweet>> {
        let id = id.to_string();
        self.read(move |c| row::by_key(c, id)).await
    }

    async fn timeline(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&TimelineCursor>,
    ) -> Result<Vec<Tweet>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let user_id = user_id.to_string();
        // idx_tweets_user_created narrows to the user's rows; the order is
        // made in Rust because created_at is in mixed legacy forms.
        let mut tweets: Vec<Tweet> = self
            .read(move |c| row::all(c, "WHERE user_id = ?1", [user_id]))
            .await?;
        if let Some(cur) = cursor {
            tweets.retain(|t| (&t.created_at, &t.id) < (&cur.created_at, &cur.id));
        }
        newest_tweets_first(&mut tweets);
        tweets.truncate(limit as usize);
        Ok(tweets)
    }

    async fn count_tweets(&self, user_id: &str) -> Result<i64> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT count(*) FROM tweets WHERE user_id = ?1")?
                    .query_row([user_id], |r| r.get(0))?,
            )
        })
        .await
    }

    async fn search_tweets(&self, query: &str, limit: u32) -> Result<Vec<Tweet>> {
        let patterns: Vec<String> = query
            .split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(like_pattern)
            .collect();
        if patterns.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let clause = (1..=patterns.len())
            .map(|i| format!("text LIKE ?{i} ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut tweets: Vec<Tweet> = self
            .read(move |c| {
                row::all(
                    c,
                    &format!("WHERE {clause}"),
                    rusqlite::params_from_iter(patterns),
                )
            })
            .await?;
        newest_tweets_first(&mut tweets);
        tweets.truncate(limit as usize);
        Ok(tweets)
    }

    async fn save_analysis(&self, analysis: &PersonalityAnalysis) -> Result<PersonalityAnalysis> {
        let a = analysis.clone();
        self.write(move |tx| {
            require_user(tx, "personality_analysis", &a.id, "user_id", &a.user_id)?;
            let at = a.analyzed_at.unwrap_or_else(now);
            tx.prepare_cached(
                "INSERT INTO personality_analysis (id, user_id, traits, interests, \
                 communication_style, analyzed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                 traits = excluded.traits, interests = excluded.interests, \
                 communication_style = excluded.communication_style, \
                 analyzed_at = excluded.analyzed_at",
            )?
            .execute(params![
                a.id,
                a.user_id,
                json(&a.traits),
                json(&a.interests),
                json(&a.communication_style),
                ts(&at)
            ])?;
            stored(tx, a.id)
        })
        .await
    }

    async fn latest_analysis(&self, user_id: &str) -> Result<Option<PersonalityAnalysis>> {
        let user_id = user_id.to_string();
        let all: Vec<PersonalityAnalysis> = self
            .read(move |c| row::all(c, "WHERE user_id = ?1", [user_id]))
            .await?;
        Ok(all.into_iter().min_by(|a, b| {
            desc_nulls_last(&a.analyzed_at, &b.analyzed_at).then_with(|| b.id.cmp(&a.id))
        }))
    }

    async fn funnel_progress(&self, user_id: &str) -> Result<Option<FunnelProgress>> {
        let user_id = user_id.to_string();
        self.read(move |c| row::by_key(c, user_id)).await
    }

    async fn complete_funnel_command(
        &self,
        user_id: &str,
        command: &str,
        response: &Value,
    ) -> Result<FunnelProgress> {
        let (user_id, command, response) =
            (user_id.to_string(), command.to_string(), response.clone());
        self.write(move |tx| {
            require_user(tx, "funnel_progress", &user_id, "user_id", &user_id)?;
            let old: Option<FunnelProgress> = row::by_key(tx, &user_id)?;
            let (index, commands, responses) = match old {
                Some(p) => (
                    p.current_command_index,
                    p.completed_commands,
                    p.command_responses,
                ),
                None => (None, None, None),
            };
            let index = index.unwrap_or(0).checked_add(1).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "funnel_progress: row {user_id:?}: current_command_index overflows"
                ))
            })?;
            let mut commands = match commands {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            commands.push(Value::String(command.clone()));
            let mut responses = match responses {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            responses.insert(command, response);
            tx.prepare_cached(
                "INSERT INTO funnel_progress (user_id, current_command_index, completed_commands, \
                 command_responses, last_updated) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (user_id) DO UPDATE SET \
                 current_command_index = excluded.current_command_index, \
                 completed_commands = excluded.completed_commands, \
                 command_responses = excluded.command_responses, \
                 last_updated = excluded.last_updated",
            )?
            .execute(params![
                user_id,
                index,
                json(&Value::Array(commands)),
                json(&Value::Object(responses)),
                ts(&now())
            ])?;
            stored(tx, user_id)
        })
        .await
    }

    async fn mark_funnel_complete(&self, user_id: &str, data: &Value) -> Result<FunnelCompletion> {
        let (user_id, data) = (user_id.to_string(), data.clone());
        self.write(move |tx| {
            require_user(tx, "funnel_completion", &user_id, "user_id", &user_id)?;
            tx.prepare_cached(
                "INSERT INTO funnel_completion (user_id, completed_at, completion_data) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (user_id) DO UPDATE SET \
                 completed_at = excluded.completed_at, completion_data = excluded.completion_data",
            )?
            .execute(params![user_id, ts(&now()), json(&data)])?;
            stored(tx, user_id)
        })
        .await
    }

    async fn funnel_completion(&self, user_id: &str) -> Result<Option<FunnelCompletion>> {
        let user_id = user_id.to_string();
        self.read(move |c| row::by_key(c, user_id)).await
    }

    async fn create_referral_code(&self, owner_user_id: &str, code: &str) -> Result<ReferralCode> {
        let (owner, code) = (owner_user_id.to_string(), code.to_string());
        self.write(move |tx| {
            require_user(tx, "referral_codes", &code, "owner_user_id", &owner)?;
            if exists(tx, &tables::REFERRAL_CODES, &code)? {
                return Err(Error::Duplicate {
                    table: "referral_codes",
                    column: "code",
                    key: code,
                });
            }
            tx.prepare_cached(
                "INSERT INTO referral_codes (code, owner_user_id, usage_count, created_at) \
                 VALUES (?1, ?2, 0, ?3)",
            )?
            .execute(params![code, owner, ts(&now())])?;
            stored(tx, code)
        })
        .await
    }

    async fn get_referral_code(&self, code: &str) -> Result<Option<ReferralCode>> {
        let code = code.to_string();
        self.read(move |c| row::by_key(c, code)).await
    }

    async fn redeem_referral(&self, code: &str, referred_user_id: &str) -> Result<Referral> {
        let (code, referred) = (code.to_string(), referred_user_id.to_string());
        // BEGIN IMMEDIATE holds the write lock from the first read, so the
        // checks and the three writes see no concurrent redemption.
        self.write(move |tx| {
            let Some(rc) = row::by_key::<ReferralCode>(tx, &code)? else {
                return Err(Error::UnknownReferralCode { code });
            };
            require_user(
                tx,
                "referral_tracking",
                &referred,
                "referred_user_id",
                &referred,
            )?;
            if rc.owner_user_id == referred {
                return Err(Error::SelfReferral {
                    code,
                    user_id: referred,
                });
            }
            let already = tx
                .prepare_cached("SELECT 1 FROM referral_tracking WHERE referred_user_id = ?1")?
                .query_row([&referred], |_| Ok(()))
                .optional()?;
            if already.is_some() {
                return Err(Error::AlreadyReferred { user_id: referred });
            }
            let now = ts(&now());
            tx.prepare_cached(
                "INSERT INTO referral_tracking (referral_code, referrer_user_id, \
                 referred_user_id, used_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![code, rc.owner_user_id, referred, now])?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached(
                "INSERT INTO referral_usage_log (referral_code, used_by_user_id, used_at) \
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![code, referred, now])?;
            tx.prepare_cached(
                "UPDATE referral_codes SET usage_count = COALESCE(usage_count, 0) + 1 \
                 WHERE code = ?1",
            )?
            .execute([&code])?;
            stored(tx, id)
        })
        .await
    }

    async fn referral_stats(&self, owner_user_id: &str) -> Result<ReferralStats> {
        let owner = owner_user_id.to_string();
        self.read(move |c| {
            // `code` and `id` have BINARY collation / integer keys, so SQL
            // orders them as PostgreSQL does with COLLATE "C".
            let codes: Vec<ReferralCode> =
                row::all(c, "WHERE owner_user_id = ?1 ORDER BY code", [&owner])?;
            let referrals: Vec<Referral> =
                row::all(c, "WHERE referrer_user_id = ?1 ORDER BY id", [&owner])?;
            Ok(ReferralStats {
                total_uses: codes
                    .iter()
                    .map(|rc| i64::from(rc.usage_count.unwrap_or(0)))
                    .sum(),
                codes,
                referred_user_ids: referrals.into_iter().map(|r| r.referred_user_id).collect(),
                owner_user_id: owner,
            })
        })
        .await
    }

    async fn referral_usage(&self, code: &str) -> Result<Vec<ReferralUsage>> {
        let code = code.to_string();
        self.read(move |c| row::all(c, "WHERE referral_code = ?1 ORDER BY id", [code]))
            .await
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<JobWithChunks> {
        if job.chunk_tweet_counts.is_empty() {
            return Err(Error::InvalidArgument(
                "analysis_queue: a job needs at least one chunk".into(),
            ));
        }
        let total = i32::try_from(job.chunk_tweet_counts.len()).map_err(|_| {
            Error::InvalidArgument("analysis_queue: more chunks than total_chunks can hold".into())
        })?;
        let job = job.clone();
        self.write(move |tx| {
            require_user(tx, "analysis_queue", &job.user_id, "user_id", &job.user_id)?;
            tx.prepare_cached(
                "INSERT INTO analysis_queue (user_id, status, priority, total_chunks, \
                 processed_chunks, created_at) VALUES (?1, 'pending', ?2, ?3, 0, ?4)",
            )?
            .execute(params![job.user_id, job.priority, total, ts(&now())])?;
            let job_id = tx.last_insert_rowid();
            let mut stmt = tx.prepare_cached(
                "INSERT INTO analysis_chunks (job_id, chunk_index, tweet_count, status) \
                 VALUES (?1, ?2, ?3, 'pending')",
            )?;
            for (i, count) in job.chunk_tweet_counts.iter().enumerate() {
                stmt.execute(params![job_id, i as i64, count])?;
            }
            job_with_chunks(tx, job_id as i32)?.ok_or(Error::NotFound {
                table: "analysis_queue",
                key: job_id.to_string(),
            })
        })
        .await
    }

    async fn claim_next_job(&self) -> Result<Option<Job>> {
        // Choosing and marking happen in one BEGIN IMMEDIATE transaction on
        // the store's single connection, so two claims never see the same
        // pending job. The choice is made in Rust (created_at is in mixed
        // legacy forms).
        self.write(|tx| {
            let pending: Vec<Job> = row::all(tx, "WHERE status = 'pending'", [])?;
            let Some(next) = pending.into_iter().min_by(|a, b| {
                desc_nulls_last(&a.priority, &b.priority)
                    .then_with(|| asc_nulls_last(&a.created_at, &b.created_at))
                    .then_with(|| a.job_id.cmp(&b.job_id))
            }) else {
                return Ok(None);
            };
            tx.prepare_cached(
                "UPDATE analysis_queue SET status = 'processing', started_at = ?2 WHERE job_id = ?1",
            )?
            .execute(params![next.job_id, ts(&now())])?;
            stored(tx, next.job_id).map(Some)
        })
        .await
    }

    async fn get_job(&self, job_id: i32) -> Result<Option<JobWithChunks>> {
        self.read(move |c| job_with_chunks(c, job_id)).await
    }

    async fn start_chunk(&self, chunk_id: i32) -> Result<Chunk> {
        self.write(move |tx| transition(tx, &START_CHUNK, chunk_id, None))
            .await
    }

    async fn complete_chunk(&self, chunk_id: i32, result: &Value) -> Result<Chunk> {
        let detail = Some(Owned::Json(result.clone()));
        self.write(move |tx| transition(tx, &COMPLETE_CHUNK, chunk_id, detail.as_ref()))
            .await
    }

    async fn fail_chunk(&self, chunk_id: i32, error: &str) -> Result<Chunk> {
        let detail = Some(Owned::Text(error.to_string()));
        self.write(move |tx| transition(tx, &FAIL_CHUNK, chunk_id, detail.as_ref()))
            .await
    }

    async fn complete_job(&self, job_id: i32) -> Result<Job> {
        self.write(move |tx| transition(tx, &COMPLETE_JOB, job_id, None))
            .await
    }

    async fn fail_job(&self, job_id: i32, error: &str) -> Result<Job> {
        let detail = Some(Owned::Text(error.to_string()));
        self.write(move |tx| transition(tx, &FAIL_JOB, job_id, detail.as_ref()))
            .await
    }

    async fn jobs_by_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .read(move |c| row::all(c, "WHERE status = ?1", [status.as_str()]))
            .await?;
        jobs.sort_by(|a, b| {
            asc_nulls_last(&a.created_at, &b.created_at).then_with(|| a.job_id.cmp(&b.job_id))
        });
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    async fn user_jobs(&self, user_id: &str) -> Result<Vec<Job>> {
        let user_id = user_id.to_string();
        let mut jobs: Vec<Job> = self
            .read(move |c| row::all(c, "WHERE user_id = ?1", [user_id]))
            .await?;
        jobs.sort_by(|a, b| {
            desc_nulls_last(&a.created_at, &b.created_at).then_with(|| b.job_id.cmp(&a.job_id))
        });
        Ok(jobs)
    }
}
