/**
 * Group commit: calls that arrive while a transaction of earlier ones is running wait and then go together, in one
 * transaction (at most `max` at a time), each still answered on its own. One transaction at a time per store
 * handle: on PostgreSQL every accepted update appends to the audit chain under the one audit-head row lock, and a
 * thousand transactions each taking it in turn held the pool's connections while they queued (164 s of summed lock
 * wait in a 1,000-site round, `setu bench live --store postgres`); on SQLite each was its own WAL commit.
 */
export class GroupCommit<T> {
  private queue: { item: T; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  /** `run` answers each item's error (undefined: committed) and never throws. */
  constructor(
    private readonly run: (items: T[]) => Promise<(unknown | undefined)[]>,
    private readonly max: number,
  ) {}

  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      // The calls of this turn of the event loop go with the first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.max);
        let errors: (unknown | undefined)[];
        try {
          errors = await this.run(batch.map((b) => b.item));
        } catch (e) {
          errors = batch.map(() => e);
        }
        batch.forEach((b, i) => (errors[i] === undefined ? b.resolve() : b.reject(errors[i])));
      }
    } finally {
      this.running = false;
    }
  }
}
