/**
 * Streaming aggregation against the in-memory path: the same new model version, byte for byte, for every
 * elementwise strategy, every dtype, per-tensor rules, site counts around the in-memory kernel's groups of four,
 * slices that cut tensors anywhere, and updates read from a blob store; F16/BF16 transport within its error bound.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StudySpec } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor, type DType, type Weights } from '../protocol/tensors.js';
import { MemoryBlobStore } from '../store/blobs/memory-blobs.js';
import { FileBlobStore } from '../store/blobs/file-blobs.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { UpdateRow } from '../store/store.js';
import { createRng } from '../learning/rng.js';
import { aggregateRound, collect } from './fit-aggregate.js';
import { hostStrategy, type HostedStrategy } from './strategy-host.js';
import { blobSource, bytesSource, streamAggregate, type ByteSource, sliceBytesFor, SLICE_BUFFERS_BYTES, MIN_SLICE_BYTES, DEFAULT_SLICE_BYTES } from './stream-aggregate.js';
import { aggregationSizeProblem, checkInitialWeights, IN_MEMORY_AGGREGATION_MAX_BYTES, ModelProblem, modelSpecProblems, rulesOf } from './study-model.js';
import { MIXED_AGGREGATED, MIXED_LAYOUT, MIXED_RULES } from '../testing/mixed-layout.js';

const LAYOUT = MIXED_LAYOUT;
const RULES = MIXED_RULES;

function spec(strategy: string, extra: Partial<StudySpec> = {}): StudySpec {
  return {
    name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: strategy }, rounds: 2,
    fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: RULES, ...extra,
  } as StudySpec;
}

function randomWeights(seed: string, only?: readonly string[], scale = 1): Weights {
  const rng = createRng(7, seed);
  const names = LAYOUT.filter((t) => !only || only.includes(t.name));
  return mapWeights(names.map((t) => t.name), (k) => {
    const t = LAYOUT.find((x) => x.name === k)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = t.dtype === 'I64' ? Math.floor(rng.next() * 100) : (rng.next() - 0.5) * 4 * scale;
    return tensor(t.shape, d, t.dtype);
  });
}

const AGGREGATED = MIXED_AGGREGATED;

/** An update's row with its bytes beside it (the store keeps them in its blob store). */
type TestUpdate = UpdateRow & { weights: Uint8Array | null };

/** A round's inputs as bytes: the previous version and the updates' rows with their bytes. */
interface Round {
  spec: StudySpec;
  host: HostedStrategy;
  global: Uint8Array;
  updates: TestUpdate[];
  metadata: Record<string, string>;
}

/** The new version through fit-aggregate's choice of path (streamed for an elementwise strategy). */
function aggregate(r: Round, sources?: ByteSource[]): Promise<Uint8Array> {
  const updates = r.updates.map((u, i) => ({ row: u, source: sources?.[i] ?? bytesSource(u.weights!) }));
  return collect(aggregateRound({ spec: r.spec, host: r.host, round: 1, global: bytesSource(r.global), updates, asked: r.updates.length, metadata: r.metadata }));
}

function round(s: StudySpec, sites: number, opts: { castTo?: DType } = {}): Round {
  const global = encodeSafetensors(randomWeights('global'), { study: 's', round: '0' });
  const updates: TestUpdate[] = [];
  // Site ids out of order, and a count that varies, so sorting and weighting both matter.
  for (let k = 0; k < sites; k++) {
    const w = randomWeights(`site${k}`, AGGREGATED);
    if (opts.castTo) for (const t of Object.values(w)) if ((t.dtype ?? 'F32') === 'F32') t.dtype = opts.castTo;
    const bytes = encodeSafetensors(w, { meta: '{}' });
    updates.push({ task_id: `t${k}`, study_id: 's', round: 1, site_id: `site-${(k * 7) % sites}-${k}`, weights: bytes, digest: digestOf(bytes), size: bytes.length, num_examples: 3 + ((k * 5) % 11), metrics: JSON.stringify({ taskId: `t${k}`, numExamples: 3 }), received_at: 0 });
  }
  return { spec: s, host: hostStrategy(s), global, updates, metadata: { study: 's', round: '1' } };
}

/** The in-memory path: the same round with the streaming capability hidden. */
function inMemory(r: Round): Promise<Uint8Array> {
  const { elementwise: _hidden, ...host } = r.host;
  return aggregate({ ...r, host: host as HostedStrategy });
}

