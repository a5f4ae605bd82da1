'use strict';
// The addon against what the application uses today: the same write (a
// profile upsert in a transaction, as the plan's PostgresAdapter does) and
// the same read (a user by id) through the addon in stage `complete`,
// through the addon's plain PostgreSQL store, and through node-postgres
// with a Pool, in one run and interleaved; and the same calls timed inside
// Rust (the store without the JavaScript boundary).
//
// Both clients use the same transport: plain TCP by default (what `pg`
// does unless told otherwise), TLS for both with BENCH_TLS=1 (the addon,
// like libpq, prefers TLS when the server offers it: its default would
// otherwise be compared encrypted against `pg` in the clear).
//
//   cd bindings/node && npm install && node bench/pg.bench.js
//   BENCH_N=3000 BENCH_ROUNDS=5 BENCH_BLOCK=50 BENCH_TLS=1 DATABASE_URL=postgres://… node bench/pg.bench.js
const { Pool } = require('pg');
const cutover = require('..');
const { freshDatabase, tempDir, legacyPath } = require('../test/helpers');

const N = Number(process.env.BENCH_N || 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3);
const TLS = process.env.BENCH_TLS === '1';
const BLOCK = Number(process.env.BENCH_BLOCK || 50);

// The database's URL with the transport both clients use.
function transport(url) {
  const u = new URL(url);
  u.searchParams.set('sslmode', TLS ? 'require' : 'disable');
  return u.toString();
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

// CPU time of the whole process (every thread), µs, per client and op.
const cpu = {};

async function timed(n, f, key) {
  const out = new Array(n);
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await f(i);
    out[i] = Number(process.hrtime.bigint() - t) / 1000;
  }
  if (key) {
    const c = process.cpuUsage(c0);
    cpu[key] = (cpu[key] || 0) + c.user + c.system;
  }
  return out;
}

const UPSERT = `INSERT INTO users (id, username, profile_data, profile_picture_url, last_scraped, created_at)
  VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, profile_data = EXCLUDED.profile_data,
    profile_picture_url = EXCLUDED.profile_picture_url, last_scraped = EXCLUDED.last_scraped
  RETURNING id, username, profile_data, profile_picture_url, last_scraped, created_at`;

async function main() {
  const dir = tempDir();
  const db = freshDatabase();
  const url = transport(db.url);
  try {
    const dual = await cutover.openDbAdapter({
      dbType: 'cutover', sqlitePath: legacyPath(dir), databaseUrl: url, migrate: true, log: 'error',
    });
    await dual.setStage('complete', { force: true });
    const plain = await cutover.openDbAdapter({ dbType: 'postgres', databaseUrl: url });
    const pool = new Pool({
      connectionString: db.url,
      ssl: TLS ? { rejectUnauthorized: false } : false,
      max: 10,
    });
    await dual.upsertProfile({ id: 'r', username: 'reader', profileData: { a: 1 }, scrapedAt: new Date() });

    const clients = {
      'addon (cutover, complete)': {
        write: (i) => dual.upsertProfile({ id: 'w1', username: 'writer1', profileData: { i }, scrapedAt: new Date() }),
        read: () => dual.getUser('r'),
      },
      'addon (postgres store)': {
        write: (i) => plain.upsertProfile({ id: 'w2', username: 'writer2', profileData: { i }, scrapedAt: new Date() }),
        read: () => plain.getUser('r'),
      },
      'pg Pool': {
        write: async (i) => {
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const now = new Date();
            await c.query(UPSERT, ['w3', 'writer3', JSON.stringify({ i }), null, now, now]);
            await c.query('COMMIT');
          } catch (e) {
            await c.query('ROLLBACK');
            throw e;
          } finally {
            c.release();
          }
        },
        read: () => pool.query('SELECT id, username, profile_data, profile_picture_url, last_scraped, created_at FROM users WHERE id = $1', ['r']),
      },
    };
    const samples = {};
    const rust = { write: [], read: [] };
    // Warm-up, then rounds in which the clients take turns every BLOCK
    // calls, so that each sees the same machine (a shared VM drifts), and
    // go first in turn (the first after another client's calls is slower).
    for (const c of Object.values(clients)) {
      await timed(200, c.write);
      await timed(200, c.read);
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const op of ['write', 'read']) {
        for (let done = 0, turn = 0; done < N; done += BLOCK, turn++) {
          const order = Object.entries(clients);
          for (const [name, c] of order.slice(turn % order.length).concat(order.slice(0, turn % order.length))) {
            const key = `${name}|${op}`;
            (samples[key] = samples[key] || []).push(...(await timed(Math.min(BLOCK, N - done), c[op], key)));
          }
        }
      }
      rust.write.push(...(await dual._call('_benchStore', ['write', N, 'w4'])));
      rust.read.push(...(await dual._call('_benchStore', ['read', N, 'r'])));
    }
    const rows = [];
    for (const [key, xs] of Object.entries(samples)) {
      const [name, op] = key.split('|');
      rows.push({ client: name, op, p50_us: pct(xs, 50), p99_us: pct(xs, 99), cpu_us_per_call: cpu[key] / xs.length, calls: xs.length });
    }
    for (const op of ['write', 'read']) {
      rows.push({ client: 'Rust store (inside the addon, no JS)', op, p50_us: pct(rust[op], 50), p99_us: pct(rust[op], 99), calls: rust[op].length });
    }
    const med = (client, op) => rows.find((r) => r.client === client && r.op === op).p50_us;
    const ratios = {};
    for (const op of ['write', 'read']) {
      ratios[op] = {
        cutover_vs_pg: med('addon (cutover, complete)', op) / med('pg Pool', op),
        postgres_store_vs_pg: med('addon (postgres store)', op) / med('pg Pool', op),
        js_boundary_us: med('addon (cutover, complete)', op) - med('Rust store (inside the addon, no JS)', op),
      };
    }
    console.log(`node ${process.version}, ${N} calls x ${ROUNDS} rounds per client and op, sequential, ${TLS ? 'TLS' : 'plain TCP'}`);
    console.table(
      rows.map((r) => ({
        ...r,
        p50_us: Math.round(r.p50_us),
        p99_us: Math.round(r.p99_us),
        cpu_us_per_call: r.cpu_us_per_call === undefined ? '' : Math.round(r.cpu_us_per_call),
      }))
    );
    console.log(JSON.stringify({ tls: TLS, rows, ratios }));
    await dual.shutdown();
    await plain.shutdown();
    await pool.end();
  } finally {
    db.drop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
