// The service under node:cluster: WEB_PROCESSES web/scraper processes and
// one analysis-queue worker, each with its own dual store (DB_TYPE=cutover)
// and metrics address (METRICS_BASE_PORT + worker number, when set). The
// operator moves the stage with the `cutover` command meanwhile; every
// process follows. SIGTERM stops the workers (each calls shutdown()), and
// the primary prints one JSON report line.
import cluster from 'node:cluster';
import { startMetrics } from 'cutover';
import { createDbAdapter } from './lib/db';
import { Acks } from './acks';
import { Stats, Report } from './stats';
import { runWeb } from './web';
import { runQueue } from './queue';

const WEB = Number(process.env.WEB_PROCESSES ?? 2);

async function worker(): Promise<void> {
  const role = process.env.ROLE ?? 'web';
  // Listening first: a stop sent while the databases open is not lost.
  let stopping = false;
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'stop') stopping = true;
  });
  // Ctrl-C reaches every process of the group: stop as on 'stop'.
  process.on('SIGINT', () => {
    stopping = true;
  });
  const db = createDbAdapter();
  await db.ready();
  const base = process.env.METRICS_BASE_PORT;
  if (base) await startMetrics(`127.0.0.1:${Number(base) + Number(process.env.WORKER_NO ?? 0)}`);
  const acks = new Acks(process.env.ACK_DIR);
  const stats = new Stats();
  process.send!({ type: 'ready' });
  if (role === 'queue') await runQueue(db, acks, stats, () => stopping);
  else await runWeb(db, acks, stats, () => stopping);
  await db.shutdown();
  acks.close();
  process.send!({ type: 'report', report: stats.report(role) });
  process.disconnect();
}

async function primary(): Promise<void> {
  const reports: Report[] = [];
  const workers: ReturnType<typeof cluster.fork>[] = [];
  for (let i = 0; i <= WEB; i++) {
    workers.push(cluster.fork({ ROLE: i === WEB ? 'queue' : 'web', WORKER_NO: String(i) }));
  }
  let ready = 0;
  const exited = workers.map(
    (w) =>
      new Promise<void>((resolve) => {
        w.on('message', (m: { type: string; report?: Report }) => {
          if (m.type === 'ready' && ++ready === workers.length) console.log('READY');
          if (m.type === 'report' && m.report) reports.push(m.report);
        });
        w.on('exit', () => resolve());
      })
  );
  const stop = () => workers.forEach((w) => w.isConnected() && w.send({ type: 'stop' }));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await Promise.all(exited);
  const calls = reports.reduce((a, r) => a + r.calls, 0);
  const failed = reports.reduce((a, r) => a + r.failed, 0);
  const outcomeUnknown = reports.reduce((a, r) => a + r.outcomeUnknown, 0);
  console.log(JSON.stringify({ processes: workers.length, reported: reports.length, calls, failed, outcomeUnknown, reports }));
}

if (cluster.isPrimary) {
  primary().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  worker().catch((e) => {
    console.error(`worker ${process.pid}:`, e);
    process.exit(1);
  });
}
