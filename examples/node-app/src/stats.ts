// Calls made and failed by one process, with the first failures kept.
export interface Report {
  pid: number;
  role: string;
  calls: number;
  failed: number;
  errors: string[];
}

export class Stats {
  calls = 0;
  failed = 0;
  errors: string[] = [];

  async call<T>(f: () => Promise<T>): Promise<T> {
    this.calls++;
    try {
      return await f();
    } catch (e) {
      this.failed++;
      const err = e as { code?: string; message?: string };
      if (this.errors.length < 10) this.errors.push(`${err.code ?? 'ERROR'}: ${err.message}`);
      throw e;
    }
  }

  report(role: string): Report {
    return { pid: process.pid, role, calls: this.calls, failed: this.failed, errors: this.errors };
  }
}
