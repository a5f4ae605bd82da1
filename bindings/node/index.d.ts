// Types of the cutover store for Node.js (the plan's `DatabaseAdapter`).

/**
 * JSON as stored: JSON text, exactly (a JavaScript number cannot hold every
 * JSON number). `JSON.parse` it when rounding large numbers is acceptable.
 */
export type JsonText = string;

/** A JSON argument: JSON text as a string, or any other value (`JSON.stringify`d). */
export type JsonInput = JsonText | number | boolean | null | object;

/**
 * A timestamp: a `Date` (milliseconds) whose non-enumerable `micros` holds
 * the microseconds within the millisecond (0-999) the databases keep.
 */
export type Timestamp = Date & { micros?: number };

/**
 * A timestamp argument: a `Date` (its `micros` used when set) or RFC 3339
 * text (digits past the microsecond are cut).
 */
export type TimestampInput = Date | string;

export type DbType = 'sqlite' | 'postgres' | 'cutover';
export type Stage = 'off' | 'dualwrite' | 'shadow' | 'live' | 'rampdown' | 'complete';
export type JobStatus = 'pending' | 'processing' | 'completed' | 'failed';

export interface User {
  id: string;
  username: string;
  profileData: JsonText | null;
  profilePictureUrl: string | null;
  lastScraped: Timestamp | null;
  createdAt: Timestamp | null;
}

export interface ScrapedProfile {
  id: string;
  username: string;
  profileData?: JsonInput;
  profilePictureUrl?: string | null;
  scrapedAt: TimestampInput;
}

/** The plan's `TwitterProfile`: a scraped profile whose username is given apart. */
export type TwitterProfile = Omit<ScrapedProfile, 'username'> & { username?: string };

export interface Tweet {
  id: string;
  userId: string;
  text: string;
  createdAt: Timestamp;
  url: string | null;
  isReply: boolean | null;
  metadata: JsonText | null;
  createdInDb: Timestamp | null;
}

export interface NewTweet {
  id: string;
  text: string;
  createdAt: TimestampInput;
  url?: string | null;
  isReply?: boolean | null;
  metadata?: JsonInput;
}

export interface TimelineCursor {
  createdAt: TimestampInput;
  id: string;
}

export interface PersonalityAnalysis {
  id: string;
  userId: string;
  traits: JsonText | null;
  interests: JsonText | null;
  communicationStyle: JsonText | null;
  analyzedAt: Timestamp | null;
}

export interface NewPersonalityAnalysis {
  id: string;
  userId: string;
  traits: JsonInput;
  interests: JsonInput;
  communicationStyle: JsonInput;
  analyzedAt?: TimestampInput | null;
}

export interface FunnelProgress {
  userId: string;
  currentCommandIndex: number | null;
  completedCommands: JsonText | null;
  commandResponses: JsonText | null;
  lastUpdated: Timestamp | null;
}

export interface FunnelCompletion {
  userId: string;
  completedAt: Timestamp | null;
  completionData: JsonText | null;
}

export interface ReferralCode {
  code: string;
  ownerUserId: string;
  usageCount: number | null;
  createdAt: Timestamp | null;
}

export interface Referral {
  id: number;
  referralCode: string;
  referrerUserId: string;
  referredUserId: string;
  usedAt: Timestamp | null;
}

export interface ReferralUsage {
  id: number;
  referralCode: string;
  usedByUserId: string;
  usedAt: Timestamp | null;
}

export interface ReferralStats {
  ownerUserId: string;
  codes: ReferralCode[];
  totalUses: number;
  referredUserIds: string[];
}

export interface Job {
  jobId: number;
  userId: string;
  status: JobStatus;
  priority: number | null;
  totalChunks: number;
  processedChunks: number | null;
  createdAt: Timestamp | null;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
  error: string | null;
}

export interface Chunk {
  chunkId: number;
  jobId: number | null;
  chunkIndex: number;
  tweetCount: number;
  status: JobStatus;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
  result: JsonText | null;
  error: string | null;
}

export interface NewJob {
  userId: string;
  priority: number;
  chunkTweetCounts: number[];
}

export interface JobWithChunks {
  job: Job;
  chunks: Chunk[];
}

/** `cutover status --json`, keys in camelCase, plus `healthy`. */
export interface Status {
  stage: Stage;
  epoch: number;
  fallback: boolean;
  healthy: boolean;
  attention: string[];
  blockers: string[];
  nextStage: Stage | null;
  [key: string]: unknown;
}

/** The plan's `DatabaseAdapter`: every operation of the store. */
export interface DatabaseAdapter {
  // The plan's names.
  saveUserProfile(username: string, profile: TwitterProfile): Promise<User>;
  saveTweets(userId: string, tweets: NewTweet[]): Promise<number>;
  getUserTweets(username: string, pageSize?: number): Promise<Tweet[]>;

  // users
  upsertProfile(profile: ScrapedProfile): Promise<User>;
  getUser(id: string): Promise<User | null>;
  getUserByUsername(username: string): Promise<User | null>;
  usersScrapedBefore(before: TimestampInput, limit: number): Promise<User[]>;
  deleteUser(id: string): Promise<boolean>;

  // tweets
  getTweet(id: string): Promise<Tweet | null>;
  timeline(userId: string, limit: number, cursor?: TimelineCursor | null): Promise<Tweet[]>;
  countTweets(userId: string): Promise<number>;
  searchTweets(query: string, limit: number): Promise<Tweet[]>;

  // personality analysis
  saveAnalysis(analysis: NewPersonalityAnalysis): Promise<PersonalityAnalysis>;
  latestAnalysis(userId: string): Promise<PersonalityAnalysis | null>;

