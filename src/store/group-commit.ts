/**
 * Group commit: calls that arrive while a batch of earlier ones is being written wait, then go together in one
 * batch (at most `max` at a time), each still answered on its own. One batch at a time per store handle. Accepted
 * results (one transaction per batch): on PostgreSQL every accepted update appends to the audit chain under the one
 * audit-head row lock, and a thousand transactions each taking it in turn held the pool's connections while they
 * queued (164 s of summed lock wait in a 1,000-site round, `setu bench live --store postgres`); on SQLite each was
 * its own WAL commit. Request nonces (one statement per batch): one INSERT per signed request was the round's
 * largest statement.
 */
export type Outcome<R> = { ok: true; value: R } | { ok: false; error: unknown };

export class GroupCommit<T, R = void> {
  private queue: { item: T; resolve: (v: R) => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  /** `run` answers each item's outcome, in order; if it throws, every item of the batch fails with that error. */
  constructor(
    private readonly run: (items: T[]) => Promise<Outcome<R>[]>,
    private readonly max: number,
  ) {}

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
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
        let outcomes: Outcome<R>[];
        try {
          outcomes = await this.run(batch.map((b) => b.item));
        } catch (error) {
          outcomes = batch.map(() => ({ ok: false, error }));
        }
        batch.forEach((b, i) => {
          const o = outcomes[i]!;
          if (o.ok) b.resolve(o.value);
          else b.reject(o.error);
        });
      }
    } finally {
      this.running = false;
    }
  }
}