const eq = (a: Uint8Array, b: Uint8Array) => assert.ok(Buffer.from(a).equals(Buffer.from(b)), 'streamed and in-memory versions differ');

test('FedAvg streamed equals the in-memory aggregate byte for byte: 1 to 9 sites, examples and equal weighting', async () => {
  for (const weighting of ['examples', 'equal']) {
    for (const sites of [1, 2, 3, 4, 5, 8, 9]) {
      const r = round(spec('FedAvg', { strategy: { name: 'FedAvg', params: { weighting } } }), sites);
      assert.ok(r.host.elementwise, 'FedAvg streams');
      eq(await aggregate(r), await inMemory(r));
    }
  }
});

test('every elementwise strategy streams to the same bytes, whatever the slice size', async () => {
  for (const name of ['FedProx', 'Median', 'TrimmedMean']) {
    const r = round(spec(name, name === 'TrimmedMean' ? { strategy: { name, params: { beta: 0.2 } } } : {}), 6);
    const want = await inMemory(r);
    const rules = rulesOf(r.spec, Object.keys(decodeSafetensors(r.global).weights));
    for (const sliceBytes of [4, 12, 40, 1 << 20]) {
      const chunks: Uint8Array[] = [];
      const updates = r.updates.map((u) => ({ siteId: u.site_id, numExamples: u.num_examples, source: bytesSource(u.weights!) }));
      for await (const c of streamAggregate({ global: bytesSource(r.global), rules, updates, elementwise: r.host.elementwise!, metadata: r.metadata, sliceBytes })) chunks.push(c);
      eq(Buffer.concat(chunks), want);
    }
  }
});

test('from blobs to a blob: updates read by range from the store, the version written with putStream', async () => {
  const r = round(spec('FedAvg'), 5);
  const blobs = new MemoryBlobStore();
  await fromBlobsToBlob(r, blobs);
});

