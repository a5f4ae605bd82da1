'use strict';
// Every adapter method against a real SQLite file and a real PostgreSQL:
// the plain stores (DB_TYPE=sqlite, postgres) and the dual store in each
// stage, then each dual-stage write checked on both sides through the
// plain adapters.
const test = require('node:test');
const assert = require('node:assert/strict');
const cutover = require('..');
const { freshDatabase, tempDir, legacyPath } = require('./helpers');

const BIG = '123456789012345678901234567890';

function at(iso, micros) {
  const d = new Date(iso);
  d.micros = micros;
  return d;
}

/** Calls every operation once with keys tagged `t`; returns what it wrote. */
async function exercise(a, t) {
  const uid = `u_${t}`;
  const other = `v_${t}`;
  const gone = `w_${t}`;
  const scrapedAt = at('2024-02-29T12:34:56.123Z', 456);

  const u = await a.upsertProfile({
    id: uid,
    username: `name_${t}`,
    profileData: `{"followers": ${BIG}, "ratio": 0.1000000000000000055511151231257827}`,
    profilePictureUrl: 'https://example.com/p.png',
    scrapedAt,
  });
  assert.equal(u.id, uid);
  assert.ok(u.profileData.includes(BIG), `JSON kept exactly: ${u.profileData}`);
  assert.ok(u.profileData.includes('0.1000000000000000055511151231257827'), u.profileData);
  assert.ok(u.lastScraped instanceof Date);
  assert.equal(u.lastScraped.toISOString(), '2024-02-29T12:34:56.123Z');
  assert.equal(u.lastScraped.micros, 456);

  const u2 = await a.saveUserProfile(`name2_${t}`, { id: other, scrapedAt: new Date() });
  assert.equal(u2.username, `name2_${t}`);
  await a.upsertProfile({ id: gone, username: `gone_${t}`, scrapedAt: '2024-01-01T00:00:00.000001Z' });

  assert.equal((await a.getUser(uid)).username, `name_${t}`);
  assert.equal(await a.getUser(`nobody_${t}`), null);
  assert.equal((await a.getUserByUsername(`name_${t}`)).id, uid);
  const stale = await a.usersScrapedBefore(new Date('2024-03-01T00:00:00Z'), 1000);
  assert.ok(stale.some((x) => x.id === uid), 'scraped before March');
  assert.ok(!stale.some((x) => x.id === other), 'scraped now');

  const n = await a.saveTweets(uid, [
    {
      id: `t1_${t}`,
      text: 'hello cutover world',
      createdAt: at('2024-01-01T00:00:00.001Z', 2),
      metadata: { lang: 'en', n: 1 },
      isReply: false,
    },
    { id: `t2_${t}`, text: 'a second tweet', createdAt: new Date('2024-01-02T00:00:00Z'), url: 'https://x/2' },
  ]);
  assert.equal(n, 2);
  const t1 = await a.getTweet(`t1_${t}`);
  assert.equal(t1.userId, uid);
  assert.equal(t1.isReply, false);
  assert.deepEqual(JSON.parse(t1.metadata), { lang: 'en', n: 1 });
  assert.equal(t1.createdAt.micros, 2);
  const page = await a.timeline(uid, 1);
  assert.equal(page.length, 1);
  assert.equal(page[0].id, `t2_${t}`);
  const next = await a.timeline(uid, 10, { createdAt: page[0].createdAt, id: page[0].id });
  assert.deepEqual(next.map((x) => x.id), [`t1_${t}`]);
  assert.equal(await a.countTweets(uid), 2);
  const found = await a.searchTweets('cutover', 50);
  assert.ok(found.some((x) => x.id === `t1_${t}`), 'full-text search finds the tweet');
  const all = await a.getUserTweets(`name_${t}`, 1);
  assert.deepEqual(all.map((x) => x.id), [`t2_${t}`, `t1_${t}`]);

  const pa = await a.saveAnalysis({
    id: `pa_${t}`,
    userId: uid,
    traits: { openness: 0.5 },
    interests: ['rust', 'node'],
    communicationStyle: '"plain"',
  });
  assert.equal(pa.communicationStyle, '"plain"');
  assert.equal((await a.latestAnalysis(uid)).id, `pa_${t}`);

  const fp = await a.completeFunnelCommand(uid, 'start', { ok: true });
  assert.equal(fp.userId, uid);
  assert.notEqual(fp.currentCommandIndex, null);
  assert.equal((await a.funnelProgress(uid)).currentCommandIndex, fp.currentCommandIndex);
  const fc = await a.markFunnelComplete(uid, `{"score": ${BIG}}`);
  assert.ok(fc.completionData.includes(BIG), fc.completionData);
  assert.ok((await a.funnelCompletion(uid)).completedAt instanceof Date);

  const code = `code_${t}`;
  assert.equal((await a.createReferralCode(uid, code)).ownerUserId, uid);
  assert.equal((await a.getReferralCode(code)).code, code);
  const r = await a.redeemReferral(code, other);
  assert.equal(r.referrerUserId, uid);
  assert.equal(typeof r.id, 'number');
  const stats = await a.referralStats(uid);
  assert.equal(stats.totalUses, 1);
  assert.deepEqual(stats.referredUserIds, [other]);
  assert.equal((await a.referralUsage(code)).length, 1);

  const job = await a.enqueueJob({ userId: uid, priority: 5, chunkTweetCounts: [10, 20] });
  assert.equal(job.chunks.length, 2);
  assert.equal(job.job.status, 'pending');
  const claimed = await a.claimNextJob();
  assert.equal(claimed.jobId, job.job.jobId);
  assert.equal(claimed.status, 'processing');
  assert.equal((await a.getJob(job.job.jobId)).chunks.length, 2);
  const [c1, c2] = job.chunks;
  assert.equal((await a.startChunk(c1.chunkId)).status, 'processing');
  const done = await a.completeChunk(c1.chunkId, { score: 0.25 });
  assert.equal(done.status, 'completed');
  assert.deepEqual(JSON.parse(done.result), { score: 0.25 });
  await a.startChunk(c2.chunkId);
  assert.equal((await a.failChunk(c2.chunkId, 'boom')).error, 'boom');
  assert.equal((await a.completeJob(job.job.jobId)).status, 'completed');
  const second = await a.enqueueJob({ userId: uid, priority: 1, chunkTweetCounts: [1] });
  assert.equal((await a.failJob(second.job.jobId, 'cancelled')).status, 'failed');
  assert.ok((await a.jobsByStatus('completed', 1000)).some((j) => j.jobId === job.job.jobId));
  assert.equal((await a.userJobs(uid)).length, 2);

  assert.equal(await a.deleteUser(gone), true);
  assert.equal(await a.getUser(gone), null);
  assert.equal(await a.deleteUser(gone), false);
  return { uid, other, gone, tweets: [`t1_${t}`, `t2_${t}`], code, job: job.job.jobId };
}

