// The analysis-queue worker: claims jobs, processes their chunks, saves
// the personality analysis and completes the job.
import type { CutoverAdapter } from 'cutover';
import { Acks } from './acks';
import { Stats } from './stats';

export async function runQueue(db: CutoverAdapter, acks: Acks, stats: Stats, stop: () => boolean): Promise<void> {
  while (!stop()) {
    let claimed: number | null = null;
    try {
      const job = await stats.call(() => db.claimNextJob());
      if (!job) {
        await new Promise((res) => setTimeout(res, 50));
        continue;
      }
      claimed = job.jobId;
      const full = await stats.call(() => db.getJob(job.jobId));
      for (const chunk of full?.chunks ?? []) {
        // Legacy jobs may hold chunks already done: only pending or failed ones start.
        if (chunk.status !== 'pending' && chunk.status !== 'failed') continue;
        await stats.call(() => db.startChunk(chunk.chunkId));
        await stats.call(() => db.completeChunk(chunk.chunkId, { tweets: chunk.tweetCount, score: Math.random() }));
      }
      await stats.call(() =>
        db.saveAnalysis({
          id: `pa_${job.jobId}`,
          userId: job.userId,
          traits: { openness: Math.random() },
          interests: ['rust', 'node'],
          communicationStyle: { tone: 'plain' },
        })
      );
      await stats.call(() => db.completeJob(job.jobId));
      acks.record('jobdone', job.jobId);
    } catch {
      // A job left half done is marked failed, not left in `processing`
      // (claimNextJob takes only pending jobs).
      if (claimed !== null) {
        const id = claimed;
        // Not counted: after an outcome-unknown COMMIT the job may be done already.
        await db.failJob(id, 'the worker met an error mid-job').catch(() => {});
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}
