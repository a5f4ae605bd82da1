// A web/scraper process: scrapes profiles and tweet batches, serves
// timelines and searches, walks users through the funnel, redeems
// referral codes and enqueues analysis jobs.
import type { CutoverAdapter, NewTweet } from 'cutover';
import { Acks } from './acks';
import { Stats } from './stats';

const COMMANDS = ['start', 'profile', 'analyze', 'share', 'done'];

export async function runWeb(db: CutoverAdapter, acks: Acks, stats: Stats, stop: () => boolean): Promise<void> {
  const tag = `${process.pid}`;
  const users: string[] = [];
  const codes: string[] = [];
  let n = 0;
  let tweetN = 0;

  const scrape = async (): Promise<void> => {
    const reuse = users.length > 0 && Math.random() < 0.3;
    const id = reuse ? users[Math.floor(Math.random() * users.length)] : `u${tag}_${n++}`;
    await stats.call(() =>
      db.saveUserProfile(`name_${id}`, {
        id,
        profileData: { followers: Math.floor(Math.random() * 1e6), bio: `user ${id}` },
        profilePictureUrl: `https://pics.example/${id}.png`,
        scrapedAt: new Date(),
      })
    );
    acks.record('user', id);
    if (!reuse) users.push(id);
    const batch: NewTweet[] = [];
    for (let i = 0; i < 5; i++) {
      batch.push({
        id: `t${tag}_${tweetN++}`,
        text: `tweet ${tweetN} about ${['rust', 'node', 'postgres', 'sqlite'][tweetN % 4]}`,
        createdAt: new Date(Date.now() - Math.floor(Math.random() * 1e9)),
        isReply: Math.random() < 0.2,
        metadata: { likes: Math.floor(Math.random() * 1000) },
      });
    }
    await stats.call(() => db.saveTweets(id, batch));
    for (const t of batch) acks.record('tweet', t.id);
    if (Math.random() < 0.3) {
      const job = await stats.call(() => db.enqueueJob({ userId: id, priority: Math.floor(Math.random() * 5), chunkTweetCounts: [3, 2] }));
      acks.record('job', job.job.jobId);
    }
  };

  const funnel = async (uid: string): Promise<void> => {
    const p = await stats.call(() => db.funnelProgress(uid));
    const step = p?.currentCommandIndex ?? 0;
    if (step < COMMANDS.length) {
      await stats.call(() => db.completeFunnelCommand(uid, COMMANDS[step], { step, at: Date.now() }));
    } else {
      await stats.call(() => db.markFunnelComplete(uid, { steps: COMMANDS.length }));
      acks.record('funnel', uid);
    }
  };

  const referral = async (owner: string): Promise<void> => {
    let code = codes.find((c) => c.startsWith(`c_${owner}_`));
    if (!code) {
      code = `c_${owner}_${n++}`;
      await stats.call(() => db.createReferralCode(owner, code!));
      codes.push(code);
    }
    const fresh = `r${tag}_${n++}`;
    await stats.call(() => db.saveUserProfile(`name_${fresh}`, { id: fresh, scrapedAt: new Date() }));
    acks.record('user', fresh);
    users.push(fresh);
    await stats.call(() => db.redeemReferral(code!, fresh));
    acks.record('referral', fresh, code);
  };

  const loop = async (): Promise<void> => {
    while (!stop()) {
      const r = Math.random();
      const uid = users.length ? users[Math.floor(Math.random() * users.length)] : null;
      try {
        if (!uid || r < 0.3) await scrape();
        else if (r < 0.5) await stats.call(() => db.timeline(uid, 20));
        else if (r < 0.6) await stats.call(() => db.searchTweets(['rust', 'node', 'postgres'][Math.floor(r * 100) % 3], 10));
        else if (r < 0.65) await stats.call(() => db.getUserTweets(`name_${uid}`));
        else if (r < 0.8) await funnel(uid);
        else if (r < 0.9) await referral(uid);
        else await stats.call(() => db.getUser(uid));
      } catch {
        // Counted by stats.call; the loop goes on.
      }
      await new Promise((res) => setTimeout(res, 5));
    }
  };
  await Promise.all([loop(), loop(), loop(), loop()]);
}
