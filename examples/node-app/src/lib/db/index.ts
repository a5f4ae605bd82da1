// src/lib/db/index.ts — the plan's factory, unchanged in shape: DB_TYPE
// picks the adapter (`sqlite`, `postgres`, or `cutover` for the dual store
// during the move); SQLITE_PATH, DATABASE_URL or PG_*, and .env.migration
// are read as the `cutover` command reads them.
import { createDbAdapter as createCutoverAdapter, CutoverAdapter } from 'cutover';

export type { DatabaseAdapter } from 'cutover';

export function createDbAdapter(): CutoverAdapter {
  return createCutoverAdapter({ actor: `node-app ${process.env.ROLE ?? 'app'} pid ${process.pid}` });
}
