/**
 * The new model version of a fit round, from the round's accepted updates: streamed slice by slice when the study's
 * strategy stack aggregates elementwise (stream-aggregate.ts), otherwise through the strategy's in-memory
 * aggregateFit (robust and server-optimiser strategies, client-level DP, SecAgg+'s unmasked sum), which
 * study-model.ts admits only for models up to IN_MEMORY_AGGREGATION_MAX_BYTES.
 */
import type { ResultMeta, StudySpec } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { dtypeOf, emptyWeights, setTensor, type Weights } from '../protocol/tensors.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { UpdateRow } from '../store/store.js';
import type { FitResultIn, HostedStrategy } from './strategy-host.js';
import { blobSource, bytesSource, readSourceHeader, streamAggregate, type ByteSource } from './stream-aggregate.js';
import { aggregatePart, mergeAggregate, rulesOf, transportDtypes } from './study-model.js';

export interface FitRound {
  spec: StudySpec;
  host: HostedStrategy;
  round: number;
  /** The previous version's safetensors. */
  global: Uint8Array;
  updates: readonly UpdateRow[];
  /** Sites asked this round (client-level DP's fixed denominator). */
  asked: number;
  /** The new version's safetensors metadata. */
  metadata: Record<string, string>;
  blobs: BlobStore;
}

/** The round's results as the strategy layers see them, without weights (what the metrics need). */
export function resultsOf(updates: readonly UpdateRow[]): FitResultIn[] {
  return updates.map((u) => ({ siteId: u.site_id, weights: {}, numExamples: u.num_examples, meta: JSON.parse(u.metrics) as ResultMeta }));
}

/** The new version's safetensors bytes. */
export async function aggregateRound(r: FitRound): Promise<Uint8Array> {
  if (r.host.elementwise && r.updates.every((u) => u.weights || u.digest)) return streamed(r, r.host.elementwise);
  return inMemory(r);
}

async function streamed(r: FitRound, elementwise: NonNullable<HostedStrategy['elementwise']>): Promise<Uint8Array> {
  const global = bytesSource(r.global);
  const rules = rulesOf(r.spec, (await readSourceHeader(global, 'the global model')).tensors.map((t) => t.name));
  const updates = await Promise.all(r.updates.map(async (u) => ({ siteId: u.site_id, numExamples: u.num_examples, source: await updateSource(u, r.blobs) })));
  const chunks: Uint8Array[] = [];
  for await (const c of streamAggregate({ global, rules, updates, elementwise, metadata: r.metadata, transportDtypes: transportDtypes(r.spec) })) chunks.push(c);
  return Buffer.concat(chunks);
}

/** An update's bytes: in its row, or in the blob store under its digest. */
async function updateSource(u: UpdateRow, blobs: BlobStore): Promise<ByteSource> {
  if (u.weights) return bytesSource(u.weights);
  return blobSource(blobs, u.digest!);
}

async function inMemory(r: FitRound): Promise<Uint8Array> {
  // The strategy sees the aggregated tensors only; local and skipped ones carry over unchanged (study-model.ts).
  const model = decodeSafetensors(r.global).weights;
  const rules = rulesOf(r.spec, Object.keys(model));
  const global = aggregatePart(model, rules);
  // A masked update (SecAgg+) has no weights: its result carries only the site's metadata (for metrics).
  const results = await Promise.all(resultsOf(r.updates).map(async (res, i) => {
    const u = r.updates[i]!;
    if (!u.weights && !(u.digest && !r.spec.privacy?.secagg)) return res;
    const bytes = u.weights ?? (await r.blobs.readAll(u.digest!));
    return { ...res, weights: inModelDtypes(decodeSafetensors(bytes).weights, global) };
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
