/**
 * Client-level DP-FedAvg, the asynchronous FedBuff fold and Cyclic streamed from the blobs against their in-memory
 * paths: the same new version byte for byte (the same seeded noise draw where the function takes its noise source;
 * through the round's own path, where the noise is the production generator, with noise 0), slices that cut tensors
 * anywhere, every dtype and per-tensor rules; the noise itself checked for its spread.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AsyncSpec, StudySpec } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor, type Weights } from '../protocol/tensors.js';
import type { UpdateRow } from '../store/store.js';
import { createRng } from '../learning/rng.js';
import { CryptoNormal } from '../privacy/noise.js';
import { dpFedAvgAggregate, updateDelta } from '../privacy/dpfedavg.js';
import { aggregateRound, aggregationPath, collect } from './fit-aggregate.js';
import { hostStrategy, type HostedStrategy } from './strategy-host.js';
import { clientLevelDp } from './privacy.js';
import { blobSource, bytesSource, type ByteSource } from './stream-aggregate.js';
import { FileBlobStore } from '../store/blobs/file-blobs.js';
import { streamClientDp } from './stream-dp.js';
import { streamAsyncFold } from './stream-async-fold.js';
import { foldBuffer } from './async-fold.js';
import { aggregatePart, mergeAggregate, rulesOf } from './study-model.js';
import { MIXED_AGGREGATED, MIXED_LAYOUT, MIXED_RULES } from '../testing/mixed-layout.js';

const seed = (s: string) => createHash('sha256').update(s).digest();
const dp = (noiseMultiplier: number, clipNorm = 1) => ({ level: 'client', epsilon: 5, delta: 1e-5, clipNorm, noiseMultiplier } as const);

function spec(strategy: string, extra: Partial<StudySpec> = {}): StudySpec {
  return {
    name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: strategy }, rounds: 2,
    fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: MIXED_RULES, ...extra,
  } as StudySpec;
}

/** Weights of the mixed layout; `near` gives values near that model's (a site's training step of size `scale`). */
function weights(name: string, opts: { only?: readonly string[]; near?: Weights; scale?: number } = {}): Weights {
  const rng = createRng(11, name);
  const layout = MIXED_LAYOUT.filter((t) => !opts.only || opts.only.includes(t.name));
  return mapWeights(layout.map((t) => t.name), (k) => {
    const t = layout.find((x) => x.name === k)!;
    const n = t.shape.reduce((a, b) => a * b, 1), d = new Float32Array(n), base = opts.near?.[k]?.data;
    for (let i = 0; i < n; i++) d[i] = t.dtype === 'I64' ? Math.floor(rng.next() * 100) : (base ? base[i]! : 0) + (rng.next() - 0.5) * 4 * (opts.scale ?? 1);
    // Through the codec, so the values are the ones the tensor's dtype holds (as a site's upload would be).
    return tensor(t.shape, d, t.dtype);
  });
}
const roundTrip = (w: Weights, meta: Record<string, string> = {}) => encodeSafetensors(w, meta);

/** Updates at varied distances from `global`, some inside the clip norm and some far outside. */
function updatesNear(global: Uint8Array, n: number, scales: number[]): { row: UpdateRow; bytes: Uint8Array }[] {
  const g = decodeSafetensors(global).weights;
  return Array.from({ length: n }, (_, k) => {
    const bytes = roundTrip(weights(`u${k}`, { only: MIXED_AGGREGATED, near: g, scale: scales[k % scales.length]! }), { meta: '{}' });
    // Site ids not in sorted order: DP-FedAvg sums in the round's order, as the in-memory path does.
    const site = `site-${(k * 7) % n}-${k}`;
    return { bytes, row: { task_id: `t${k}`, study_id: 's', round: 1, site_id: site, digest: 'x', size: bytes.length, num_examples: 3 + k, metrics: JSON.stringify({ taskId: `t${k}`, numExamples: 3 + k }), received_at: 0 } };
  });
}

/** Sources over files (read into the fold's reused buffers) for each of `bytes`, and a cleanup. */
async function fileSources(bytes: Uint8Array[]): Promise<{ sources: ByteSource[]; done: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'setu-stream-dp-'));
  const blobs = new FileBlobStore(join(dir, 'blobs'));
  const sources = await Promise.all(bytes.map(async (b) => blobSource(blobs, (await blobs.put(b)).digest)));
  return { sources, done: () => rmSync(dir, { recursive: true, force: true }) };
}

const eq = (a: Uint8Array, b: Uint8Array, what = 'streamed and in-memory versions differ') => assert.ok(Buffer.from(a).equals(Buffer.from(b)), what);