  // funnel
  funnelProgress(userId: string): Promise<FunnelProgress | null>;
  completeFunnelCommand(userId: string, command: string, response: JsonInput): Promise<FunnelProgress>;
  markFunnelComplete(userId: string, data: JsonInput): Promise<FunnelCompletion>;
  funnelCompletion(userId: string): Promise<FunnelCompletion | null>;

  // referrals
  createReferralCode(ownerUserId: string, code: string): Promise<ReferralCode>;
  getReferralCode(code: string): Promise<ReferralCode | null>;
  redeemReferral(code: string, referredUserId: string): Promise<Referral>;
  referralStats(ownerUserId: string): Promise<ReferralStats>;
  referralUsage(code: string): Promise<ReferralUsage[]>;

  // analysis queue
  enqueueJob(job: NewJob): Promise<JobWithChunks>;
  claimNextJob(): Promise<Job | null>;
  getJob(jobId: number): Promise<JobWithChunks | null>;
  startChunk(chunkId: number): Promise<Chunk>;
  completeChunk(chunkId: number, result: JsonInput): Promise<Chunk>;
  failChunk(chunkId: number, error: string): Promise<Chunk>;
  completeJob(jobId: number): Promise<Job>;
  failJob(jobId: number, error: string): Promise<Job>;
  jobsByStatus(status: JobStatus, limit: number): Promise<Job[]>;
  userJobs(userId: string): Promise<Job[]>;
}

export interface AdapterOptions {
  /** Overrides `DB_TYPE` (default `sqlite`, as in the plan). */
  dbType?: DbType;
  /** Overrides `SQLITE_PATH`. */
  sqlitePath?: string;
  /** Overrides `DATABASE_URL` / `PG_*`. */
  databaseUrl?: string;
  /** Another file than `./.env.migration` (read when present). */
  envFile?: string;
  /** This process's name in stage history and `cutover status`. */
  actor?: string;
  /** Apply PostgreSQL's schema at start (default: refuse until `cutover schema` ran). */
  migrate?: boolean;
  /** PostgreSQL pool size of this process. */
  poolSize?: number;
  /** Log filter for the addon's stderr logs (default `warn`; `CUTOVER_LOG` wins). */
  log?: string;
}

/** The adapter: every `DatabaseAdapter` method (merged in below), and the control. */
export declare class CutoverAdapter {
  /** Resolves when the databases are open; rejects with the reason they are not. */
  ready(): Promise<this>;
  /** `sqlite` or `postgres`: where reads go now. */
  backend(): Promise<'sqlite' | 'postgres'>;
  /** The stage this process runs (DB_TYPE=cutover). */
  stage(): Promise<Stage>;
  /** Moves every process to `stage` (DB_TYPE=cutover). */
  setStage(stage: Stage, options?: { force?: boolean }): Promise<{ stage: Stage; pauseMs: number }>;
  /** The whole migration at a glance (DB_TYPE=cutover). */
  status(): Promise<Status>;
  /** Waits for the copies in flight, then stops; call once on exit. */
  shutdown(): Promise<void>;
}
// Declaration merging: the class has every method of the interface.
export interface CutoverAdapter extends DatabaseAdapter {}

/** The plan's factory (opens in the background; see `ready()`). */
export declare function createDbAdapter(options?: AdapterOptions): CutoverAdapter;
/** The factory, resolved once the databases are open. */
export declare function openDbAdapter(options?: AdapterOptions): Promise<CutoverAdapter>;
/** Serves Prometheus metrics on `host:port` (default 127.0.0.1:9464), once per process. */
export declare function startMetrics(addr?: string): Promise<void>;

export declare const STAGES: Stage[];

export type ErrorCode =
  | 'NOT_FOUND'
  | 'MISSING_PARENT'
  | 'OUTCOME_UNKNOWN'
  | 'DUPLICATE'
  | 'UNKNOWN_REFERRAL_CODE'
  | 'SELF_REFERRAL'
  | 'ALREADY_REFERRED'
  | 'INVALID_STATE'
  | 'INVALID_ARGUMENT'
  | 'INVALID_VALUE'
  | 'UNAVAILABLE'
  | 'BUSY'
  | 'CONFIG'
  | 'IO'
  | 'DATABASE';

/** Every error the adapter throws; `code` says which, the other fields name what it concerns. */
export declare class CutoverError extends Error {
  code: ErrorCode;
  table?: string;
  key?: string;
  column?: string;
  backend?: 'sqlite' | 'postgres';
  [field: string]: unknown;
}
export declare class NotFoundError extends CutoverError {}
export declare class MissingParentError extends CutoverError {
  /** Set when the store knows which parent is missing. */
  parentTable?: string;
  parentKey?: string;
}
/** The connection was cut during COMMIT: the write may or may not have happened. */
export declare class OutcomeUnknownError extends CutoverError {}
export declare class DuplicateError extends CutoverError {}
export declare class UnknownReferralCodeError extends CutoverError {
  referralCode: string;
}
export declare class SelfReferralError extends CutoverError {
  referralCode: string;
  userId: string;
}
export declare class AlreadyReferredError extends CutoverError {
  userId: string;
}
export declare class InvalidStateError extends CutoverError {
  status: string;
  action: string;
}
export declare class InvalidArgumentError extends CutoverError {}
export declare class InvalidValueError extends CutoverError {}
/** The database is down or did not answer in time (the dual store falls back first). */
export declare class UnavailableError extends CutoverError {}
export declare class BusyError extends CutoverError {}
export declare class ConfigError extends CutoverError {}
