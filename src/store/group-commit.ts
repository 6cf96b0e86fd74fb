/**
 * Group commit: calls that arrive while a batch of earlier ones is being written wait, then go together in one
 * batch (at most `max` at a time), each still answered on its own; `parallel` batches at a time per store handle. Accepted
 * results (one transaction per batch): on PostgreSQL every accepted update appends to the audit chain under the one
 * audit-head row lock, and a thousand transactions each taking it in turn held the pool's connections while they
 * queued (164 s of summed lock wait in a 1,000-site round, `setu bench live --store postgres`); on SQLite each was
 * its own WAL commit. Request nonces (one statement per batch): one INSERT per signed request was the round's
 * largest statement.
 */
export type Outcome<R> = { ok: true; value: R } | { ok: false; error: unknown };

export class GroupCommit<T, R = void> {
  private queue: { item: T; resolve: (v: R) => void; reject: (e: unknown) => void }[] = [];
  private inFlight = 0;
  private scheduled = false;

  /**
   * `run` answers each item's outcome, in order; if it throws, every item of the batch fails with that error.
   * `parallel`: batches written at once (each on its own connection: PostgreSQL's pool; 1 where there is one).
   */
  constructor(
    private readonly run: (items: T[]) => Promise<Outcome<R>[]>,
    private readonly max: number,
    private readonly parallel = 1,
  ) {}

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.inFlight < this.parallel && !this.scheduled) {
        // The calls of this turn of the event loop go with the first.
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Starts batches while fewer than `parallel` are in flight. */
  private pump(): void {
    while (this.queue.length && this.inFlight < this.parallel) void this.write(this.queue.splice(0, this.max));
  }

  private async write(batch: { item: T; resolve: (v: R) => void; reject: (e: unknown) => void }[]): Promise<void> {
    this.inFlight++;
    let outcomes: Outcome<R>[];
    try {
      outcomes = await this.run(batch.map((b) => b.item));
    } catch (error) {
      outcomes = batch.map(() => ({ ok: false, error }));
    }
    this.inFlight--;
    batch.forEach((b, i) => {
      const o = outcomes[i]!;
      if (o.ok) b.resolve(o.value);
      else b.reject(o.error);
    });
    this.pump();
  }
}
