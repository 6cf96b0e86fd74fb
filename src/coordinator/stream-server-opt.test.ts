/**
 * Server optimisers and Krum streamed from blobs against the in-memory strategies (learning/ is the reference): the
 * same new model version byte for byte, and the same moments, for FedAvgM, FedAdam, FedYogi and FedAdagrad over
 * several rounds, on a model of F32, F16, BF16 and I64 tensors (local and skipped ones too) cut into slices of a few
 * elements; a coordinator "restarted" between rounds (a new host from the committed state JSON, a new file blob
 * store on the same directory) continues with exactly the saved moments. Bit-identical is what is asserted: both
 * paths use the same mean kernel in the same order and the strategy's own `apply`, so nothing is left to rounding.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StudySpec } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor, type Weights } from '../protocol/tensors.js';
import { FileBlobStore } from '../store/blobs/file-blobs.js';
import { MemoryBlobStore } from '../store/blobs/memory-blobs.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { UpdateRow } from '../store/store.js';
import type { StrategyState } from '../learning/strategy.js';
import { createRng } from '../learning/rng.js';
import { aggregateRound, collect, streams } from './fit-aggregate.js';
import { hostStrategy, STREAMED_STRATEGIES, type HostedStrategy } from './strategy-host.js';
import { blobSource, bytesSource } from './stream-aggregate.js';
import { previousMoments, streamServerStep } from './stream-server-opt.js';
import { pairwiseDistances, streamKrum } from './stream-krum.js';
import { aggregationSizeProblem, IN_MEMORY_AGGREGATION_MAX_BYTES, rulesOf } from './study-model.js';
import { sqDist } from '../learning/weights.js';
import { MIXED_AGGREGATED, MIXED_LAYOUT, MIXED_RULES } from '../testing/mixed-layout.js';

const LAYOUT = MIXED_LAYOUT;
const RULES = MIXED_RULES;
const AGGREGATED = MIXED_AGGREGATED;

function spec(strategy: string, params: Record<string, unknown> = {}): StudySpec {
  return {
    name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: strategy, params }, rounds: 3,
    fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: RULES,
  } as StudySpec;
}

function weights(seed: string, only?: readonly string[], around?: Weights): Weights {
  const rng = createRng(11, seed);
  const names = LAYOUT.filter((t) => !only || only.includes(t.name));
  return mapWeights(names.map((t) => t.name), (k) => {
    const t = LAYOUT.find((x) => x.name === k)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    const base = around && Object.hasOwn(around, k) ? around[k]!.data : undefined;
    for (let i = 0; i < n; i++) d[i] = t.dtype === 'I64' ? Math.floor(rng.next() * 100) : (base?.[i] ?? 0) + (rng.next() - 0.5) * 0.5;
    return tensor(t.shape, d, t.dtype);
  });
}

const digestOf = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A round's updates around the global model (site ids out of order, example counts that vary). */
function updatesFor(global: Uint8Array, round: number, sites: number): { row: UpdateRow; bytes: Uint8Array }[] {
  const g = decodeSafetensors(global).weights;
  return Array.from({ length: sites }, (_, k) => {
    const bytes = encodeSafetensors(weights(`r${round}s${k}`, AGGREGATED, g), { meta: '{}' });
    const row: UpdateRow = { task_id: `t${round}.${k}`, study_id: 's', round, site_id: `site-${(k * 7) % sites}-${k}`, digest: digestOf(bytes), size: bytes.length, num_examples: 3 + ((k * 5) % 11), metrics: JSON.stringify({ taskId: `t${k}`, numExamples: 3 }), received_at: 0 };
    return { row, bytes };
  });
}

/** The in-memory host: the same strategy, its streaming hooks hidden (what the engine did before they existed). */
function inMemoryHost(s: StudySpec, state?: StrategyState): HostedStrategy {
  const { elementwise: _e, serverStep: _s, robustSelection: _r, ...host } = hostStrategy(s, state);
  return host as HostedStrategy;
}

/** The state as the engine commits it and reads it back (JSON text, tensors through safetensors). */
function committed(state: StrategyState): StrategyState {
  const tensors = Object.keys(state.tensors).length ? decodeSafetensors(encodeSafetensors(state.tensors)).weights : {};
  return { json: JSON.parse(JSON.stringify(state.json)), tensors };
}

const eq = (a: Uint8Array, b: Uint8Array, what: string) => assert.ok(Buffer.from(a).equals(Buffer.from(b)), `${what}: streamed and in-memory differ`);

async function run(host: HostedStrategy, s: StudySpec, round: number, global: Uint8Array, ups: { row: UpdateRow; bytes: Uint8Array }[], blobs?: BlobStore): Promise<Uint8Array> {
  const updates = ups.map((u) => ({ row: u.row, source: bytesSource(u.bytes) }));
  return collect(aggregateRound({ spec: s, host, round, global: bytesSource(global), updates, asked: ups.length, metadata: { study: 's', round: String(round) }, ...(blobs ? { blobs } : {}) }));
}