test('from files: each update read into two reused buffers (slices of any size, every strategy), bit-identical', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-stream-agg-'));
  try {
    const blobs = new FileBlobStore(join(dir, 'blobs'));
    for (const name of ['FedAvg', 'Median']) {
      const r = round(spec(name), 6);
      for (const sliceBytes of [4, 12, 64, 1 << 20]) await fromBlobsToBlob(r, blobs, sliceBytes);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function fromBlobsToBlob(r: Round, blobs: BlobStore, sliceBytes = 64) {
  const global = await blobs.put(r.global);
  const updates = await Promise.all(r.updates.map(async (u) => ({ siteId: u.site_id, numExamples: u.num_examples, source: await blobSource(blobs, (await blobs.put(u.weights!)).digest) })));
  const rules = rulesOf(r.spec, Object.keys(decodeSafetensors(r.global).weights));
  const info = await blobs.putStream(streamAggregate({ global: await blobSource(blobs, global.digest), rules, updates, elementwise: r.host.elementwise!, metadata: r.metadata, sliceBytes }));
  eq(await blobs.readAll(info.digest), await inMemory(r));
  // Rows that keep only the digest: each update read by range from the blob store.
  const rows = r.updates.map((u) => ({ ...u, weights: null, digest: digestOf(u.weights!) }));
  eq(await aggregate({ ...r, updates: rows }, await Promise.all(rows.map((u) => blobSource(blobs, u.digest)))), await inMemory(r));
}

const digestOf = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('local and skipped tensors carry over from the global model; the aggregated ones change', async () => {
  const r = round(spec('FedAvg'), 3);
  const before = decodeSafetensors(r.global).weights, after = decodeSafetensors(await aggregate(r)).weights;
  for (const k of ['bn.running_mean', 'bn.num_batches_tracked', 'frozen.embed']) assert.deepEqual(after[k]!.data, before[k]!.data, k);
  for (const k of AGGREGATED.filter((k) => k !== 'empty')) assert.notDeepEqual(after[k]!.data, before[k]!.data, k);
  assert.deepEqual(after['empty']!.shape, [0, 3]);
  assert.equal(after['__proto__']!.dtype, 'F16');
  assert.equal(after['head.weight']!.dtype, 'BF16');
});

test('a wrong update is refused naming the site and the tensor; a non-finite mean names the tensor and index', async () => {
  const r = round(spec('FedAvg'), 3);
  const bad = decodeSafetensors(r.updates[1]!.weights!).weights;
  bad['conv.bias'] = tensor([8], new Float32Array(8));
  const rows = r.updates.map((u, i) => (i === 1 ? { ...u, weights: encodeSafetensors(bad) } : u));
  await assert.rejects(aggregate({ ...r, updates: rows }), new RegExp(`site "${r.updates[1]!.site_id}": tensor "conv.bias" has shape \\[8\\], expected \\[7\\]`));
  const nan = decodeSafetensors(r.updates[0]!.weights!).weights;
  nan['conv.weight']!.data[4] = Number.NaN;
  const rows2 = r.updates.map((u, i) => (i === 0 ? { ...u, weights: encodeSafetensors(nan) } : u));
  await assert.rejects(aggregate({ ...r, updates: rows2 }), /aggregated model: tensor "conv.weight" is not finite at index 4/);
  await assert.rejects(inMemory({ ...r, updates: rows2 }), /aggregated model: tensor "conv.weight" is not finite at index 4/);
});

test('F16 and BF16 transport: accumulated in float32 or wider, within the rounding bound of the dtype', async () => {
  const s32 = spec('FedAvg');
  const exact = decodeSafetensors(await aggregate(round(s32, 5))).weights;
  for (const [dtype, unit] of [['F16', 2 ** -11], ['BF16', 2 ** -8]] as const) {
    const s = spec('FedAvg', { transport: { updateDtype: dtype } });
    const r = round(s, 5, { castTo: dtype });
    const got = decodeSafetensors(await aggregate(r)).weights;
    assert.equal(got['conv.weight']!.dtype, undefined, 'the model stays F32');
    // Each value is rounded once (relative error ≤ unit); a weighted mean of such values is off by at most unit·max|y|
    // (|y| < 2 here), plus the float32 rounding of the result.
    let worst = 0;
    for (const k of ['conv.weight', 'conv.bias']) {
      const a = got[k]!.data, b = exact[k]!.data;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    }
    assert.ok(worst <= 2 * unit + 2 ** -22, `${dtype}: worst error ${worst} over the bound ${2 * unit}`);
    assert.ok(worst > 0, `${dtype}: the transport must actually round`);
    // The in-memory path (a strategy that cannot stream) accepts the same transport.
    const fedadam = spec('FedAdam', { transport: { updateDtype: dtype } });
    await assert.doesNotReject(aggregate({ ...r, spec: fedadam, host: hostStrategy(fedadam) }));
  }
  // Without the transport option an F16 update of an F32 tensor is refused.
  const r = round(s32, 3, { castTo: 'F16' });
  await assert.rejects(aggregate(r), /tensor "conv.bias" is F16, expected F32/);
});

test('creation refuses what cannot work: transport under SecAgg+ or DP; every strategy, DP included, streams a big model', () => {
  const dp = { level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 1 } as const;
  assert.match(modelSpecProblems(spec('FedAvg', { transport: { updateDtype: 'F16' }, privacy: { secagg: {} } })).join(';'), /\/transport\/updateDtype: SecAgg\+ sends each update masked as integers/);
  assert.match(modelSpecProblems(spec('FedAvg', { transport: { updateDtype: 'BF16' }, privacy: { dp } })).join(';'), /\/transport\/updateDtype: under differential privacy/);
  assert.deepEqual(modelSpecProblems(spec('FedAvg', { transport: { updateDtype: 'F16' } })), []);
  const big = IN_MEMORY_AGGREGATION_MAX_BYTES + 1;
  for (const name of ['FedAvg', 'FedProx', 'Median', 'TrimmedMean', 'Krum', 'FedAdam', 'FedAvgM', 'Cyclic']) assert.equal(aggregationSizeProblem(spec(name), big), undefined, name);
  // Client-level DP-FedAvg streams its central-noise aggregate (stream-dp.ts).
  assert.equal(aggregationSizeProblem(spec('FedAvg', { privacy: { dp } }), big), undefined);
  // SecAgg+ over a plain mean unmasks block by block at any size; over a client-level DP sum or a server optimiser, in memory.
  assert.equal(aggregationSizeProblem(spec('FedAvg', { privacy: { secagg: {} } }), big), undefined);
  assert.equal(aggregationSizeProblem(spec('FedProx', { privacy: { secagg: {} } }), big), undefined);
  assert.match(aggregationSizeProblem(spec('FedAvg', { privacy: { dp, secagg: {} } }), big) ?? '', /SecAgg\+ over client-level differential privacy unmasks the whole sum in memory/);
  assert.match(aggregationSizeProblem(spec('FedAdam', { privacy: { secagg: {} } }), big) ?? '', /SecAgg\+ over FedAdam unmasks the whole sum in memory.*use FedAvg or FedProx/);
  assert.equal(aggregationSizeProblem(spec('Cyclic'), IN_MEMORY_AGGREGATION_MAX_BYTES), undefined);
});

test('SecAgg+ takes a model above the former one-request limit (16.5M values); a masked input is bounded by maxUpdateBytes, naming it and the remedy', () => {
  const values = (63 * 1024 * 1024) / 4 + 1; // the former SECAGG_MAX_MASKED_BYTES / 4 + 1
  const model = (extra: Partial<StudySpec>, rules: StudySpec['tensorRules']) => ({ ...spec('FedAvg', { privacy: { secagg: {} }, ...extra }), tensorRules: rules } as StudySpec);
  const bytes = encodeSafetensors(mapWeights(['big', 'head'], (k) => tensor(k === 'big' ? [values] : [2], new Float32Array(k === 'big' ? values : 2))));
  assert.doesNotThrow(() => checkInitialWeights(model({}, []), bytes));
  const limit = 32 * 1024 * 1024;
  assert.throws(() => checkInitialWeights(model({ maxUpdateBytes: limit }, []), bytes), (e: unknown) => e instanceof ModelProblem && new RegExp(`/privacy/secagg: the model aggregates 16515075 values.*maxUpdateBytes, ${limit} bytes: raise /maxUpdateBytes, or mark large tensors local or skip`).test((e as Error).message));
  // The same model with its large tensor kept at each site: only the head is masked.
  assert.doesNotThrow(() => checkInitialWeights(model({ maxUpdateBytes: limit }, [{ match: 'big', rule: 'local' }]), bytes));
});

test('the sum runs in site-id order whatever the arrival order, as the in-memory path sums (cancellation shows the order)', async () => {
  // Left to right over a, b, c: (1e20 + 1) − 1e20 = 0, (1 − 1e20) + 1e20 = 0, (−1e20 + 1e20) + 1 = 1; any other order differs.
  const values: Record<string, number[]> = { a: [1e20, 1, -1e20], b: [1, -1e20, 1e20], c: [-1e20, 1e20, 1] };
  const s = { ...spec('FedAvg', { strategy: { name: 'FedAvg', params: { weighting: 'equal' } } }), tensorRules: [] } as StudySpec;
  const one = (d: number[]) => mapWeights(['x'], () => tensor([3], new Float32Array(d)));
  const updates: TestUpdate[] = ['c', 'a', 'b'].map((id) => {
    const bytes = encodeSafetensors(one(values[id]!));
    return { task_id: id, study_id: 's', round: 1, site_id: id, weights: bytes, digest: digestOf(bytes), size: bytes.length, num_examples: 5, metrics: JSON.stringify({ taskId: id, numExamples: 5 }), received_at: 0 };
  });
  const r: Round = { spec: s, host: hostStrategy(s), global: encodeSafetensors(one([0, 0, 0])), updates, metadata: {} };
  const streamed = await aggregate(r);
  eq(streamed, await inMemory(r));
  assert.deepEqual([...decodeSafetensors(streamed).weights['x']!.data], [0, 0, Math.fround(1 / 3)]);
});

test('slices shrink with the number of updates so that their buffers stay within SLICE_BUFFERS_BYTES (never below MIN_SLICE_BYTES)', () => {
  assert.equal(sliceBytesFor(4), DEFAULT_SLICE_BYTES, 'a few large updates: 4 MiB slices');
  for (const n of [9, 100, 1000]) {
    const b = sliceBytesFor(n);
    assert.ok(b % 4 === 0 && b >= MIN_SLICE_BYTES && b <= DEFAULT_SLICE_BYTES);
    assert.ok(2 * n * b <= SLICE_BUFFERS_BYTES || b === MIN_SLICE_BYTES, `${n} updates: ${b}-byte slices`);
  }
  assert.equal(sliceBytesFor(100), 335_544);
  assert.equal(sliceBytesFor(100_000), MIN_SLICE_BYTES);
  assert.equal(sliceBytesFor(100, 12), 12, 'a slice size asked for is kept');
});
