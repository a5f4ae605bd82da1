'use strict';
// The example service under node:cluster (2 web/scraper processes and an
// analysis-queue worker) through the whole cutover, driven by the `cutover`
// command: off → dualwrite (backfill) → shadow (PostgreSQL restarted) →
// verify → live (restarted again: fallback to SQLite and back) → shadow
// (rollback) → live → rampdown → verify → complete. Asserts no failed
// call, clean verifies, and every acknowledged write on both sides (on
// PostgreSQL only for writes acknowledged after the move to complete). A
// write whose COMMIT a restart cut answers OutcomeUnknownError (applied
// once or not at all): counted apart, as the demo does, never acknowledged.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const cutover = require('cutover');
const helpers = require('../../../bindings/node/test/helpers');

const APP = path.resolve(__dirname, '..');
const PHASE_MS = Number(process.env.CLUSTER_PHASE_MS || 2500);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function readAcks(dir) {
  const out = [];
  for (const f of fs.readdirSync(dir)) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (line) out.push(JSON.parse(line));
    }
  }
  return out;
}

async function present(db, ack) {
  switch (ack.kind) {
    case 'user':
      return (await db.getUser(ack.id)) !== null;
    case 'tweet':
      return (await db.getTweet(ack.id)) !== null;
    case 'funnel':
      return (await db.funnelCompletion(ack.id)) !== null;
    case 'referral': {
      // The referred user exists and a referral names them.
      const u = await db.getUser(ack.id);
      return u !== null && (await db.referralUsage(ack.ref)).some((r) => r.usedByUserId === ack.id);
    }
    case 'job':
      return (await db.getJob(ack.id)) !== null;
    case 'jobdone': {
      const j = await db.getJob(ack.id);
      return j !== null && j.job.status === 'completed';
    }
    default:
      throw new Error(`unknown ack ${ack.kind}`);
  }
}

function verifyClean(env) {
  const out = helpers.cli(['verify', '--json'], env);
  const report = JSON.parse(out.trim().split('\n').pop());
  return report;
}

