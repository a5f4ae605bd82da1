'use strict';
// The cutover store for Node.js: the plan's `DatabaseAdapter` over the
// N-API addon (`cutover.node`, built from `src/` by `npm install`).
//
// Values cross the boundary exactly (see README "From Node"):
// - JSON columns are JSON text (strings) in results; in arguments a string
//   is taken as JSON text and any other value is `JSON.stringify`d.
// - Timestamps are `Date`s; the microseconds PostgreSQL and the legacy
//   file keep are on a non-enumerable `micros` property (0-999, the
//   microseconds within the millisecond). A `Date` given with `micros` set,
//   or an RFC 3339 string with six fractional digits, is stored to the
//   microsecond.

const path = require('node:path');

const native = loadNative();

function loadNative() {
  const file = process.env.CUTOVER_NODE_ADDON || path.join(__dirname, 'cutover.node');
  try {
    return require(file);
  } catch (e) {
    const err = new Error(
      `cutover: the native addon ${file} is not built or does not load (${e.message}); ` +
        'run `npm install` (or `npm run build`) in the cutover package'
    );
    err.code = 'ADDON_NOT_BUILT';
    throw err;
  }
}

// ---------------------------------------------------------------- errors

class CutoverError extends Error {
  constructor(e) {
    super(e.message);
    this.name = 'CutoverError';
    for (const [k, v] of Object.entries(e)) {
      if (k !== 'message') this[k] = v;
    }
  }
}

const ERROR_CLASSES = {};
function errorClass(name, code) {
  const C = class extends CutoverError {
    constructor(e) {
      super(e);
      this.name = name;
    }
  };
  Object.defineProperty(C, 'name', { value: name });
  ERROR_CLASSES[code] = C;
  return C;
}

const NotFoundError = errorClass('NotFoundError', 'NOT_FOUND');
const MissingParentError = errorClass('MissingParentError', 'MISSING_PARENT');
const OutcomeUnknownError = errorClass('OutcomeUnknownError', 'OUTCOME_UNKNOWN');
const DuplicateError = errorClass('DuplicateError', 'DUPLICATE');
const UnknownReferralCodeError = errorClass('UnknownReferralCodeError', 'UNKNOWN_REFERRAL_CODE');
const SelfReferralError = errorClass('SelfReferralError', 'SELF_REFERRAL');
const AlreadyReferredError = errorClass('AlreadyReferredError', 'ALREADY_REFERRED');
const InvalidStateError = errorClass('InvalidStateError', 'INVALID_STATE');
const InvalidArgumentError = errorClass('InvalidArgumentError', 'INVALID_ARGUMENT');
const InvalidValueError = errorClass('InvalidValueError', 'INVALID_VALUE');
const UnavailableError = errorClass('UnavailableError', 'UNAVAILABLE');
const BusyError = errorClass('BusyError', 'BUSY');
const ConfigError = errorClass('ConfigError', 'CONFIG');

function fail(e) {
  const C = ERROR_CLASSES[e.code] || CutoverError;
  return new C(e);
}

// ---------------------------------------------------------------- requests

// Every answer comes back through one channel, tagged with its request id.
// The channel does not hold the event loop open; a timer does while any
// request is pending, so a process with nothing in flight can exit.
const pending = new Map();
let nextId = 1;
let keepAlive = null;
const channel = new native.Channel(([id, text]) => {
  const resolve = pending.get(id);
  pending.delete(id);
  if (pending.size === 0 && keepAlive !== null) {
    clearInterval(keepAlive);
    keepAlive = null;
  }
  if (resolve) resolve(text);
});

function request(method, ...args) {
  const id = nextId++;
  if (nextId > 0xfffffff0) nextId = 1;
  // A call that is done at once (its first step ran here) answers here.
  const now = channel[method](id, ...args);
  if (now !== null && now !== undefined) return Promise.resolve(now);
  return new Promise((resolve) => {
    pending.set(id, resolve);
    if (keepAlive === null) keepAlive = setInterval(() => {}, 1 << 30);
  });
}

