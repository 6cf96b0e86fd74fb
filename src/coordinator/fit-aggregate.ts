/**
 * The new model version of a fit round, from the round's accepted updates: streamed slice by slice when the study's
 * strategy stack is one of STREAMED_STRATEGIES alone (elementwise: stream-aggregate.ts; a server optimiser:
 * stream-server-opt.ts; Krum, Multi-Krum: stream-krum.ts), Cyclic (its one update copied slice by slice) or FedAvg under
 * client-level DP with central noise (stream-dp.ts), otherwise through the strategy's in-memory aggregateFit (SecAgg+'s
 * unmasked sum, a round with a masked update), which study-model.ts admits only for models up to
 * IN_MEMORY_AGGREGATION_MAX_BYTES. `aggregationPath` says which a round takes.
 */
import type { ResultMeta, StudySpec } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { dtypeOf, emptyWeights, setTensor, type Weights } from '../protocol/tensors.js';
import type { UpdateRow } from '../store/store.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { FitResultIn, HostedStrategy } from './strategy-host.js';
import { aggregationBytes, aggregationSeconds } from '../observability/metrics.js';
import { readSourceHeader, streamAggregate, type ByteSource } from './stream-aggregate.js';
import { momentsAsTensors, previousMoments, streamServerStep } from './stream-server-opt.js';
import { streamKrum } from './stream-krum.js';
import { streamClientDp } from './stream-dp.js';
import { CryptoNormal } from '../privacy/noise.js';
import { streamSecAggVersion } from './stream-secagg.js';
import type { Unmasking } from '../privacy/secagg/server.js';
import { aggregatePart, mergeAggregate, rulesOf, transportDtypes } from './study-model.js';

export interface FitRound {
  spec: StudySpec;
  host: HostedStrategy;
  round: number;
  /** The previous version's safetensors. */
  global: ByteSource;
  /** The round's accepted updates; `source` holds an update's safetensors, absent for a masked (SecAgg+) one. */
  updates: readonly { row: UpdateRow; source?: ByteSource }[];
  /** Sites asked this round (client-level DP's fixed denominator). */
  asked: number;
  /** The new version's safetensors metadata. */
  metadata: Record<string, string>;
  /** The blob store, where a streamed server step keeps its moments (without it a server optimiser runs in memory). */
  blobs?: BlobStore;
  /** A SecAgg+ round: the finished session's unmasking and the survivors' masked inputs (blobs). */
  secagg?: { unmasking: Unmasking; masked: readonly ByteSource[]; blockWords?: number };
}

/** The round's results as the strategy layers see them, without weights (what the metrics need). */
export function resultsOf(updates: readonly UpdateRow[]): FitResultIn[] {
  return updates.map((u) => ({ siteId: u.site_id, weights: {}, numExamples: u.num_examples, meta: JSON.parse(u.metrics) as ResultMeta }));
}

/**
 * Whether the round streams from its updates: a streamed strategy stack (elementwise, a server optimiser with the blob
 * store for its moments, Krum, Cyclic's one update, client-level DP-FedAvg with central noise), every update's bytes at
 * hand; under SecAgg+, a plain mean unmasked block by block from the masked blobs.
 */
export function streams(r: Pick<FitRound, 'host' | 'updates' | 'blobs' | 'secagg'>): boolean {
  const h = r.host;
  if (r.secagg) return !!h.secaggMean;
  return !!(h.elementwise || (h.serverStep && r.blobs) || h.robustSelection || h.takesOne || h.clientDp?.mode === 'central') && r.updates.every((u) => u.source);
}

/** Which path aggregates the round: streamed from the blobs slice by slice, or every update decoded in memory. */
export type AggregationPath = 'stream' | 'memory';

export function aggregationPath(r: Pick<FitRound, 'host' | 'updates' | 'blobs' | 'secagg'>): AggregationPath {
  return streams(r) ? 'stream' : 'memory';
}

/** The new version's safetensors, in chunks (for BlobStore.putStream, or concatenated); counted in the aggregation metrics. */
export async function* aggregateRound(r: FitRound): AsyncGenerator<Uint8Array> {
  const path = aggregationPath(r) === 'stream' ? 'streamed' : 'in_memory';
  const bytes = r.updates.reduce((a, u) => a + (u.source?.size ?? 0), 0) + (r.secagg?.masked.reduce((a, m) => a + m.size, 0) ?? 0);
  yield* countedAggregation(path === 'streamed' ? streamed(r) : (async function* () { yield await inMemory(r); })(), path, bytes);
}

/**
 * A new version's chunks passed on, counted in the aggregation metrics (synchronous rounds and asynchronous folds
 * alike): the time spent producing them, not in the consumer (a blob store writing the chunks) between yields.
 */
