/**
 * An asynchronous study's FedBuff fold (async-fold.ts `foldBuffer`) streamed from the blobs at any model size
 * (stream-delta-fold.ts): each buffered update's delta against the version its site trained from, weighted by
 * n_i·g(s_i) (plain) or g(s_i) and clipped to C (client-level DP), summed in float64 in the buffer's order, noised
 * under DP, scaled by η over Σ n_i (plain) or K (DP) and added to the current version, slice by slice, so the
 * coordinator holds a few slices per buffered update, never a decoded update or version.
 */
import type { AsyncSpec } from '../protocol/api.js';
import type { DType, ResolvedRules } from '../protocol/tensors.js';
import type { NormalSource } from '../privacy/noise.js';
import type { ByteSource } from './stream-aggregate.js';
import { stalenessWeight } from './async-fold.js';
import { streamDeltaFold } from './stream-delta-fold.js';

export interface StreamedBufferedUpdate {
  siteId: string;
  source: ByteSource;
  /** The version the site trained from (whole); pass the same object for updates from the same version. */
  base: ByteSource;
  numExamples: number;
  staleness: number;
}

export interface StreamAsyncFoldArgs {
  /** The current version (whole). */
  current: ByteSource;
  rules: ResolvedRules;
  /** The buffer, in the order it folds (arrival). */
  buffer: readonly StreamedBufferedUpdate[];
  async: AsyncSpec;
  dp?: { clipNorm: number; noiseMultiplier: number; normal: NormalSource };
  metadata: Record<string, string>;
  transportDtypes?: readonly DType[];
  sliceBytes?: number;
}

export async function* streamAsyncFold(a: StreamAsyncFoldArgs): AsyncGenerator<Uint8Array> {
  if (a.buffer.length === 0) throw new Error('an empty buffer folds into nothing');
  const denominator = a.dp ? a.buffer.length : a.buffer.reduce((s, u) => s + u.numExamples, 0);
  if (!(denominator > 0)) throw new Error('the buffer holds no training examples');
  yield* streamDeltaFold({
    current: a.current,
    rules: a.rules,
    updates: a.buffer.map((u) => {
      const g = stalenessWeight(a.async, u.staleness);
      return { siteId: u.siteId, source: u.source, base: u.base, weight: a.dp ? g : u.numExamples * g };
    }),
    ...(a.dp ? { clipNorm: a.dp.clipNorm, noise: { std: a.dp.noiseMultiplier * a.dp.clipNorm, normal: a.dp.normal } } : {}),
    serverLr: a.async.serverLr ?? 1,
    denominator,
    sum: 'f64',
    metadata: a.metadata,
    ...(a.transportDtypes ? { transportDtypes: a.transportDtypes } : {}),
    ...(a.sliceBytes ? { sliceBytes: a.sliceBytes } : {}),
  });
}
