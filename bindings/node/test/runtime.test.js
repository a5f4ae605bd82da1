'use strict';
// The runtime under Node's process model: worker threads that load the
// addon and exit, and a process killed without shutdown() (the next start
// replays what it had not copied).
const test = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const { spawn } = require('node:child_process');
const path = require('node:path');
const cutover = require('..');
const { freshDatabase, tempDir, legacyPath } = require('./helpers');

const PKG = path.resolve(__dirname, '..');

test('worker threads load the addon, use it and exit; the main thread keeps working', async () => {
  const dir = tempDir();
  const main = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
  await main.upsertProfile({ id: 'main', username: 'main', scrapedAt: new Date() });
  for (let round = 0; round < 3; round++) {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const cutover = require(workerData.pkg);
      (async () => {
        const a = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: workerData.file });
        await a.upsertProfile({ id: 'w' + workerData.round, username: 'w' + workerData.round, scrapedAt: new Date() });
        const u = await a.getUser('main');
        if (workerData.round % 2 === 0) await a.shutdown();
        parentPort.postMessage(u.username);
      })().catch((e) => { parentPort.postMessage('error: ' + e.message); });
    `;
    const w = new Worker(code, { eval: true, workerData: { pkg: PKG, file: legacyPath(dir), round } });
    // Both listeners first: a worker's last message and its exit can be emitted in one turn.
    const exited = new Promise((resolve) => w.once('exit', resolve));
    const msg = await new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    assert.equal(msg, 'main');
    const exitCode = await exited;
    assert.equal(exitCode, 0);
    // After the worker's environment is gone, the main thread's calls still run.
    const u = await main.getUser(`w${round}`);
    assert.equal(u.username, `w${round}`);
  }
  await main.shutdown();
});

test('a process killed without shutdown() loses no acknowledged write', async () => {
  const dir = tempDir();
  const db = freshDatabase();
  try {
    const opts = { dbType: 'cutover', sqlitePath: legacyPath(dir), databaseUrl: db.url, migrate: true };
    const setup = await cutover.openDbAdapter(opts);
    await setup.setStage('dualwrite', { force: true });
    await setup.shutdown();

    const child = spawn(
      process.execPath,
      [
        '-e',
        `
        const cutover = require(${JSON.stringify(PKG)});
        (async () => {
          const a = await cutover.openDbAdapter(${JSON.stringify({ ...opts, migrate: false })});
          for (let i = 0; ; i++) {
            await Promise.all([0, 1, 2, 3].map(async (k) => {
              const id = 'k' + (i * 4 + k);
              await a.upsertProfile({ id, username: id, scrapedAt: new Date() });
              process.stdout.write(id + '\\n');
            }));
          }
        })();
        `,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] }
    );
    const acked = [];
    let buf = '';
    await new Promise((resolve) => {
      child.stdout.on('data', (d) => {
        buf += d;
        const lines = buf.split('\n');
        buf = lines.pop();
        acked.push(...lines);
        if (acked.length >= 300 && !child.killed) {
          child.kill('SIGKILL');
        }
      });
      child.on('exit', resolve);
    });
    assert.ok(acked.length >= 300, `acknowledged ${acked.length}`);

    // The next start replays the outbox.
    const next = await cutover.openDbAdapter({ ...opts, migrate: false });
    const pg = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: db.url });
    const sqlite = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
    const deadline = Date.now() + 30000;
    let missing = acked;
    while (missing.length > 0 && Date.now() < deadline) {
      const found = await Promise.all(missing.map((id) => pg.getUser(id)));
      missing = missing.filter((_, i) => found[i] === null);
      if (missing.length > 0) await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(missing, [], 'every acknowledged write reached PostgreSQL after the restart');
    for (const id of acked) assert.ok(await sqlite.getUser(id), `SQLite holds ${id}`);
    await next.shutdown();
    await pg.shutdown();
    await sqlite.shutdown();
  } finally {
    db.drop();
  }
});

test('a process that loads the addon only in worker threads exits cleanly after they end', async () => {
  const dir = tempDir();
  const script = `
    const { Worker } = require('node:worker_threads');
    const code = \`
      const { parentPort, workerData } = require('node:worker_threads');
      const cutover = require(workerData.pkg);
      (async () => {
        const a = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: workerData.file });
        await a.upsertProfile({ id: 'w' + workerData.i, username: 'w' + workerData.i, scrapedAt: new Date() });
        parentPort.postMessage('ok');
      })();
    \`;
    (async () => {
      for (let i = 0; i < 4; i++) {
        const w = new Worker(code, { eval: true, workerData: { pkg: ${JSON.stringify(PKG)}, file: ${JSON.stringify(legacyPath(dir))}, i } });
        await new Promise((resolve) => w.once('exit', resolve));
      }
      // Nothing left to do: the process must exit on its own, with 0,
      // while the addon's threads may still be winding down.
    })();
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'inherit', 'inherit'] });
  const hung = setTimeout(() => child.kill('SIGKILL'), 30000);
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(hung);
  assert.equal(signal, null, 'no crash, and it exited on its own');
  assert.equal(code, 0);
  const check = await cutover.openDbAdapter({ dbType: 'sqlite', sqlitePath: legacyPath(dir) });
  for (let i = 0; i < 4; i++) assert.ok(await check.getUser(`w${i}`), `worker ${i} wrote`);
  await check.shutdown();
});