/** What `exercise` wrote, read back through `a`. */
async function holds(a, w, label) {
  assert.ok(await a.getUser(w.uid), `${label}: user ${w.uid}`);
  assert.ok(await a.getUser(w.other), `${label}: user ${w.other}`);
  assert.equal(await a.getUser(w.gone), null, `${label}: deleted user ${w.gone} stays deleted`);
  for (const id of w.tweets) assert.ok(await a.getTweet(id), `${label}: tweet ${id}`);
  assert.equal((await a.referralStats(w.uid)).totalUses, 1, `${label}: referral of ${w.uid}`);
  assert.equal((await a.getJob(w.job)).job.status, 'completed', `${label}: job ${w.job}`);
  assert.ok(await a.funnelCompletion(w.uid), `${label}: funnel of ${w.uid}`);
}

test('the plain stores: every method on SQLite and on PostgreSQL', async () => {
  const dir = tempDir();
  const db = freshDatabase();
  try {
    const sqlite = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
    assert.equal(await sqlite.backend(), 'sqlite');
    await exercise(sqlite, 'sqlite');
    await sqlite.shutdown();
    // PostgreSQL's schema comes from a dual-store start with `migrate`.
    const boot = await cutover.openDbAdapter({
      dbType: 'cutover', sqlitePath: legacyPath(dir), databaseUrl: db.url, migrate: true,
    });
    await boot.shutdown();
    const pg = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: db.url });
    assert.equal(await pg.backend(), 'postgres');
    await exercise(pg, 'pg');
    await pg.shutdown();
  } finally {
    db.drop();
  }
});

test('the dual store: every method in every stage, each write on both sides', async () => {
  const dir = tempDir();
  const db = freshDatabase();
  const opts = { dbType: 'cutover', sqlitePath: legacyPath(dir), databaseUrl: db.url, migrate: true, actor: 'adapter test' };
  try {
    const a = await cutover.openDbAdapter(opts);
    assert.equal(await a.stage(), 'off');
    const written = {};
    for (const stage of cutover.STAGES) {
      if (stage !== 'off') {
        const r = await a.setStage(stage, { force: true });
        assert.equal(r.stage, stage);
        assert.equal(typeof r.pauseMs, 'number');
      }
      assert.equal(await a.stage(), stage);
      assert.equal(await a.backend(), ['live', 'rampdown', 'complete'].includes(stage) ? 'postgres' : 'sqlite');
      written[stage] = await exercise(a, stage);
      const s = await a.status();
      assert.equal(s.stage, stage);
      assert.equal(typeof s.healthy, 'boolean');
    }
    await a.shutdown();
    await assert.rejects(a.getUser('x'), cutover.ConfigError, 'calls after shutdown fail');

    const sqlite = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
    const pg = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: db.url });
    for (const stage of ['dualwrite', 'shadow', 'live', 'rampdown']) {
      await holds(sqlite, written[stage], `SQLite, ${stage}`);
      await holds(pg, written[stage], `PostgreSQL, ${stage}`);
    }
    await holds(pg, written.complete, 'PostgreSQL, complete');
    assert.equal(await sqlite.getUser(written.complete.uid), null, 'complete writes PostgreSQL only');
    assert.equal(await pg.getUser(written.off.uid), null, 'off writes SQLite only');
    await sqlite.shutdown();
    await pg.shutdown();
  } finally {
    db.drop();
  }
});

module.exports = { exercise };