function unwrap(text) {
  const r = JSON.parse(text);
  if (r.err) throw fail(r.err);
  return r.ok;
}

// ---------------------------------------------------------------- wire form

const JSON_FIELDS = new Set([
  'profileData',
  'metadata',
  'traits',
  'interests',
  'communicationStyle',
  'completedCommands',
  'commandResponses',
  'completionData',
  'result',
]);
const TIMESTAMP_FIELDS = new Set([
  'lastScraped',
  'createdAt',
  'scrapedAt',
  'createdInDb',
  'analyzedAt',
  'lastUpdated',
  'completedAt',
  'usedAt',
  'startedAt',
]);

function snake(k) {
  return k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

function jsonText(v) {
  if (v === undefined || v === null) return null;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

// Both databases keep microseconds: finer digits are cut here, so the two
// sides store the same instant.
function microText(s) {
  return s.replace(/(\.\d{6})\d+/, '$1');
}

function timestampText(d) {
  if (typeof d === 'string') return microText(d);
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) {
    throw new InvalidArgumentError({
      code: 'INVALID_ARGUMENT',
      message: `invalid argument: ${String(d)} is not a Date or an RFC 3339 string`,
    });
  }
  const iso = d.toISOString();
  const micros = Number.isInteger(d.micros) && d.micros > 0 && d.micros < 1000 ? d.micros : 0;
  return iso.slice(0, -1) + String(micros).padStart(3, '0') + 'Z';
}

function toWire(v, key) {
  if (v === undefined) return null;
  if (key !== undefined && JSON_FIELDS.has(key)) return jsonText(v);
  if (v instanceof Date) return timestampText(v);
  if (key !== undefined && TIMESTAMP_FIELDS.has(key) && typeof v === 'string') return microText(v);
  if (Array.isArray(v)) return v.map((x) => toWire(x));
  if (v !== null && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) {
      if (x !== undefined) o[snake(k)] = toWire(x, k);
    }
    return o;
  }
  return v;
}

function date(pair) {
  const d = new Date(pair[0]);
  Object.defineProperty(d, 'micros', { value: pair[1], enumerable: false, writable: true });
  return d;
}

function fromWire(v) {
  if (Array.isArray(v)) return v.map(fromWire);
  if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) {
      const x = v[k];
      if (TIMESTAMP_FIELDS.has(k) && Array.isArray(x)) v[k] = date(x);
      else if (x !== null && typeof x === 'object') v[k] = fromWire(x);
    }
  }
  return v;
}

// ---------------------------------------------------------------- adapter

const STORE_OPS = [
  // users
  'upsertProfile',
  'getUser',
  'getUserByUsername',
  'usersScrapedBefore',
  'deleteUser',
  // tweets
  'saveTweets',
  'getTweet',
  'timeline',
  'countTweets',
  'searchTweets',
  // personality analysis
  'saveAnalysis',
  'latestAnalysis',
  // funnel
  'funnelProgress',
  'completeFunnelCommand',
  'markFunnelComplete',
  'funnelCompletion',
  // referrals
  'createReferralCode',
  'getReferralCode',
  'redeemReferral',
  'referralStats',
  'referralUsage',
  // analysis queue
  'enqueueJob',
  'claimNextJob',
  'getJob',
  'startChunk',
  'completeChunk',
  'failChunk',
  'completeJob',
  'failJob',
  'jobsByStatus',
  'userJobs',
];

// Positional arguments that are JSON values (given as JSON text or values).
const JSON_ARGS = {
  completeFunnelCommand: 2,
  markFunnelComplete: 1,
  completeChunk: 1,
};

class CutoverAdapter {
  constructor(options = {}) {
    this._options = options;
    this._handle = null;
    this._closed = false;
    this._opening = request('open', JSON.stringify(options)).then((text) => {
      this._handle = unwrap(text);
      return this;
    });
    // Reported on the first call (or by `ready()`), never as an unhandled rejection.
    this._opening.catch(() => {});
  }