function run(s: StudySpec, host: HostedStrategy, global: Uint8Array, ups: { row: UpdateRow; bytes: Uint8Array }[], asked: number) {
  const r = { spec: s, host, round: 1, global: bytesSource(global), updates: ups.map((u) => ({ row: u.row, source: bytesSource(u.bytes) })), asked, metadata: { study: 's', round: '1' } };
  return { path: aggregationPath(r), bytes: collect(aggregateRound(r)) };
}

test('client-level DP streamed equals dpFedAvgAggregate for the same seeded noise draw, whatever the slice size', async () => {
  const global = roundTrip(weights('g'), { study: 's', round: '0' });
  const model = decodeSafetensors(global).weights;
  const s = spec('FedAvg', { privacy: { dp: dp(1.3) } });
  const rules = rulesOf(s, Object.keys(model));
  const g = aggregatePart(model, rules);
  const ups = updatesNear(global, 5, [0.001, 1, 0.01, 3]);
  const cfg = { clipNorm: 1, noiseMultiplier: 1.3, mode: 'central' as const, clientsPerRound: 6 };
  const deltas = ups.map((u) => updateDelta(decodeSafetensors(u.bytes).weights, g));
  const want = encodeSafetensors(mergeAggregate(model, dpFedAvgAggregate(g, deltas, cfg, new CryptoNormal(seed('dp'))), rules), { study: 's', round: '1' });
  const files = await fileSources([global, ...ups.map((u) => u.bytes)]);
  try {
    for (const fromFiles of [false, true]) {
      for (const sliceBytes of [4, 12, 44, 1 << 20]) {
        const got = await collect(streamClientDp({
          global: fromFiles ? files.sources[0]! : bytesSource(global), rules, dp: cfg, clientsPerRound: 6, normal: new CryptoNormal(seed('dp')), metadata: { study: 's', round: '1' }, sliceBytes,
          updates: ups.map((u, k) => ({ siteId: u.row.site_id, numExamples: u.row.num_examples, source: fromFiles ? files.sources[k + 1]! : bytesSource(u.bytes) })),
        }));
        eq(got, want, `slices of ${sliceBytes} bytes${fromFiles ? ', from files' : ''}`);
      }
    }
  } finally {
    files.done();
  }
});

test('a DP-FedAvg round streams through fit-aggregate and equals its in-memory path (noise 0); the path is recorded', async () => {
  const s = spec('FedAvg', { privacy: { dp: dp(0) } });
  const global = roundTrip(weights('g2'), { study: 's', round: '0' });
  const ups = updatesNear(global, 4, [2, 0.002, 5]);
  const host = clientLevelDp(hostStrategy(s), s);
  const { clientDp: _hidden, ...memory } = host;
  const streamed = run(s, host, global, ups, 5), inMemory = run(s, memory as HostedStrategy, global, ups, 5);
  assert.equal(streamed.path, 'stream');
  assert.equal(inMemory.path, 'memory');
  eq(await streamed.bytes, await inMemory.bytes);
  // A site's clipped contribution moves the mean by at most C/m.
  const g = decodeSafetensors(global).weights, next = decodeSafetensors(await streamed.bytes).weights;
  const one = run(s, host, global, [ups[0]!], 5);
  const moved = decodeSafetensors(await one.bytes).weights;
  let sq = 0;
  for (const k of ['conv.weight', 'conv.bias']) for (let i = 0; i < g[k]!.data.length; i++) sq += (moved[k]!.data[i]! - g[k]!.data[i]!) ** 2;
  assert.ok(Math.sqrt(sq) <= 1 / 5 + 1e-6, `one site moved the model by ${Math.sqrt(sq)}`);
  assert.ok(next['bn.running_mean'] && Buffer.from(next['frozen.embed']!.data.buffer).equals(Buffer.from(g['frozen.embed']!.data.buffer)), 'skipped tensors carry over');
  // Two results from one site are refused, as one contribution per site is what bounds its sensitivity.
  await assert.rejects(run(s, host, global, [ups[0]!, { ...ups[1]!, row: { ...ups[1]!.row, site_id: ups[0]!.row.site_id } }], 5).bytes, /sent two results/);
});

