// Every acknowledged write, one JSON line each, so a test can check each is
// on both sides afterwards.
import * as fs from 'node:fs';
import * as path from 'node:path';

export type AckKind = 'user' | 'tweet' | 'funnel' | 'referral' | 'job' | 'jobdone';

export class Acks {
  private fd: number | null;

  constructor(dir: string | undefined) {
    this.fd = dir ? fs.openSync(path.join(dir, `${process.pid}.jsonl`), 'a') : null;
  }

  record(kind: AckKind, id: string | number, ref?: string): void {
    if (this.fd !== null) fs.writeSync(this.fd, JSON.stringify({ kind, id, ref, at: Date.now() }) + '\n');
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
