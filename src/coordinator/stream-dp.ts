/**
 * Client-level DP-FedAvg (central noise) streamed from the update blobs at any model size: privacy/dpfedavg.ts
 * `dpFedAvgAggregate` as the coordinator runs it (privacy.ts `aggregateClientLevel`), slice by slice
 * (stream-delta-fold.ts). Each site's delta against the global model is clipped to C (pass 1 finds its norm), the
 * clipped deltas summed in float32 in the round's order, N(0, σ²C²) added from the noise source a slice at a time,
 * and the sum divided by m, the sites asked: w' = w + (Σ clip_C(u_i − w) + N(0, σ²C²)) / m.
 * The privacy accounting does not change: each site reports and is charged its spend when its update is accepted
 * (privacy.ts recordSpendInTx), whichever path aggregates the round.
 */
import type { DType, ResolvedRules } from '../protocol/tensors.js';
import type { NormalSource } from '../privacy/noise.js';
import type { ByteSource, StreamUpdate } from './stream-aggregate.js';
import { streamDeltaFold } from './stream-delta-fold.js';

export interface ClientDp {
  clipNorm: number;
  noiseMultiplier: number;
  mode: 'central' | 'distributed';
}

export interface StreamDpArgs {
  global: ByteSource;
  rules: ResolvedRules;
  /** The round's updates, in the order the in-memory path sums them (the round's). */
  updates: readonly StreamUpdate[];
  dp: ClientDp;
  /** m: sites asked this round, the mean's fixed denominator. */
  clientsPerRound: number;
  normal: NormalSource;
  metadata: Record<string, string>;
  transportDtypes?: readonly DType[];
  sliceBytes?: number;
}

export async function* streamClientDp(a: StreamDpArgs): AsyncGenerator<Uint8Array> {
  if (a.dp.mode !== 'central') throw new Error('streamed client-level DP adds the noise centrally; distributed noise arrives as a SecAgg+ sum');
  if (!(a.clientsPerRound >= 1)) throw new Error('clientsPerRound must be ≥ 1');
  const seen = new Set<string>();
  for (const u of a.updates) {
    // One clipped contribution per site is what bounds its sensitivity by C/m.
    if (seen.has(u.siteId)) throw new Error(`site "${u.siteId}" sent two results for the same round`);
    seen.add(u.siteId);
  }
  yield* streamDeltaFold({
    current: a.global,
    rules: a.rules,
    // Equal weights: example-count weighting would let one site's sensitivity exceed C/m (dpfedavg.ts).
    updates: a.updates.map((u) => ({ siteId: u.siteId, source: u.source, base: a.global, weight: 1 })),
    clipNorm: a.dp.clipNorm,
    noise: { std: a.dp.noiseMultiplier * a.dp.clipNorm, normal: a.normal },
    serverLr: 1,
    denominator: a.clientsPerRound,
    sum: 'f32',
    metadata: a.metadata,
    ...(a.transportDtypes ? { transportDtypes: a.transportDtypes } : {}),
    ...(a.sliceBytes ? { sliceBytes: a.sliceBytes } : {}),
  });
}