test('the streamed DP noise is N(0, (σC/m)²) on every value, from the production generator', async () => {
  const n = 60_000, sigma = 2, clip = 0.5, m = 4;
  const s = { ...spec('FedAvg', { privacy: { dp: dp(sigma, clip) } }), tensorRules: [] } as StudySpec;
  const g = mapWeights(['a', 'b'], (k) => tensor([k === 'a' ? n : 7], new Float32Array(k === 'a' ? n : 7).fill(1)));
  const global = roundTrip(g);
  // Updates equal to the model: every delta is 0, so the new version is the model plus the noise over m.
  const ups = ['x', 'y'].map((site) => ({ bytes: global, row: { task_id: site, study_id: 's', round: 1, site_id: site, digest: 'x', size: global.length, num_examples: 1, metrics: '{"taskId":"t","numExamples":1}', received_at: 0 } }));
  const next = decodeSafetensors(await run(s, clientLevelDp(hostStrategy(s), s), global, ups, m).bytes).weights['a']!.data;
  let s1 = 0, s2 = 0;
  for (let i = 0; i < n; i++) { const z = ((next[i]! - 1) * m) / (sigma * clip); s1 += z; s2 += z * z; }
  assert.ok(Math.abs(s1 / n) < 0.03, `mean ${s1 / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 0.04, `variance ${s2 / n}`);
});

test('Cyclic streams its one site\'s update into the new version, equal to the in-memory copy; two results are refused', async () => {
  const s = spec('Cyclic');
  const global = roundTrip(weights('g3'), { study: 's', round: '0' });
  const ups = updatesNear(global, 2, [1]);
  const host = hostStrategy(s);
  assert.ok(host.takesOne);
  const { takesOne: _hidden, ...memory } = host;
  const streamed = run(s, host, global, [ups[1]!], 1), inMemory = run(s, memory as HostedStrategy, global, [ups[1]!], 1);
  assert.equal(streamed.path, 'stream');
  eq(await streamed.bytes, await inMemory.bytes);
  await assert.rejects(run(s, host, global, ups, 2).bytes, /Cyclic: round 1 expects exactly one result, got 2/);
});

test('the asynchronous fold streamed equals foldBuffer: stale bases, a site twice in a plain buffer, DP with a seeded draw', async () => {
  const s = spec('FedAvg');
  const versions = [0, 1, 2].map((v) => roundTrip(weights(`v${v}`, v ? { near: decodeSafetensors(roundTrip(weights('v0'))).weights, scale: 0.1 } : {}), { study: 's', round: String(v) }));
  const model = decodeSafetensors(versions[2]!).weights;
  const rules = rulesOf(s, Object.keys(model));
  const sources = versions.map((v) => bytesSource(v));
  const cases: { async: AsyncSpec; dp?: boolean; buffer: { site: string; base: number; scale: number; n: number }[] }[] = [
    { async: { bufferSize: 3 }, buffer: [{ site: 'b', base: 1, scale: 0.5, n: 4 }, { site: 'a', base: 2, scale: 0.01, n: 9 }, { site: 'b', base: 0, scale: 2, n: 1 }] },
    { async: { bufferSize: 3, serverLr: 0.7, stalenessWeight: 'hinge', hingeAfter: 0 }, dp: true, buffer: [{ site: 'c', base: 0, scale: 3, n: 4 }, { site: 'a', base: 2, scale: 0.001, n: 9 }, { site: 'b', base: 1, scale: 0.5, n: 2 }] },
  ] as never;
  for (const c of cases) {
    const items = c.buffer.map((b, k) => ({ ...b, bytes: roundTrip(weights(`up${k}${b.site}`, { only: MIXED_AGGREGATED, near: decodeSafetensors(versions[b.base]!).weights, scale: b.scale })) }));
    const dpOf = (name: string) => (c.dp ? { dp: { clipNorm: 1, noiseMultiplier: 0.8, normal: new CryptoNormal(seed(name)) } } : {});
    const want = encodeSafetensors(mergeAggregate(model, foldBuffer(aggregatePart(model, rules), items.map((i) => ({
      base: aggregatePart(decodeSafetensors(versions[i.base]!).weights, rules), local: decodeSafetensors(i.bytes).weights, numExamples: i.n, staleness: 2 - i.base,
    })), { async: c.async, ...dpOf('fold') }), rules), { study: 's', round: '3' });
    const files = await fileSources([...versions, ...items.map((i) => i.bytes)]);
    try {
      for (const fromFiles of [false, true]) {
        for (const sliceBytes of [8, 100, 1 << 20]) {
          const got = await collect(streamAsyncFold({
            current: fromFiles ? files.sources[2]! : sources[2]!, rules, async: c.async, ...dpOf('fold'), metadata: { study: 's', round: '3' }, sliceBytes,
            buffer: items.map((i, k) => ({ siteId: i.site, source: fromFiles ? files.sources[3 + k]! : bytesSource(i.bytes), base: fromFiles ? files.sources[i.base]! : sources[i.base]!, numExamples: i.n, staleness: 2 - i.base })),
          }));
          eq(got, want, `${c.dp ? 'DP' : 'plain'} fold, slices of ${sliceBytes} bytes${fromFiles ? ', from files' : ''}`);
        }
      }
    } finally {
      files.done();
    }
  }
});
