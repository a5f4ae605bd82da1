//! The rows of each table, drawn from one seeded generator.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::Rng;
use rusqlite::{Connection, Statement};

use crate::error::{Error, Result};
use crate::tables::{self, Table};

use super::messy::Messy;
use super::values::*;
use super::GenerateOptions;

pub(super) struct Gen {
    pub(super) rng: StdRng,
    pub(super) dirty: f64,
    pub(super) planted: BTreeMap<(&'static str, &'static str, Messy), u64>,
    pub(super) rows: BTreeMap<&'static str, u64>,
    pub(super) forced: BTreeMap<&'static str, usize>,
    pub(super) text: String,
}

/// A tweet's text with the entities it mentions.
pub(super) struct TweetText {
    text: String,
    hashtags: Vec<&'static str>,
    mentions: Vec<u64>,
    urls: Vec<String>,
}
impl Gen {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn instant_ms(&mut self) -> i64 {
        T0_MS + self.rng.random_range(0..SPAN_MS)
    }

    fn timestamp(&mut self, mix: TsMix) -> V {
        let ms = self.instant_ms();
        let total: u32 = mix.iter().sum();
        let mut r = self.rng.random_range(0..total);
        let mut form = 0;
        for (i, w) in mix.iter().enumerate() {
            if r < *w {
                form = i;
                break;
            }
            r -= w;
        }
        render_timestamp(ms, form)
    }

