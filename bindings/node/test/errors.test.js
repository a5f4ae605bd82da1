'use strict';
// Errors cross as typed Error subclasses with a stable `code` and the
// fields that name what they concern, from either store.
const test = require('node:test');
const assert = require('node:assert/strict');
const cutover = require('..');
const { freshDatabase, tempDir, legacyPath } = require('./helpers');

async function expectErrors(a, t) {
  await a.upsertProfile({ id: `owner_${t}`, username: `owner_${t}`, scrapedAt: new Date() });
  await a.upsertProfile({ id: `fan_${t}`, username: `fan_${t}`, scrapedAt: new Date() });
  await a.createReferralCode(`owner_${t}`, `c_${t}`);

  const unknown = await a.redeemReferral(`nope_${t}`, `fan_${t}`).catch((e) => e);
  assert.ok(unknown instanceof cutover.UnknownReferralCodeError, `${unknown}`);
  assert.ok(unknown instanceof cutover.CutoverError);
  assert.ok(unknown instanceof Error);
  assert.equal(unknown.code, 'UNKNOWN_REFERRAL_CODE');
  assert.equal(unknown.referralCode, `nope_${t}`);

  const self = await a.redeemReferral(`c_${t}`, `owner_${t}`).catch((e) => e);
  assert.ok(self instanceof cutover.SelfReferralError, `${self}`);
  assert.equal(self.userId, `owner_${t}`);

  await a.redeemReferral(`c_${t}`, `fan_${t}`);
  const again = await a.redeemReferral(`c_${t}`, `fan_${t}`).catch((e) => e);
  assert.ok(again instanceof cutover.AlreadyReferredError, `${again}`);
  assert.equal(again.code, 'ALREADY_REFERRED');

  const job = await a.enqueueJob({ userId: `owner_${t}`, priority: 1, chunkTweetCounts: [1] });
  const state = await a.completeJob(job.job.jobId).catch((e) => e);
  assert.ok(state instanceof cutover.InvalidStateError, `${state}`);
  assert.equal(state.table, 'analysis_queue');
  assert.equal(state.status, 'pending');

  const orphan = await a
    .saveTweets(`ghost_${t}`, [{ id: `o_${t}`, text: 'x', createdAt: new Date() }])
    .catch((e) => e);
  assert.ok(orphan instanceof cutover.MissingParentError, `${orphan}`);
  assert.equal(orphan.table, 'tweets');

  const bad = await a.completeChunk(job.chunks[0].chunkId, '{not json').catch((e) => e);
  assert.ok(bad instanceof cutover.InvalidArgumentError, `${bad}`);
  assert.match(bad.message, /result/);

  const badDate = await a.usersScrapedBefore(new Date('nope'), 1).catch((e) => e);
  assert.ok(badDate instanceof cutover.InvalidArgumentError, `${badDate}`);

  const badStatus = await a.jobsByStatus('sleeping', 1).catch((e) => e);
  assert.ok(badStatus instanceof cutover.InvalidArgumentError, `${badStatus}`);
}

test('typed errors from SQLite, PostgreSQL and the dual store', async () => {
  const dir = tempDir();
  const db = freshDatabase();
  try {
    const sqlite = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
    await expectErrors(sqlite, 's');
    const noStages = await sqlite.stage().catch((e) => e);
    assert.ok(noStages instanceof cutover.ConfigError, `${noStages}`);
    await sqlite.shutdown();

    const dual = await cutover.openDbAdapter({
      dbType: 'cutover', sqlitePath: legacyPath(dir), databaseUrl: db.url, migrate: true,
    });
    await expectErrors(dual, 'off');
    await dual.setStage('dualwrite', { force: true });
    await expectErrors(dual, 'dw');
    await dual.setStage('live', { force: true });
    await expectErrors(dual, 'live');
    const badStage = await dual.setStage('sideways').catch((e) => e);
    assert.ok(badStage instanceof cutover.InvalidArgumentError, `${badStage}`);
    await dual.shutdown();

    const pg = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: db.url });
    await expectErrors(pg, 'p');
    await pg.shutdown();
  } finally {
    db.drop();
  }
});

test('settings errors: unknown DB_TYPE, missing settings, PostgreSQL down (no password shown)', async () => {
  const unknown = await cutover.openDbAdapter({ dbType: 'mysql' }).catch((e) => e);
  assert.ok(unknown instanceof cutover.ConfigError, `${unknown}`);
  assert.match(unknown.message, /sqlite, postgres or cutover/);

  const typo = await cutover.openDbAdapter({ dbTyp: 'sqlite' }).catch((e) => e);
  assert.ok(typo instanceof cutover.ConfigError, `${typo}`);
  assert.match(typo.message, /`dbTyp`/);

  const down = await cutover
    .openDbAdapter({ dbType: 'postgres', databaseUrl: 'postgres://app:hunter2@127.0.0.1:1/app' })
    .catch((e) => e);
  assert.ok(down instanceof cutover.UnavailableError, `${down}`);
  assert.ok(!down.message.includes('hunter2'), down.message);

  // The plan's factory is synchronous: a failure to open surfaces on the first call.
  const lazy = cutover.createDbAdapter({ dbType: 'postgres', databaseUrl: 'postgres://127.0.0.1:1/x' });
  await assert.rejects(lazy.getUser('x'), cutover.UnavailableError);
});