export async function* countedAggregation(chunks: AsyncIterable<Uint8Array>, path: 'streamed' | 'in_memory', inputBytes: number): AsyncGenerator<Uint8Array> {
  let spent = 0;
  let t = performance.now();
  for await (const c of chunks) {
    spent += performance.now() - t;
    yield c;
    t = performance.now();
  }
  spent += performance.now() - t;
  aggregationSeconds.inc({ path }, spent / 1000);
  aggregationBytes.inc({ path }, inputBytes);
}

/** All the chunks in one buffer (small models, tests). */
export async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

async function* streamed(r: FitRound): AsyncGenerator<Uint8Array> {
  if (r.secagg) {
    const rules = rulesOf(r.spec, (await readSourceHeader(r.global, 'the global model')).tensors.map((t) => t.name));
    const numExamples = r.updates.reduce((a, u) => a + u.row.num_examples, 0);
    yield* streamSecAggVersion({ global: r.global, rules, unmasking: r.secagg.unmasking, masked: r.secagg.masked, elementwise: r.host.secaggMean!, numExamples, metadata: r.metadata, ...(r.secagg.blockWords !== undefined ? { blockWords: r.secagg.blockWords } : {}) });
    return;
  }
  const rules = rulesOf(r.spec, (await readSourceHeader(r.global, 'the global model')).tensors.map((t) => t.name));
  const updates = r.updates.map((u) => ({ siteId: u.row.site_id, numExamples: u.row.num_examples, source: u.source! }));
  const args = { global: r.global, rules, updates, metadata: r.metadata, transportDtypes: transportDtypes(r.spec) };
  const { host } = r;
  if (host.clientDp) {
    // The DP layer replaces the inner strategy's aggregate (privacyProblems admits FedAvg alone under it).
    yield* streamClientDp({ ...args, dp: host.clientDp, clientsPerRound: r.asked, normal: new CryptoNormal() });
  } else if (host.takesOne) {
    if (updates.length !== 1) throw new Error(`${host.strategy.name}: round ${r.round} expects exactly one result, got ${updates.length}`);
    // The one update's values, tensor by tensor into the new version: a mean of one with weight 1 is each value itself.
    yield* streamAggregate({ ...args, elementwise: { kind: 'mean', weighting: 'equal' } });
  } else if (host.elementwise) yield* streamAggregate({ ...args, elementwise: host.elementwise });
  else if (host.serverStep) {
    const moments = await previousMoments(r.blobs!, host.serverStep, host.momentBlobs, host.strategy.getState());
    yield* streamServerStep({ ...args, step: host.serverStep, blobs: r.blobs!, ...(moments ? { moments } : {}), saved: (digests) => void (host.momentBlobs = digests) });
  } else yield* streamKrum({ ...args, selection: host.robustSelection! });
}

const whole = (src: ByteSource) => src.read(0, src.size);

async function inMemory(r: FitRound): Promise<Uint8Array> {
  if (r.host.momentBlobs) {
    // Moments a streamed round saved, for a round that cannot stream (a model small enough to decode).
    if (!r.blobs) throw new Error(`round ${r.round}: the saved moments of ${r.spec.strategy.name} are in the blob store, which this aggregation was not given`);
    r.host.strategy.setState({ json: { strategy: r.host.strategy.name, started: true }, tensors: await momentsAsTensors(r.blobs, r.host.momentBlobs) });
    delete r.host.momentBlobs;
  }
  // The strategy sees the aggregated tensors only; local and skipped ones carry over unchanged (study-model.ts).
  const model = decodeSafetensors(await whole(r.global)).weights;
  const rules = rulesOf(r.spec, Object.keys(model));
  const global = aggregatePart(model, rules);
  // A masked update (SecAgg+) has no weights: its result carries only the site's metadata (for metrics).
  const results = await Promise.all(resultsOf(r.updates.map((u) => u.row)).map(async (res, i) => {
    const src = r.updates[i]!.source;
    return src ? { ...res, weights: inModelDtypes(decodeSafetensors(await whole(src)).weights, global) } : res;
  }));
  const aggregated = r.host.aggregateFit(r.round, global, { results, asked: r.asked });
  return encodeSafetensors(mergeAggregate(model, aggregated, rules), r.metadata);
}
/** An update sent in a transport dtype (F16/BF16 for an F32 tensor) holds float32 values already: it takes the model's dtype. */
function inModelDtypes(update: Weights, model: Weights): Weights {
  const out = emptyWeights();
  for (const [k, t] of Object.entries(update)) {
    const want = Object.hasOwn(model, k) ? dtypeOf(model[k]!) : dtypeOf(t);
    setTensor(out, k, want === dtypeOf(t) ? t : { shape: t.shape, data: t.data, ...(want !== 'F32' ? { dtype: want } : {}) });
  }
  return out;
}