  /** Resolves when both databases are open; rejects with the reason they are not. */
  ready() {
    return this._opening;
  }

  async _call(op, args) {
    if (this._handle === null) await this._opening;
    return fromWire(unwrap(await request('call', this._handle, op, JSON.stringify(args))));
  }

  /** `sqlite`, `postgres`, or for the dual store the side reads go to now. */
  backend() {
    return this._call('backend', []);
  }

  // The plan's own three methods, over the store's operations.

  /** Saves a scraped profile (the plan's `saveUserProfile`). */
  saveUserProfile(username, profile) {
    return this.upsertProfile({ ...profile, username });
  }

  /** Every tweet of a user, newest first (the plan's `getUserTweets`). */
  async getUserTweets(username, pageSize = 500) {
    const user = await this.getUserByUsername(username);
    if (!user) return [];
    const out = [];
    let cursor = null;
    for (;;) {
      const page = await this.timeline(user.id, pageSize, cursor);
      out.push(...page);
      if (page.length < pageSize) return out;
      const last = page[page.length - 1];
      cursor = { createdAt: last.createdAt, id: last.id };
    }
  }

  // Stage control (DB_TYPE=cutover).

  /** The stage this process runs now. */
  stage() {
    return this._call('stage', []);
  }

  /** Moves every process to `stage`; resolves with the flip's pause. */
  async setStage(stage, options = {}) {
    const r = await this._call('setStage', [stage, Boolean(options.force)]);
    return { stage: r.stage, pauseMs: r.pauseMs };
  }

  /** The whole migration at a glance, as `cutover status --json` shows it. */
  status() {
    return this._call('status', []);
  }

  /**
   * Waits for the copies in flight and stops the background tasks. Calls
   * after it fail. Exiting without it loses nothing (the next start
   * replays the outboxes), but the copies in flight land later.
   */
  async shutdown() {
    if (this._closed) return;
    this._closed = true;
    try {
      await this._opening;
    } catch {
      return;
    }
    unwrap(await request('close', this._handle));
  }
}

for (const op of STORE_OPS) {
  const jsonArg = JSON_ARGS[op];
  CutoverAdapter.prototype[op] = async function (...args) {
    const wire = args.map((a, i) => (i === jsonArg ? jsonText(a) : toWire(a)));
    if (jsonArg !== undefined && wire.length <= jsonArg) wire[jsonArg] = null;
    return this._call(op, wire);
  };
}

/**
 * The plan's factory: the adapter `DB_TYPE` names (`sqlite`, `postgres`,
 * `cutover`: the dual store), from the same settings as the CLI
 * (`SQLITE_PATH`, `DATABASE_URL` or `PG_*`, `.env.migration`); `options`
 * override them. Opening runs in the background: the first call (or
 * `await adapter.ready()`) reports a failure.
 */
function createDbAdapter(options = {}) {
  return new CutoverAdapter(options);
}

/** `createDbAdapter` that resolves once both databases are open. */
function openDbAdapter(options = {}) {
  return createDbAdapter(options).ready();
}

/** Serves Prometheus metrics on `addr` (`host:port`), once per process. */
async function startMetrics(addr = '127.0.0.1:9464') {
  unwrap(await request('startMetrics', addr));
}

module.exports = {
  createDbAdapter,
  openDbAdapter,
  startMetrics,
  CutoverAdapter,
  CutoverError,
  NotFoundError,
  MissingParentError,
  OutcomeUnknownError,
  DuplicateError,
  UnknownReferralCodeError,
  SelfReferralError,
  AlreadyReferredError,
  InvalidStateError,
  InvalidArgumentError,
  InvalidValueError,
  UnavailableError,
  BusyError,
  ConfigError,
  STAGES: ['off', 'dualwrite', 'shadow', 'live', 'rampdown', 'complete'],
};