const OPTIMISERS: [string, Record<string, unknown>][] = [
  ['FedAvgM', { serverLr: 0.7, serverMomentum: 0.9 }],
  ['FedAdam', { serverLr: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 }],
  ['FedYogi', { serverLr: 0.05, tau: 1e-3 }],
  ['FedAdagrad', { serverLr: 0.05, tau: 1e-3, weighting: 'equal' }],
];

test('server optimisers streamed equal the in-memory strategies bit for bit over three rounds, moments included, across a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-streamopt-'));
  try {
    for (const [name, params] of OPTIMISERS) {
      const s = spec(name, params);
      let memState: StrategyState | undefined, streamState: StrategyState | undefined;
      let globalMem = encodeSafetensors(weights('global'), { study: 's', round: '0' }), globalStream = globalMem;
      for (let round = 1; round <= 3; round++) {
        // A new blob store object on the same directory each round: what a restarted coordinator opens.
        const blobs = new FileBlobStore(join(dir, name));
        const ups = updatesFor(globalMem, round, 5);
        const mem = inMemoryHost(s, memState);
        const outMem = await run(mem, s, round, globalMem, ups);
        memState = committed(mem.getState());
        const str = hostStrategy(s, streamState);
        assert.ok(str.serverStep && streams({ host: str, updates: ups.map((u) => ({ row: u.row, source: bytesSource(u.bytes) })), blobs }), `${name} streams`);
        const outStream = await run(str, s, round, globalStream, ups, blobs);
        streamState = committed(str.getState());
        eq(outStream, outMem, `${name} round ${round}`);
        // The moments: the blobs the streamed step saved hold the in-memory strategy's tensors.
        const j = streamState.json as { momentBlobs: Record<string, string> };
        assert.deepEqual(Object.keys(streamState.tensors), []);
        assert.deepEqual(Object.keys(j.momentBlobs), str.serverStep!.moments);
        for (const [m, digest] of Object.entries(j.momentBlobs)) {
          const saved = decodeSafetensors(await blobs.readAll(digest)).weights;
          assert.deepEqual(Object.keys(saved).sort(), [...AGGREGATED].sort());
          for (const k of AGGREGATED) assert.deepEqual(saved[k]!.data, memState.tensors[`${m}.${k}`]!.data, `${name} round ${round}: moment ${m} of "${k}"`);
        }
        globalMem = outMem;
        globalStream = outStream;
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the streamed server step gives the same bytes whatever the slice size, and starts from in-memory moments', async () => {
  for (const [name, params] of OPTIMISERS) {
    const s = spec(name, params);
    // Round 1 in memory (moments as the strategy's tensors, as a study saved them before this path existed) …
    const g0 = encodeSafetensors(weights('global'), { study: 's', round: '0' });
    const mem = inMemoryHost(s);
    const g1 = await run(mem, s, 1, g0, updatesFor(g0, 1, 3));
    const state = committed(mem.getState());
    // … round 2 streamed from that state, with slices of 1 to 7 elements and of 1 MiB.
    const ups = updatesFor(g1, 2, 4);
    const memNext = inMemoryHost(s, state);
    const want = await run(memNext, s, 2, g1, ups);
    for (const sliceBytes of [4, 12, 28, 1 << 20]) {
      const blobs = new MemoryBlobStore();
      const host = hostStrategy(s, state);
      const moments = await previousMoments(blobs, host.serverStep!, host.momentBlobs, host.strategy.getState());
      assert.ok(moments, 'the in-memory moments are read');
      const rules = rulesOf(s, LAYOUT.map((t) => t.name));
      let saved: Record<string, string> | undefined;
      const chunks = streamServerStep({
        global: bytesSource(g1), rules, updates: ups.map((u) => ({ siteId: u.row.site_id, numExamples: u.row.num_examples, source: bytesSource(u.bytes) })),
        metadata: { study: 's', round: '2' }, step: host.serverStep!, blobs, moments, sliceBytes, saved: (d) => void (saved = d),
      });
      eq(await collect(chunks), want, `${name} slices of ${sliceBytes} bytes`);
      assert.ok(saved, 'the moments were saved');
      const memMoments = committed(memNext.getState()).tensors;
      for (const [m, digest] of Object.entries(saved)) {
        const w = decodeSafetensors(await blobs.readAll(digest)).weights;
        for (const k of AGGREGATED) assert.deepEqual(w[k]!.data, memMoments[`${m}.${k}`]!.data);
      }
    }
  }
});

test('a failing update stops the streamed server step with the in-memory message and stores no moments', async () => {
  const s = spec('FedAdam');
  const g0 = encodeSafetensors(weights('global'), { study: 's', round: '0' });
  const ups = updatesFor(g0, 1, 3);
  const bad = decodeSafetensors(ups[1]!.bytes).weights;
  bad['conv.bias']!.data[3] = Number.NaN;
  ups[1]!.bytes = encodeSafetensors(bad);
  const blobs = new MemoryBlobStore();
  const host = hostStrategy(s);
  await assert.rejects(run(host, s, 1, g0, ups, blobs), /aggregated model: tensor "conv.bias" is not finite at index 3/);
  await assert.rejects(run(inMemoryHost(s), s, 1, g0, ups), /aggregated model: tensor "conv.bias" is not finite at index 3/);
  assert.deepEqual(await blobs.list(), []);
  assert.equal(host.momentBlobs, undefined);
});

test('Krum and Multi-Krum streamed choose and average as the in-memory strategies, bit for bit, with the same distances', async () => {
  const g0 = encodeSafetensors(weights('global'), { study: 's', round: '0' });
  const gw = decodeSafetensors(g0).weights;
  for (const sites of [5, 6, 9]) {
    const ups = updatesFor(g0, 1, sites);
    // One outlier far from the rest, which Krum must not pick.
    const far = decodeSafetensors(ups[2]!.bytes).weights;
    for (const t of Object.values(far)) for (let i = 0; i < t.data.length; i++) t.data[i] = t.data[i]! + 3;
    ups[2]!.bytes = encodeSafetensors(far);
    for (const [name, params] of [['Krum', { byzantine: 1 }], ['MultiKrum', { byzantine: 1 }], ['MultiKrum', { byzantine: 1, select: 2, weighting: 'equal' }]] as const) {
      const s = spec(name, params);
      const want = await run(inMemoryHost(s), s, 1, g0, ups);
      const host = hostStrategy(s);
      assert.ok(host.robustSelection && streams({ host, updates: ups.map((u) => ({ row: u.row, source: bytesSource(u.bytes) })) }));
      eq(await run(host, s, 1, g0, ups), want, `${name} ${JSON.stringify(params)} with ${sites} sites`);
      const rules = rulesOf(s, LAYOUT.map((t) => t.name));
      const updates = ups.map((u) => ({ siteId: u.row.site_id, numExamples: u.row.num_examples, source: bytesSource(u.bytes) }));
      for (const sliceBytes of [4, 20, 1 << 20]) {
        eq(await collect(streamKrum({ global: bytesSource(g0), rules, updates, metadata: { study: 's', round: '1' }, selection: host.robustSelection!, sliceBytes })), want, `${name} slices of ${sliceBytes}`);
      }
      // The distances themselves equal sqDist's on the decoded updates (update order: site id).
      const { sorted, distances } = await pairwiseDistances({ global: bytesSource(g0), rules, updates, sliceBytes: 8 });
      const decoded = sorted.map((u) => decodeSafetensors(ups.find((x) => x.row.site_id === u.siteId)!.bytes).weights);
      for (let i = 0; i < sites; i++) for (let j = i + 1; j < sites; j++) assert.equal(distances[i]![j], sqDist(decoded[i]!, decoded[j]!));
    }
    // The far update really is far: Krum's choice is not it.
    const chosen = decodeSafetensors(await run(hostStrategy(spec('Krum')), spec('Krum'), 1, g0, ups)).weights;
    assert.notDeepEqual(chosen['conv.bias']!.data, far['conv.bias']!.data);
    void gw;
  }
});

test('Krum streamed refuses too few updates as the in-memory strategy does', async () => {
  const g0 = encodeSafetensors(weights('global'), { study: 's', round: '0' });
  const ups = updatesFor(g0, 1, 4);
  await assert.rejects(run(hostStrategy(spec('Krum')), spec('Krum'), 1, g0, ups), /4 updates cannot tolerate 1 Byzantine site\(s\); need at least 5/);
});

test('the streamed strategies, Cyclic and client-level DP among them, are admitted at any size', () => {
  assert.deepEqual([...STREAMED_STRATEGIES].sort(), ['Cyclic', 'FedAdagrad', 'FedAdam', 'FedAvg', 'FedAvgM', 'FedProx', 'FedYogi', 'Krum', 'Median', 'MultiKrum', 'SCAFFOLD', 'TrimmedMean']);
  const big = IN_MEMORY_AGGREGATION_MAX_BYTES + 1;
  for (const name of STREAMED_STRATEGIES) assert.equal(aggregationSizeProblem(spec(name), big), undefined, name);
  const dp = { level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 1 } as const;
  assert.equal(aggregationSizeProblem({ ...spec('FedAvg'), privacy: { dp } } as StudySpec, big), undefined);
  assert.equal(aggregationSizeProblem({ ...spec('FedAvg'), async: { bufferSize: 3 } } as StudySpec, big), undefined);
});

test('moments saved in blobs restore into the in-memory strategy when a round cannot stream', async () => {
  const s = spec('FedAdam');
  const blobs = new MemoryBlobStore();
  const g0 = encodeSafetensors(weights('global'), { study: 's', round: '0' });
  const streamed = hostStrategy(s);
  const g1 = await run(streamed, s, 1, g0, updatesFor(g0, 1, 3), blobs);
  const state = committed(streamed.getState());
  const ups = updatesFor(g1, 2, 3);
  // The same state, loaded by a host whose round runs in memory (its streaming hooks hidden), and by a streamed one.
  const viaMemory = await run(inMemoryHost(s, state), s, 2, g1, ups, blobs);
  const viaStream = await run(hostStrategy(s, state), s, 2, g1, ups, blobs);
  eq(viaStream, viaMemory, 'round 2 from blob moments');
  void blobSource;
});
