// Calls made and failed by one process, with the first failures kept. A
// write whose COMMIT an outage cut (OutcomeUnknownError: applied once or
// not at all, the store cannot tell) is counted apart, as the demo does;
// it is never acknowledged.
import { OutcomeUnknownError } from 'cutover';

export interface Report {
  pid: number;
  role: string;
  calls: number;
  failed: number;
  outcomeUnknown: number;
  errors: string[];
}

export class Stats {
  calls = 0;
  failed = 0;
  outcomeUnknown = 0;
  errors: string[] = [];

  async call<T>(f: () => Promise<T>): Promise<T> {
    this.calls++;
    try {
      return await f();
    } catch (e) {
      if (e instanceof OutcomeUnknownError) this.outcomeUnknown++;
      else this.failed++;
      const err = e as { code?: string; message?: string };
      if (this.errors.length < 10) this.errors.push(`${err.code ?? 'ERROR'}: ${err.message}`);
      throw e;
    }
  }

  report(role: string): Report {
    return {
      pid: process.pid,
      role,
      calls: this.calls,
      failed: this.failed,
      outcomeUnknown: this.outcomeUnknown,
      errors: this.errors,
    };
  }
}
