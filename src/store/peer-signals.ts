/**
 * Signals between the coordinator processes that share one PostgreSQL (LISTEN/NOTIFY on one channel): "tasks were
 * issued" wakes the long-polls another process holds, "a round has what it waits for" kicks the engine of the
 * process that drives the study, and the live events of each reach the event streams the others serve. Without
 * them each process learnt of the other's work by looking: its TaskWake once a second, its engine tick every 500 ms,
 * so with two coordinators behind one address half the sites got each task up to a second late and a round
 * completed at the other process waited for the next tick (`setu bench live --coordinators 2`: 349 updates/s
 * against one coordinator's 901), and a dashboard following one process never saw a round the other committed.
 *
 * Only hints, as the in-process bus is: the looks stay (a notification lost with a dropped connection is made good
 * by the next one), and a receiver re-reads the store. Embedded stores (memory, SQLite) have one process: no signals.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';

/**
 * What one process tells the others. The store carries any JSON object with a `kind`; the coordinator gives the
 * kinds their meaning (coordinator/peer-events.ts).
 */
export interface PeerMessage {
  kind: string;
  [field: string]: unknown;
}

export interface PeerSignals {
  /** Tells every other process on the store, in order, batched by event-loop turn; never throws (a hint). */
  publish(m: PeerMessage): void;
  /** The other processes' messages (never this one's own), in the order they were published; returns the unsubscribe. */
  subscribe(fn: (m: PeerMessage) => void): () => void;
  close(): Promise<void>;
}

const CHANNEL = 'setu_peers';
/** PostgreSQL's NOTIFY payload limit is 8,000 bytes; a batch stays under it (a lone message over it is not relayed). */
const PAYLOAD_BYTES = 7_900;
/** After a lost listening connection, how long before it is opened again. */
const RECONNECT_MS = 1000;

/**
 * The listening side holds one connection of its own (a pooled one cannot stay in LISTEN), opened at the first
 * subscription; the sending side goes through the pool (`notify` runs `SELECT pg_notify`), one NOTIFY at a time.
 */
export class PgPeerSignals implements PeerSignals {
  /** This process's mark on its own notifications (PostgreSQL delivers them to every listener, the sender's own too). */
  private readonly origin = randomBytes(8).toString('hex');
  private readonly subscribers = new Set<(m: PeerMessage) => void>();
  private client: pg.Client | undefined;
  private connecting: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private queued: string[] = [];
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly connect: () => pg.Client,
    private readonly notify: (channel: string, payload: string) => Promise<void>,
    /** A lost listening connection or a NOTIFY that failed (the looks make good what it missed). */
    private readonly onError: (e: Error) => void = () => {},
  ) {}

  publish(m: PeerMessage): void {
    if (this.closed) return;
    if (this.queued.length === 0) setImmediate(() => this.flush());
    this.queued.push(JSON.stringify(m));
  }

  /** The turn's messages in as few NOTIFYs as fit the payload limit (identical ones once), one after another. */
  private flush(): void {
    const batch = [...new Set(this.queued)];
    this.queued = [];
    const head = `{"o":"${this.origin}","m":[`;
    const empty = Buffer.byteLength(head) + 2;
    const payloads: string[] = [];
    let cur: string[] = [];
    let bytes = empty;
    for (const m of batch) {
      const len = Buffer.byteLength(m) + 1;
      if (empty + len > PAYLOAD_BYTES) continue; // too large for any NOTIFY: a hint not given
      if (bytes + len > PAYLOAD_BYTES) {
        payloads.push(`${head}${cur.join(',')}]}`);
        cur = [];
        bytes = empty;
      }
      cur.push(m);
      bytes += len;
    }
    if (cur.length) payloads.push(`${head}${cur.join(',')}]}`);
    for (const payload of payloads) {
      this.sending = this.sending.then(() => this.notify(CHANNEL, payload)).catch((e: unknown) => this.onError(e as Error));
    }
  }

  subscribe(fn: (m: PeerMessage) => void): () => void {
    this.subscribers.add(fn);
    void this.listen();
    return () => {
      this.subscribers.delete(fn);
    };
  }

  /** Resolves once this process listens (tests wait for it; a subscriber need not). */
  listening(): Promise<void> {
    return this.listen();
  }

  private listen(): Promise<void> {
    if (this.closed || this.client) return Promise.resolve();
    this.connecting ??= (async () => {
      const c = this.connect();
      const lost = (e?: Error) => {
        if (this.client === c) this.client = undefined;
        c.removeAllListeners('notification');
        void c.end().catch(() => {});
        if (e) this.onError(e);
        if (this.closed || this.retry) return;
        this.retry = setTimeout(() => {
          this.retry = undefined;
          if (this.subscribers.size) void this.listen();
        }, RECONNECT_MS);
        this.retry.unref();
      };
      c.on('error', (e) => lost(e));
      c.on('end', () => lost());
      c.on('notification', (n) => this.deliver(n.payload));
      try {
        await c.connect();
        await c.query(`LISTEN ${CHANNEL}`);
        if (this.closed) throw new Error('closed');
        this.client = c;
      } catch (e) {
        lost(this.closed ? undefined : (e as Error));
      }
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private deliver(payload: string | undefined): void {
    let batch: { o?: unknown; m?: unknown } | undefined;
    try {
      batch = JSON.parse(payload ?? '') as { o?: unknown; m?: unknown };
    } catch {
      return; // not one of ours
    }
    if (!batch || batch.o === this.origin || !Array.isArray(batch.m)) return;
    for (const m of batch.m as unknown[]) {
      if (!m || typeof m !== 'object' || typeof (m as PeerMessage).kind !== 'string') continue;
      for (const fn of this.subscribers) fn(m as PeerMessage);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.queued.length) this.flush();
    await this.sending;
    await this.connecting;
    const c = this.client;
    this.client = undefined;
    if (c) {
      c.removeAllListeners('end');
      await c.end().catch(() => {});
    }
  }
}
