/**
 * SecAgg+ unmasked block by block from the masked inputs' blobs against the one-block, in-memory path: the same
 * new model version byte for byte, with blocks that cut tensors anywhere (a few words), a site dropped before
 * masking (its pairwise masks removed) and one after (recovered from its neighbours' shares), every dtype and
 * per-tensor rules; the in-memory sum read from the blobs equals the server's own finish().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StudySpec } from '../protocol/api.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor, type Weights } from '../protocol/tensors.js';
import { MemoryBlobStore } from '../store/blobs/memory-blobs.js';
import type { UpdateRow } from '../store/store.js';
import { createRng } from '../learning/rng.js';
import { makeConfig } from '../privacy/secagg/server.js';
import { recommendedDegree } from '../privacy/secagg/graph.js';
import { runSecAggRound, runSecAggRoundStored, type RoundOptions } from '../privacy/secagg/driver.js';
import { aggregateRound, collect } from './fit-aggregate.js';
import { hostStrategy } from './strategy-host.js';
import { secAggPlus, type SecAggSession } from './secagg.js';
import { blobSource, bytesSource } from './stream-aggregate.js';
import { unmaskedSum, streamSecAggVersion } from './stream-secagg.js';
import { rulesOf } from './study-model.js';
import { MIXED_AGGREGATED, MIXED_LAYOUT, MIXED_RULES } from '../testing/mixed-layout.js';

const spec = (strategy: string): StudySpec => ({
  name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: strategy }, rounds: 2,
  fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: MIXED_RULES, privacy: { secagg: {} },
} as StudySpec);

function weights(seed: string, only?: readonly string[]): Weights {
  const rng = createRng(11, seed);
  const names = MIXED_LAYOUT.filter((t) => !only || only.includes(t.name));
  return mapWeights(names.map((t) => t.name), (k) => {
    const t = MIXED_LAYOUT.find((x) => x.name === k)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = t.dtype === 'I64' ? Math.floor(rng.next() * 100) : (rng.next() - 0.5) * 3;
    return tensor(t.shape, d, t.dtype);
  });
}

const N = 6;
const examples = (i: number) => 3 + ((i * 5) % 11);
const vectorLength = MIXED_AGGREGATED.reduce((n, k) => n + MIXED_LAYOUT.find((t) => t.name === k)!.shape.reduce((a, b) => a * b, 1), 0);

async function setup(weighted: boolean) {
  const rec = recommendedDegree(N);
  const config = makeConfig({ numClients: N, degree: rec.degree, threshold: rec.threshold, vectorLength, weightScale: weighted ? 14 : 0, clipRange: 4 });
  const deltas = Array.from({ length: N }, (_, i) => {
    const rng = createRng(5, `delta${i}`);
    return Float32Array.from({ length: vectorLength }, () => (rng.next() - 0.5) * (i === 3 ? 12 : 2)); // site 3 is clipped
  });
  const opts: RoundOptions = { config, update: (i) => deltas[i]!, examples, dropBeforeMasking: [2], dropAfterMasking: [4] };
  const blobs = new MemoryBlobStore();
  const digests = new Map<number, string>();
  const stored = runSecAggRoundStored({ ...opts, keep: (m) => void blobs.put(new Uint8Array(m.masked.buffer)).then((b) => digests.set(m.clientId, b.digest)) });
  await new Promise((r) => setImmediate(r));
  const masked = await Promise.all(stored.unmasking.survivors.map((c) => blobSource(blobs, digests.get(c)!)));
  return { opts, stored, masked, blobs };
}

test('the sum unmasked from the blobs in blocks of a few words equals SecAggServer.finish on the same round', async () => {
  for (const weighted of [true, false]) {
    const { opts, stored, masked } = await setup(weighted);
    assert.deepEqual(stored.unmasking.survivors, [0, 1, 3, 4, 5]);
    assert.deepEqual(stored.unmasking.dropped, [2]);
    const one = await unmaskedSum({ masked, unmasking: stored.unmasking, blockWords: 1 << 20 });
    for (const blockWords of [1, 5, 7, 64]) {
      const b = await unmaskedSum({ masked, unmasking: stored.unmasking, blockWords });
      assert.deepEqual(b, one, `block of ${blockWords} words`);
    }
    // The in-memory path (SecAggServer.finish) on a fresh run of the same round (new keys, new masks): the masks
    // cancel either way, so the unmasked integers, hence the sums, are the same bits.
    const plain = runSecAggRound(opts).result;
    assert.deepEqual({ sum: plain.sum, mean: plain.mean, weightSum: plain.weightSum }, one);
  }
});

test('the streamed SecAgg+ version equals the in-memory one byte for byte, whatever the block size', async () => {
  const { stored, masked } = await setup(true);
  const s = spec('FedAvg');
  const global = encodeSafetensors(weights('global'), { study: 's', round: '0' });
  const rules = rulesOf(s, MIXED_LAYOUT.map((t) => t.name));
  const rows: UpdateRow[] = stored.unmasking.survivors.map((c) => ({ task_id: `t${c}`, study_id: 's', round: 1, site_id: `site${c}`, digest: null, size: null, num_examples: examples(c), metrics: JSON.stringify({ taskId: `t${c}`, numExamples: examples(c) }), received_at: 0 }));
  const metadata = { study: 's', round: '1' };
  // The in-memory path: the real SecAgg+ layer over FedAvg, given the sum as a finished session holds it.
  const sum = await unmaskedSum({ masked, unmasking: stored.unmasking });
  const session = { studyId: 's', unmasking: stored.unmasking, result: { ...sum, survivors: stored.unmasking.survivors, dropped: stored.unmasking.dropped }, recoveredAfterMasking: [] } as unknown as SecAggSession;
  const host = secAggPlus(hostStrategy(s), () => session);
  assert.ok(host.secaggMean, 'FedAvg under SecAgg+ streams');
  const inMemoryHost = { ...host };
  delete inMemoryHost.secaggMean;
  const inMemory = await collect(aggregateRound({ spec: s, host: inMemoryHost, round: 1, global: bytesSource(global), updates: rows.map((row) => ({ row })), asked: N, metadata }));
  for (const blockWords of [1, 3, 7, 40, 1 << 20]) {
    const streamed = await collect(aggregateRound({ spec: s, host, round: 1, global: bytesSource(global), updates: rows.map((row) => ({ row })), asked: N, metadata, secagg: { unmasking: stored.unmasking, masked, blockWords } }));
    assert.ok(Buffer.from(streamed).equals(Buffer.from(inMemory)), `block of ${blockWords} words`);
  }
  // A strategy that is not a plain mean (client-level DP's sum, a server optimiser) is not streamed by this path.
  assert.equal(secAggPlus(hostStrategy(spec('FedAdam')), () => session).secaggMean, undefined);
  await assert.rejects(collect(streamSecAggVersion({ global: bytesSource(global), rules, unmasking: stored.unmasking, masked: masked.slice(1), elementwise: host.secaggMean!, numExamples: 1, metadata })), /4 masked inputs for 5 survivors/);
});
