/**
 * A TCP proxy that sits between the site agents and the coordinator and cuts the network on command: it resets
 * every open connection (RST, as a middlebox or a dropped NAT entry does), refuses new connections for a while
 * (accepts and closes at once, like a firewall rejecting), or stalls (holds the bytes of every connection, open
 * and new, until the stall ends: a congested or black-holed link). Plain node:net, so what the agents see are
 * real socket errors and real timeouts, not a simulated transport.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface ProxyCounters {
  /** Connections accepted from agents. */
  connections: number;
  /** Connections reset by `reset()`. */
  resets: number;
  /** Connections refused while dropping. */
  refused: number;
  /** Stalls started. */
  stalls: number;
}

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class ChaosProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<Pair>();
  private dropUntil = 0;
  private stalled = false;
  readonly counters: ProxyCounters = { connections: 0, resets: 0, refused: 0, stalls: 0 };
  port = 0;

  constructor(
    private readonly targetPort: number,
    private readonly targetHost = '127.0.0.1',
  ) {}

  async listen(port = 0): Promise<number> {
    const server = createServer((client) => this.accept(client));
    this.server = server;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, '127.0.0.1', () => res());
    });
    const a = server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
    return this.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(client: Socket): void {
    this.counters.connections++;
    if (Date.now() < this.dropUntil) {
      this.counters.refused++;
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(this.targetPort, this.targetHost);
    const pair: Pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    // Errors are the point of this proxy: each side's error ends the pair, never the process.
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
    if (this.stalled) this.pause(pair);
  }

  // Unpiped, a socket stops reading (its bytes wait in the kernel and the stream's buffer); pause() alone would be
  // undone by the pipe's own drain handler.
  private pause(p: Pair): void {
    p.client.unpipe(p.upstream);
    p.upstream.unpipe(p.client);
  }

  /** Resets every open connection (the peers see ECONNRESET). Returns how many were cut. */
  reset(): number {
    let n = 0;
    for (const p of [...this.pairs]) {
      this.pairs.delete(p);
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
      n++;
    }
    this.counters.resets += n;
    return n;
  }

  /** Refuses every new connection for `ms` (open ones are reset too: the link is down). */
  drop(ms: number): void {
    this.dropUntil = Date.now() + ms;
    this.reset();
  }

  /** Holds every byte, both ways, on open and new connections, until `resume()`. */
  stall(): void {
    if (this.stalled) return;
    this.stalled = true;
    this.counters.stalls++;
    for (const p of this.pairs) this.pause(p);
  }

  resume(): void {
    if (!this.stalled) return;
    this.stalled = false;
    for (const p of this.pairs) {
      p.client.pipe(p.upstream);
      p.upstream.pipe(p.client);
    }
  }

  /** Heals the link: no drop, no stall. */
  heal(): void {
    this.dropUntil = 0;
    this.resume();
  }

  get openConnections(): number {
    return this.pairs.size;
  }

  async close(): Promise<void> {
    this.heal();
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