test('the example service in a node cluster through the whole cutover', { timeout: 240000 }, async () => {
  const server = await helpers.throwawayServer();
  const dir = helpers.tempDir('cutover-node-app-');
  const ackDir = path.join(dir, 'acks');
  fs.mkdirSync(ackDir);
  const sqlitePath = path.join(dir, 'legacy.db');
  const env = { SQLITE_PATH: sqlitePath, DATABASE_URL: server.url };
  let app;
  try {
    helpers.cli(['generate', '--out', sqlitePath, '--users', '200', '--tweets', '2000', '--dirty', '0.01']);
    helpers.cli(['schema'], env);

    app = spawn(process.execPath, [path.join(APP, 'dist', 'main.js')], {
      env: { ...process.env, ...env, DB_TYPE: 'cutover', ACK_DIR: ackDir, WEB_PROCESSES: '2', METRICS_BASE_PORT: '19480', CUTOVER_LOG: 'error' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const ready = new Promise((resolve, reject) => {
      app.stdout.on('data', (d) => {
        out += d;
        if (out.includes('READY')) resolve();
      });
      app.on('exit', (c) => reject(new Error(`the app exited ${c} before it was ready`)));
    });
    const done = new Promise((resolve) => app.on('exit', resolve));
    await ready;

    const flips = [];
    const stage = (s) => {
      const t0 = Date.now();
      helpers.cli(['stage', 'set', s], env);
      flips.push({ stage: s, ms: Date.now() - t0 });
    };
    let restarts = 0;
    const restart = async () => {
      server.stop();
      await sleep(1500);
      server.start();
      restarts++;
    };

    await sleep(PHASE_MS); // off
    stage('dualwrite');
    await sleep(500);
    helpers.cli(['backfill'], env);
    await sleep(PHASE_MS);
    stage('shadow');
    await sleep(PHASE_MS / 2);
    await restart();
    await sleep(PHASE_MS);
    const v1 = verifyClean(env);
    assert.equal(v1.clean, true, `verify before live: ${JSON.stringify(v1).slice(0, 2000)}`);
    stage('live');
    await sleep(PHASE_MS / 2);
    await restart();
    await sleep(PHASE_MS);
    stage('shadow');
    await sleep(PHASE_MS);
    stage('live');
    await sleep(PHASE_MS);
    stage('rampdown');
    await sleep(PHASE_MS);
    const v2 = verifyClean(env);
    assert.equal(v2.clean, true, `verify in rampdown: ${JSON.stringify(v2).slice(0, 2000)}`);

    // One process's metrics, served on its own address.
    const metrics = await (await fetch('http://127.0.0.1:19480/metrics')).text();
    assert.match(metrics, /cutover_stage/);
    // Copies that met the outages waited in the outbox and were replayed.
    const replayed = [...metrics.matchAll(/^cutover_outbox_replayed_total\{[^}]*\} (\d+)/gm)]
      .reduce((n, m) => n + Number(m[1]), 0);

    const completeAt = Date.now();
    stage('complete');
    await sleep(PHASE_MS);
    app.kill('SIGTERM');
    await done;
    const report = JSON.parse(out.trim().split('\n').pop());

    const acks = readAcks(ackDir);
    const sqlite = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath });
    const pg = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: server.url });
    // Legacy rows the backfill rejected (dirty data, kept in the ledger and
    // restored by `cutover export`) are not in PostgreSQL by design: a write
    // the application made to one (the queue worker completing a legacy job
    // of a rejected user) is accounted for by the ledger.
    const rejected = new Set(
      helpers.psql(server.url, "SELECT table_name || ':' || row_key FROM cutover.rejects").split('\n')
    );
    const TABLE = { user: 'users', tweet: 'tweets', funnel: 'funnel_completion', referral: 'referral_tracking', job: 'analysis_queue', jobdone: 'analysis_queue' };
    const missing = [];
    let ledger = 0;
    for (const a of acks) {
      if (rejected.has(`${TABLE[a.kind]}:${a.id}`)) {
        ledger++;
        if (a.at < completeAt && !(await present(sqlite, a))) missing.push({ side: 'sqlite', ...a });
        continue;
      }
      if (!(await present(pg, a))) missing.push({ side: 'postgres', ...a });
      if (a.at < completeAt && !(await present(sqlite, a))) missing.push({ side: 'sqlite', ...a });
    }
    await sqlite.shutdown();
    await pg.shutdown();

    const summary = {
      processes: report.processes,
      calls: report.calls,
      failed: report.failed,
      outcomeUnknown: report.outcomeUnknown,
      flips: flips.length,
      flipMs: flips,
      restarts,
      replayedByOneProcess: replayed,
      writesChecked: acks.length,
      onRejectedLegacyRows: ledger,
      missing: missing.length,
      verifyBeforeLive: v1.clean,
      verifyInRampdown: v2.clean,
    };
    console.log(`cluster run: ${JSON.stringify(summary)}`);
    if (missing.length) {
      console.log(`missing: ${JSON.stringify(missing.slice(0, 20))}`);
      const keys = missing.slice(0, 20).map((m) => `'${m.id}'`).join(',');
      console.log(helpers.psql(server.url, `SELECT table_name, row_key, column_name, reason, detail FROM cutover.rejects WHERE row_key IN (${keys})`));
    }
    assert.equal(report.reported, report.processes, 'every process reported');
    assert.equal(report.failed, 0, `failed calls: ${JSON.stringify(report.reports.map((r) => r.errors))}`);
    assert.ok(acks.length > 100, `acknowledged writes: ${acks.length}`);
    assert.ok(acks.some((a) => a.kind === 'jobdone'), 'the queue worker completed jobs');
    assert.ok(replayed > 0, 'copies that met the outages were replayed from the outbox');
    assert.deepEqual(missing.slice(0, 20), [], `${missing.length} acknowledged writes missing`);
  } finally {
    if (app && app.exitCode === null) app.kill('SIGKILL');
    server.destroy();
  }
});
