'use strict';
// Test helpers: real databases only. A PostgreSQL database of its own per
// test on DATABASE_URL's server, a throwaway server (initdb/pg_ctl from the
// local binaries) where a test restarts PostgreSQL, the `cutover` command.
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const CLI = process.env.CUTOVER_BIN || path.join(REPO, 'target', 'debug', 'cutover');

let counter = 0;

function withDatabase(url, db) {
  const u = new URL(url);
  u.pathname = '/' + db;
  return u.toString();
}

function psql(url, sql) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], { encoding: 'utf8' }).trim();
}

/** A new, empty database on DATABASE_URL's server; `drop()` removes it. */
function freshDatabase(base = BASE_URL) {
  const name = `cutover_node_${process.pid}_${Date.now() % 100000}_${counter++}`;
  psql(base, `CREATE DATABASE ${name}`);
  return {
    url: withDatabase(base, name),
    drop() {
      try {
        psql(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } catch {}
    },
  };
}

function tempDir(prefix = 'cutover-node-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Runs the `cutover` command; throws with its output when it fails. */
function cli(args, env = {}) {
  const r = spawnSync(CLI, args, {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    throw new Error(`cutover ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

function pgBin() {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = fs.readdirSync(root).sort((a, b) => Number(b) - Number(a));
  return path.join(root, versions[0], 'bin');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/**
 * A throwaway PostgreSQL server (as `src/pgserver.rs` starts one; as root
 * it runs as the postgres system user). `stop()`/`start()` make an outage.
 */
async function throwawayServer() {
  const dir = tempDir('cutover-node-pg-');
  const data = path.join(dir, 'data');
  const port = await freePort();
  const root = process.getuid && process.getuid() === 0;
  let uid;
  let gid;
  if (root) {
    uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    fs.chownSync(dir, uid, gid);
  }
  const run = (tool, args) => {
    const r = spawnSync(path.join(pgBin(), tool), args, { encoding: 'utf8', uid, gid });
    if (r.status !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
  };
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const server = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start() {
      run('pg_ctl', [
        '-D', data, '-l', path.join(dir, 'server.log'), '-w', '-t', '60',
        '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
        'start',
      ]);
    },
    stop() {
      run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
    },
    destroy() {
      try {
        this.stop();
      } catch {}
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  server.start();
  return server;
}

/** A legacy SQLite file with the plan's schema (created by the `sqlite` adapter). */
function legacyPath(dir) {
  return path.join(dir, 'legacy.db');
}

module.exports = { REPO, BASE_URL, CLI, psql, freshDatabase, tempDir, cli, throwawayServer, legacyPath };
