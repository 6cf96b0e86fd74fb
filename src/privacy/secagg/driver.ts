/**
 * In-process SecAgg+ round: runs n clients and the server through all stages with a loop-back "transport",
 * with optional dropouts at each stage. Used by the tests, the benchmark and the simulator; the federation
 * proper drives the same state machines over HTTP.
 */
import { SecAggClient } from './client.js';
import type { MaskedInputMsg, SecAggConfig } from './messages.js';
import { SecAggServer, type SecAggResult, type Unmasking } from './server.js';

export interface RoundOptions {
  config: SecAggConfig;
  /** Client i's (clipped, possibly noised) update, vectorLength values. Called once, at masking time. */
  update: (id: number) => ArrayLike<number>;
  /** Example counts for weighted rounds (config.weightScale > 0). */
  examples?: (id: number) => number;
  /** Clients that go silent before stage 1, 3, 4 (after sharing, before masking) or 5 (after masking). */
  dropBeforeKeys?: Iterable<number>;
  dropBeforeShares?: Iterable<number>;
  dropBeforeMasking?: Iterable<number>;
  dropAfterMasking?: Iterable<number>;
}

export interface RoundOutcome {
  result: SecAggResult;
  server: SecAggServer;
  /** Milliseconds spent in client code (all clients) and in server code. */
  clientMs: number;
  serverMs: number;
}

export function runSecAggRound(o: RoundOptions): RoundOutcome {
  const r = run(o);
  return { result: r.server.finish(), server: r.server, clientMs: r.clientMs, serverMs: r.serverMs };
}

/**
 * The same round with the masked inputs kept outside the server, as the coordinator keeps them (in its blob
 * store): `keep` receives each accepted masked input; the outcome is the server's Unmasking, to be applied to
 * the sum block by block.
 */
export function runSecAggRoundStored(o: RoundOptions & { keep: (m: MaskedInputMsg) => void }): { unmasking: Unmasking; server: SecAggServer } {
  const r = run(o, o.keep);
  return { unmasking: r.server.unmasking(), server: r.server };
}

function run(o: RoundOptions, keep?: (m: MaskedInputMsg) => void): { server: SecAggServer; clientMs: number; serverMs: number } {
  const n = o.config.numClients;
  const gone = new Set<number>();
  const dropAt = (xs?: Iterable<number>) => { for (const x of xs ?? []) gone.add(x); };
  let clientMs = 0, serverMs = 0;
  const onClient = <T>(f: () => T): T => { const t0 = performance.now(); try { return f(); } finally { clientMs += performance.now() - t0; } };
  const onServer = <T>(f: () => T): T => { const t0 = performance.now(); try { return f(); } finally { serverMs += performance.now() - t0; } };

  const server = onServer(() => new SecAggServer(o.config));
  const setup = onServer(() => server.setupMessages());
  const clients = setup.map((s) => onClient(() => new SecAggClient(s)));

  dropAt(o.dropBeforeKeys);
  for (let i = 0; i < n; i++) if (!gone.has(i)) { const m = onClient(() => clients[i]!.keys()); onServer(() => server.receiveKeys(m)); }
  const nk = onServer(() => server.neighbourKeys());

  dropAt(o.dropBeforeShares);
  for (const [i, msg] of nk) if (!gone.has(i)) { const m = onClient(() => clients[i]!.shares(msg)); onServer(() => server.receiveShares(m)); }
  const mr = onServer(() => server.maskRequests());

  dropAt(o.dropBeforeMasking);
  for (const [i, msg] of mr) {
    if (gone.has(i)) continue;
    const upd = o.update(i);
    const ex = o.examples?.(i) ?? 0;
    const m = onClient(() => clients[i]!.maskedInput(msg, upd, ex));
    if (keep) {
      onServer(() => server.receiveMaskedStored(m.clientId));
      keep(m);
    } else onServer(() => server.receiveMasked(m));
  }
  const ur = onServer(() => server.unmaskRequest());

  dropAt(o.dropAfterMasking);
  for (const i of ur.survivors) if (!gone.has(i)) { const m = onClient(() => clients[i]!.unmask(ur)); onServer(() => server.receiveUnmask(m)); }
  return { server, clientMs, serverMs };
}