    /// With probability `dirty`, one of `choices` for this row of `table`.
    /// The first rows of a table take the choices in turn, so that every
    /// kind appears even in a small file.
    fn messy(
        &mut self,
        table: &'static str,
        choices: &[(&'static str, Messy)],
    ) -> Option<(&'static str, Messy)> {
        if self.dirty <= 0.0 || choices.is_empty() {
            return None;
        }
        let forced = self.forced.entry(table).or_default();
        if *forced < choices.len() {
            *forced += 1;
            return Some(choices[*forced - 1]);
        }
        if self.rng.random_bool(self.dirty) {
            Some(self.pick(choices))
        } else {
            None
        }
    }

    fn plant(&mut self, table: &'static str, column: &'static str, kind: Messy) {
        *self.planted.entry((table, column, kind)).or_default() += 1;
    }

    /// Replaces `row[column]` by a messy value of `kind` derived from it.
    fn spoil(&mut self, table: &'static Table, row: &mut [V], column: &'static str, kind: Messy) {
        let i = index_of(table, column);
        let current = std::mem::replace(&mut row[i], V::Null);
        row[i] = match kind {
            Messy::GarbageTimestamp => {
                if self.rng.random_ratio(1, 8) {
                    V::Real(1.5e9 + 0.25)
                } else {
                    V::Text(self.pick(GARBAGE_TS).to_string())
                }
            }
            Messy::BooleanWord => V::Text(self.pick(BOOL_WORDS).to_string()),
            Messy::InvalidBoolean => {
                if self.rng.random_bool(0.5) {
                    V::Text("maybe".into())
                } else {
                    V::Int(2)
                }
            }
            Messy::EmptyJson => V::Text(String::new()),
            Messy::TruncatedJson => {
                let s = match current {
                    V::Text(s) if s.len() > 2 => s,
                    _ => r#"{"partial":true,"items":[1,2,3]}"#.to_string(),
                };
                // A strict prefix of an object or array never closes it.
                let mut cut = self.rng.random_range(1..s.len() - 1);
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                V::Text(s[..cut.max(1)].to_string())
            }
            Messy::JsonNulEscape => {
                V::Text(r#"{"note":"copied from a C string\u0000","v":1}"#.to_string())
            }
            Messy::NulChar => {
                let mut b = current.text_bytes();
                let at = self.char_boundary(&b);
                b.insert(at, 0);
                V::Text(String::from_utf8(b).expect("inserting NUL keeps UTF-8"))
            }
            Messy::InvalidUtf8 => {
                let mut b = current.text_bytes();
                let at = self.char_boundary(&b);
                let bad: &[u8] =
                    self.pick(&[&b"\xff"[..], b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"]);
                b.splice(at..at, bad.iter().copied());
                V::Bytes(b)
            }
            Messy::IntegerText => match current {
                V::Int(n) => V::Text(n.to_string()),
                _ => V::Text("3".into()),
            },
            Messy::IntegralReal => match current {
                V::Int(n) => V::Real(n as f64),
                _ => V::Real(3.0),
            },
            Messy::OutOfRangeInteger => {
                V::Int(self.pick(&[1_i64 << 40, -3_000_000_000, i64::MAX, 2_147_483_648]))
            }
            Messy::BadStatus => V::Text(self.pick(BAD_STATUS).to_string()),
            Messy::NullKey => V::Null,
            Messy::Orphan | Messy::KeyCollision | Messy::LongUsername => {
                unreachable!("{kind:?} is planted by the table's own builder")
            }
        };
        self.plant(table.name, column, kind);
    }

    fn char_boundary(&mut self, b: &[u8]) -> usize {
        let s = String::from_utf8_lossy(b);
        let n = s.chars().count();
        let k = self.rng.random_range(0..=n);
        s.char_indices().nth(k).map_or(b.len(), |(i, _)| i)
    }

    fn tweet_text(&mut self, users: u64) -> TweetText {
        let target = self.rng.random_range(40..=280usize);
        let mut out = TweetText {
            text: std::mem::take(&mut self.text),
            hashtags: Vec::new(),
            mentions: Vec::new(),
            urls: Vec::new(),
        };
        out.text.clear();
        let mut chars = 0;
        while chars < target {
            if chars > 0 {
                out.text.push(' ');
                chars += 1;
            }
            let before = out.text.len();
            match self.rng.random_range(0..100) {
                0..=54 => out.text.push_str(self.pick(WORDS)),
                55..=64 => out.text.push_str(self.pick(EMOJI)),
                65..=71 => out.text.push_str(self.pick(RTL)),
                72..=77 => out.text.push_str(self.pick(COMBINING)),
                78..=84 => {
                    let tag = self.pick(WORDS);
                    out.hashtags.push(tag);
                    let _ = write!(out.text, "#{tag}");
                }
                85..=92 => {
                    let u = self.rng.random_range(0..users.max(1));
                    out.mentions.push(u);
                    let _ = write!(out.text, "@user{u}");
                }
                _ => {
                    let url = format!("https://t.co/{}", alnum(&mut self.rng, 10));
                    out.text.push_str(&url);
                    out.urls.push(url);
                }
            }
            chars += out.text[before..].chars().count();
        }
        if chars > target {
            let cut = out
                .text
                .char_indices()
                .nth(target)
                .map_or(out.text.len(), |(i, _)| i);
            out.text.truncate(cut);
        }
        out
    }

    fn count(&mut self, table: &'static str) {
        *self.rows.entry(table).or_default() += 1;
    }

    pub(super) fn fill(&mut self, tx: &Connection, o: &GenerateOptions) -> Result<()> {
        let mut stmts: Vec<Statement<'_>> = Vec::new();
        for t in tables::ALL {
            stmts.push(tx.prepare(&insert_sql(t))?);
        }
        let [users, tweets, analyses, progress, completion, codes, tracking, log, queue, chunks] =
            &mut stmts[..]
        else {
            unreachable!("ten tables")
        };
        let collide = self.dirty > 0.0 && o.users >= 2;
        self.users(users, o, collide)?;
        self.tweets(tweets, o)?;
        self.analyses(analyses, o)?;
        self.funnel(progress, completion, o)?;
        self.referrals(codes, tracking, log, o)?;
        self.jobs(queue, chunks, o)?;
        Ok(())
    }

    fn insert(&mut self, stmt: &mut Statement<'_>, table: &'static Table, row: &[V]) -> Result<()> {
        stmt.execute(rusqlite::params_from_iter(row.iter()))
            .map_err(|e| Error::Database {
                backend: crate::Backend::Sqlite,
                kind: crate::DbErrorKind::Other,
                message: format!("generate: inserting into {}: {e}", table.name),
            })?;
        self.count(table.name);
        Ok(())
    }

    fn users(
        &mut self,
        stmt: &mut Statement<'_>,
        o: &GenerateOptions,
        collide: bool,
    ) -> Result<()> {
        let t = &tables::USERS;
        for i in 0..o.users {
            let name = self.pick(NAMES);
            let handle = format!("{}_{}{i}", self.pick(WORDS), self.pick(WORDS));
            let bio = self.tweet_text(o.users).text;
            let profile = serde_json::json!({
                "name": format!("{name} {}", self.pick(EMOJI)),
                "screen_name": handle,
                "description": bio.chars().take(160).collect::<String>(),
                "location": self.pick(PLACES),
                "followers_count": self.rng.random_range(0..2_000_000),
                "friends_count": self.rng.random_range(0..5_000),
                "statuses_count": self.rng.random_range(0..80_000),
                "verified": self.rng.random_ratio(1, 20),
                "url": format!("https://example.com/{}", alnum(&mut self.rng, 6)),
            })
            .to_string();
            let id = if collide && i == 0 {
                V::Text("12345".into())
            } else if collide && i == o.users - 1 {
                // Same bytes as user 0's id, stored as a blob: distinct in
                // SQLite, the same varchar in PostgreSQL.
                self.plant(t.name, "id", Messy::KeyCollision);
                V::Blob(b"12345".to_vec())
            } else {
                V::Text(user_id(i))
            };
            let mut row = [
                id,
                V::Text(handle),
                V::Text(profile),
                V::Text(format!(
                    "https://pbs.twimg.com/profile_images/{}/{}_normal.jpg",
                    self.rng.random_range(1_000_000_000_u64..2_000_000_000),
                    alnum(&mut self.rng, 8)
                )),
                if self.rng.random_ratio(1, 10) {
                    V::Null
                } else {
                    self.timestamp(DB_TS)
                },
                self.timestamp(DB_TS),
            ];
            // The two colliding users stay otherwise clean, so the second is
            // rejected for the collision alone.
            let spoil = if collide && (i == 0 || i == o.users - 1) {
                None
            } else {
                self.messy(
                    t.name,
                    &[
                        ("last_scraped", Messy::GarbageTimestamp),
                        ("created_at", Messy::GarbageTimestamp),
                        ("profile_data", Messy::EmptyJson),
                        ("profile_data", Messy::TruncatedJson),
                        ("profile_data", Messy::JsonNulEscape),
                        ("profile_picture_url", Messy::NulChar),
                        ("profile_picture_url", Messy::InvalidUtf8),
                        ("username", Messy::LongUsername),
                    ],
                )
            };
            match spoil {
                Some((col, Messy::LongUsername)) => {
                    let long = format!("{}_{i}", "very_long_handle_".repeat(16));
                    row[index_of(t, col)] = V::Text(long);
                    self.plant(t.name, col, Messy::LongUsername);
                }
                Some((col, kind)) => self.spoil(t, &mut row, col, kind),
                None => {}
            }
            self.insert(stmt, t, &row)?;
        }
        Ok(())
    }

    /// A user index, skewed so that a few users write most tweets.
    fn some_user(&mut self, users: u64) -> u64 {
        let u: f64 = self.rng.random();
        ((u * u * users as f64) as u64).min(users - 1)
    }

    /// True for the user whose id is the blob twin of `'12345'`.
    fn is_twin(&self, i: u64, o: &GenerateOptions) -> bool {
        self.dirty > 0.0 && o.users >= 2 && i == o.users - 1
    }

    /// The id children use for user `i`: user 0 is `'12345'` when colliding,
    /// and so is its blob twin (children name their parent as text).
    fn user_ref(&self, i: u64, o: &GenerateOptions) -> String {
        if self.dirty > 0.0 && o.users >= 2 && (i == 0 || i == o.users - 1) {
            "12345".into()
        } else {
            user_id(i)
        }
    }

    fn orphan_user(&mut self) -> String {
        format!("9{:011}", self.rng.random_range(0..99_999_999_999_u64))
    }

    fn tweets(&mut self, stmt: &mut Statement<'_>, o: &GenerateOptions) -> Result<()> {
        let t = &tables::TWEETS;
        let mut meta = String::with_capacity(512);
        for j in 0..o.tweets {
            let id = 1_500_000_000_000_000_000_u64 + j * 1000 + self.rng.random_range(0..1000);
            let u = self.some_user(o.users);
            let uid = self.user_ref(u, o);
            let tt = self.tweet_text(o.users);
            let is_reply = self.rng.random_ratio(1, 4);
            meta.clear();
            let _ = write!(
                meta,
                r#"{{"retweet_count":{},"favorite_count":{},"reply_count":{},"quote_count":{},"lang":"{}","source":"{}","possibly_sensitive":{},"conversation_id":"{}","#,
                self.rng.random_range(0..50_000),
                self.rng.random_range(0..250_000),
                self.rng.random_range(0..3_000),
                self.rng.random_range(0..500),
                self.pick(&["en", "ar", "he", "fr", "ja", "und"]),
                self.pick(&[
                    "Twitter Web App",
                    "Twitter for iPhone",
                    "Twitter for Android",
                    "TweetDeck"
                ]),
                self.rng.random_ratio(1, 50),
                if is_reply {
                    id - self.rng.random_range(1..1_000_000)
                } else {
                    id
                },
            );
            meta.push_str(r#""entities":{"hashtags":["#);
            for (k, h) in tt.hashtags.iter().enumerate() {
                let _ = write!(meta, "{}\"{h}\"", if k > 0 { "," } else { "" });
            }
            meta.push_str(r#"],"user_mentions":["#);
            for (k, m) in tt.mentions.iter().enumerate() {
                let _ = write!(
                    meta,
                    r#"{}{{"screen_name":"user{m}","id_str":"{}"}}"#,
                    if k > 0 { "," } else { "" },
                    user_id(*m)
                );
            }
            meta.push_str(r#"],"urls":["#);
            for (k, url) in tt.urls.iter().enumerate() {
                let _ = write!(
                    meta,
                    r#"{}{{"url":"{url}","expanded_url":"https://example.com/{}"}}"#,
                    if k > 0 { "," } else { "" },
                    &url[13..]
                );
            }
            meta.push_str("]}}");
            let mut row = [
                V::Text(id.to_string()),
                V::Text(uid),
                V::Text(tt.text),
                self.timestamp(TWEET_TS),
                V::Text(format!("https://twitter.com/user{u}/status/{id}")),
                if self.rng.random_ratio(1, 50) {
                    V::Null
                } else {
                    V::Int(is_reply as i64)
                },
                V::Text(meta.clone()),
                self.timestamp(DB_TS),
            ];
            match self.messy(
                t.name,
                &[
                    ("created_at", Messy::GarbageTimestamp),
                    ("created_in_db", Messy::GarbageTimestamp),
                    ("is_reply", Messy::BooleanWord),
                    ("is_reply", Messy::BooleanWord),
                    ("is_reply", Messy::InvalidBoolean),
                    ("metadata", Messy::EmptyJson),
                    ("metadata", Messy::TruncatedJson),
                    ("metadata", Messy::JsonNulEscape),
                    ("text", Messy::NulChar),
                    ("text", Messy::InvalidUtf8),
                    ("user_id", Messy::Orphan),
                    ("id", Messy::NullKey),
                ],
            ) {
                Some((col, Messy::Orphan)) => {
                    row[index_of(t, col)] = V::Text(self.orphan_user());
                    self.plant(t.name, col, Messy::Orphan);
                }
                Some((col, kind)) => self.spoil(t, &mut row, col, kind),
                None => {}
            }
            self.insert(stmt, t, &row)?;
            // Reuse the text buffer's allocation for the next tweet.
            if let V::Text(s) = std::mem::replace(&mut row[2], V::Null) {
                self.text = s;
            }
        }
        Ok(())
    }

    fn analyses(&mut self, stmt: &mut Statement<'_>, o: &GenerateOptions) -> Result<()> {
        let t = &tables::PERSONALITY_ANALYSIS;
        let mut n = 0u64;
        for i in 0..o.users {
            if !self.rng.random_ratio(3, 10) || self.is_twin(i, o) {
                continue;
            }
            for _ in 0..self.rng.random_range(1..=2) {
                n += 1;
                let traits = format!(
                    r#"{{"openness":{:.2},"conscientiousness":{:.2},"extraversion":{:.2},"agreeableness":{:.2},"neuroticism":{:.2},"summary":"{}"}}"#,
                    self.rng.random::<f64>(),
                    self.rng.random::<f64>(),
                    self.rng.random::<f64>(),
                    self.rng.random::<f64>(),
                    self.rng.random::<f64>(),
                    self.pick(&[
                        "curious and direct",
                        "calm, détaillé",
                        "enthousiaste 🎉",
                        "حذر ومتأمل"
                    ]),
                );
                let interests = format!(
                    r#"["{}","{}","{}"]"#,
                    self.pick(WORDS),
                    self.pick(WORDS),
                    self.pick(RTL)
                );
                let style = format!(
                    r#"{{"tone":"{}","formality":{:.2},"emoji_rate":{:.3},"avg_length":{}}}"#,
                    self.pick(&["casual", "formal", "playful", "terse"]),
                    self.rng.random::<f64>(),
                    self.rng.random::<f64>() / 5.0,
                    self.rng.random_range(20..280),
                );
                let mut row = [
                    V::Text(format!("pa-{n:08}-{}", alnum(&mut self.rng, 12))),
                    V::Text(self.user_ref(i, o)),
                    V::Text(traits),
                    V::Text(interests),
                    V::Text(style),
                    self.timestamp(DB_TS),
                ];
                match self.messy(
                    t.name,
                    &[
                        ("traits", Messy::EmptyJson),
                        ("interests", Messy::TruncatedJson),
                        ("communication_style", Messy::JsonNulEscape),
                        ("analyzed_at", Messy::GarbageTimestamp),
                        ("user_id", Messy::Orphan),
                    ],
                ) {
                    Some((col, Messy::Orphan)) => {
                        row[index_of(t, col)] = V::Text(self.orphan_user());
                        self.plant(t.name, col, Messy::Orphan);
                    }
                    Some((col, kind)) => self.spoil(t, &mut row, col, kind),
                    None => {}
                }
                self.insert(stmt, t, &row)?;
            }
        }
        Ok(())
    }

    fn funnel(
        &mut self,
        progress: &mut Statement<'_>,
        completion: &mut Statement<'_>,
        o: &GenerateOptions,
    ) -> Result<()> {
        let tp = &tables::FUNNEL_PROGRESS;
        let tc = &tables::FUNNEL_COMPLETION;
        for i in 0..o.users {
            // The twin would repeat user 0's key in this keyed-by-user table.
            if !self.rng.random_bool(0.5) || self.is_twin(i, o) {
                continue;
            }
            let uid = self.user_ref(i, o);
            let index = self.rng.random_range(0..=COMMANDS.len());
            let done = &COMMANDS[..index];
            let completed = serde_json::to_string(done).expect("strings serialise");
            let mut responses = String::from("{");
            for (k, c) in done.iter().enumerate() {
                let _ = write!(
                    responses,
                    r#"{}"{c}":{{"ok":true,"answer":"{}","ms":{}}}"#,
                    if k > 0 { "," } else { "" },
                    self.pick(WORDS),
                    self.rng.random_range(10..5000)
                );
            }
            responses.push('}');
            let mut row = [
                V::Text(uid.clone()),
                V::Int(index as i64),
                V::Text(completed),
                V::Text(responses),
                self.timestamp(DB_TS),
            ];
            if let Some((col, kind)) = self.messy(
                tp.name,
                &[
                    ("current_command_index", Messy::IntegerText),
                    ("current_command_index", Messy::IntegralReal),
                    ("current_command_index", Messy::OutOfRangeInteger),
                    ("completed_commands", Messy::EmptyJson),
                    ("completed_commands", Messy::TruncatedJson),
                    ("command_responses", Messy::JsonNulEscape),
                    ("last_updated", Messy::GarbageTimestamp),
                ],
            ) {
                self.spoil(tp, &mut row, col, kind);
            }
            self.insert(progress, tp, &row)?;

            if index == COMMANDS.len() {
                let mut row = [
                    V::Text(uid),
                    self.timestamp(DB_TS),
                    V::Text(format!(
                        r#"{{"commands":{},"score":{:.1},"badge":"{}"}}"#,
                        COMMANDS.len(),
                        self.rng.random::<f64>() * 100.0,
                        self.pick(EMOJI)
                    )),
                ];
                if let Some((col, kind)) = self.messy(
                    tc.name,
                    &[
                        ("completed_at", Messy::GarbageTimestamp),
                        ("completion_data", Messy::EmptyJson),
                        ("completion_data", Messy::TruncatedJson),
                        ("completion_data", Messy::JsonNulEscape),
                    ],
                ) {
                    self.spoil(tc, &mut row, col, kind);
                }
                self.insert(completion, tc, &row)?;
            }
        }
        Ok(())
    }

    fn referrals(
        &mut self,
        codes: &mut Statement<'_>,
        tracking: &mut Statement<'_>,
        log: &mut Statement<'_>,
        o: &GenerateOptions,
    ) -> Result<()> {
        let (tcode, ttrack, tlog) = (
            &tables::REFERRAL_CODES,
            &tables::REFERRAL_TRACKING,
            &tables::REFERRAL_USAGE_LOG,
        );
        // Referred users in a shuffled order: each is referred at most once
        // (referred_user_id is UNIQUE).
        let mut referable: Vec<u64> = (0..o.users).filter(|&i| !self.is_twin(i, o)).collect();
        for k in (1..referable.len()).rev() {
            let j = self.rng.random_range(0..=k);
            referable.swap(k, j);
        }
        let mut next_referable = 0usize;
        let mut next_id = 1i64;
        for owner in 0..o.users {
            if !self.rng.random_ratio(1, 5) || self.is_twin(owner, o) {
                continue;
            }
            let code = format!("REF{}", alnum(&mut self.rng, 8));
            let owner_id = self.user_ref(owner, o);
            let mut uses = Vec::new();
            for _ in 0..self.rng.random_range(0..4) {
                while next_referable < referable.len() && referable[next_referable] == owner {
                    next_referable += 1;
                }
                let Some(&r) = referable.get(next_referable) else {
                    break;
                };
                next_referable += 1;
                uses.push(r);
            }
            let mut row = [
                V::Text(code.clone()),
                V::Text(owner_id.clone()),
                V::Int(uses.len() as i64),
                self.timestamp(DB_TS),
            ];
            if let Some((col, kind)) = self.messy(
                tcode.name,
                &[
                    ("usage_count", Messy::IntegerText),
                    ("usage_count", Messy::IntegralReal),
                    ("usage_count", Messy::OutOfRangeInteger),
                    ("created_at", Messy::GarbageTimestamp),
                ],
            ) {
                self.spoil(tcode, &mut row, col, kind);
            }
            self.insert(codes, tcode, &row)?;
            for r in uses {
                let used_at = self.timestamp(DB_TS);
                let referred = self.user_ref(r, o);
                let mut row = [
                    V::Int(next_id),
                    V::Text(code.clone()),
                    V::Text(owner_id.clone()),
                    V::Text(referred.clone()),
                    used_at.clone(),
                ];
                if let Some((col, kind)) =
                    self.messy(ttrack.name, &[("used_at", Messy::GarbageTimestamp)])
                {
                    self.spoil(ttrack, &mut row, col, kind);
                }
                self.insert(tracking, ttrack, &row)?;
                let mut row = [
                    V::Int(next_id),
                    V::Text(code.clone()),
                    V::Text(referred),
                    used_at,
                ];
                match self.messy(
                    tlog.name,
                    &[
                        ("used_at", Messy::GarbageTimestamp),
                        ("referral_code", Messy::Orphan),
                    ],
                ) {
                    Some((col, Messy::Orphan)) => {
                        row[index_of(tlog, col)] =
                            V::Text(format!("GONE{}", alnum(&mut self.rng, 8)));
                        self.plant(tlog.name, col, Messy::Orphan);
                    }
                    Some((col, kind)) => self.spoil(tlog, &mut row, col, kind),
                    None => {}
                }
                self.insert(log, tlog, &row)?;
                next_id += 1;
            }
        }
        Ok(())
    }

    fn jobs(
        &mut self,
        queue: &mut Statement<'_>,
        chunks: &mut Statement<'_>,
        o: &GenerateOptions,
    ) -> Result<()> {
        let (tq, tc) = (&tables::ANALYSIS_QUEUE, &tables::ANALYSIS_CHUNKS);
        let mut job_id = 0i64;
        let mut chunk_id = 0i64;
        let jobs = (o.users / 10).max(u64::from(o.users > 0) * 4);
        for k in 0..jobs {
            job_id += 1;
            let u = self.some_user(o.users);
            // Every status appears: the first four jobs take one each.
            let status = if k < 4 {
                ["pending", "processing", "completed", "failed"][k as usize]
            } else {
                self.pick(&[
                    "pending",
                    "processing",
                    "completed",
                    "completed",
                    "completed",
                    "failed",
                ])
            };
            let total = self.rng.random_range(1..=8i64);
            let processed = match status {
                "pending" => 0,
                "processing" => self.rng.random_range(0..total),
                "completed" => total,
                _ => self.rng.random_range(0..total),
            };
            let created = self.instant_ms();
            let started = created + self.rng.random_range(1_000..600_000);
            let ended = started + self.rng.random_range(1_000..3_600_000);
            let form = self.rng.random_range(0..4);
            let error = (status == "failed").then(|| {
                format!(
                    "chunk {processed} failed: {}",
                    self.pick(&[
                        "rate limited (429)",
                        "model timeout after 30s",
                        "invalid response: unexpected token « < »",
                    ])
                )
            });
            let mut row = [
                V::Int(job_id),
                V::Text(self.user_ref(u, o)),
                V::Text(status.into()),
                V::Int(self.rng.random_range(0..10)),
                V::Int(total),
                V::Int(processed),
                render_timestamp(created, form),
                if status == "pending" {
                    V::Null
                } else {
                    render_timestamp(started, form)
                },
                if matches!(status, "completed" | "failed") {
                    render_timestamp(ended, form)
                } else {
                    V::Null
                },
                error.map_or(V::Null, V::Text),
            ];
            if let Some((col, kind)) = self.messy(
                tq.name,
                &[
                    ("status", Messy::BadStatus),
                    ("priority", Messy::IntegerText),
                    ("priority", Messy::IntegralReal),
                    ("priority", Messy::OutOfRangeInteger),
                    ("created_at", Messy::GarbageTimestamp),
                    ("error", Messy::NulChar),
                ],
            ) {
                self.spoil(tq, &mut row, col, kind);
            }
            self.insert(queue, tq, &row)?;

            for index in 0..total {
                chunk_id += 1;
                let chunk_status = match status {
                    "pending" => "pending",
                    "completed" => "completed",
                    "processing" if index < processed => "completed",
                    "processing" if index == processed => "processing",
                    "failed" if index < processed => "completed",
                    "failed" if index == processed => "failed",
                    _ => "pending",
                };
                let done = chunk_status == "completed";
                let mut row = [
                    V::Int(chunk_id),
                    V::Int(job_id),
                    V::Int(index),
                    V::Int(self.rng.random_range(1..=200)),
                    V::Text(chunk_status.into()),
                    if chunk_status == "pending" {
                        V::Null
                    } else {
                        render_timestamp(started, form)
                    },
                    if done || chunk_status == "failed" {
                        render_timestamp(ended, form)
                    } else {
                        V::Null
                    },
                    if done {
                        V::Text(format!(
                            r#"{{"themes":["{}","{}"],"sentiment":{:.3},"sample":"{}"}}"#,
                            self.pick(WORDS),
                            self.pick(WORDS),
                            self.rng.random::<f64>() * 2.0 - 1.0,
                            self.pick(EMOJI)
                        ))
                    } else {
                        V::Null
                    },
                    if chunk_status == "failed" {
                        V::Text("upstream error: 503".into())
                    } else {
                        V::Null
                    },
                ];
                // The second list is a prefix of the first, so the rows that
                // take the choices in turn cover them all in any order.
                let choices: &[(&str, Messy)] = if done {
                    &[
                        ("job_id", Messy::Orphan),
                        ("status", Messy::BadStatus),
                        ("tweet_count", Messy::OutOfRangeInteger),
                        ("tweet_count", Messy::IntegerText),
                        ("tweet_count", Messy::IntegralReal),
                        ("result", Messy::EmptyJson),
                        ("result", Messy::TruncatedJson),
                        ("result", Messy::JsonNulEscape),
                        ("completed_at", Messy::GarbageTimestamp),
                    ]
                } else {
                    &[
                        ("job_id", Messy::Orphan),
                        ("status", Messy::BadStatus),
                        ("tweet_count", Messy::OutOfRangeInteger),
                    ]
                };
                match self.messy(tc.name, choices) {
                    Some((col, Messy::Orphan)) => {
                        row[index_of(tc, col)] = V::Int(1_000_000_000 + chunk_id);
                        self.plant(tc.name, col, Messy::Orphan);
                    }
                    Some((col, kind)) => self.spoil(tc, &mut row, col, kind),
                    None => {}
                }
                self.insert(chunks, tc, &row)?;
            }
        }
        Ok(())
    }
}
