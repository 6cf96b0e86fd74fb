/**
 * `setu bench secagg --coordinator`: the coordinator's side of a SecAgg+ round for a large model, from blobs on
 * disk, against the one-block path measured in the same run.
 *
 * The sites' part runs first, in this process and untimed: each masks a random update (the protocol's clients,
 * with a site dropped after sharing when there are more than 3, so pairwise masks are recovered too) and its
 * masked input is written to a file blob store, as routes/secagg.ts writes it. Then, timed:
 *   streamed = stream-secagg.ts: the new model version unmasked block by block from the blobs into a new blob
 *   one-block = the whole masked sum in memory, unmasked in one block (what the session held before, O(model))
 * with the peak resident memory of this process during each (sampled), the masked bytes read per second, and the
 * load average. The two results must agree (the streamed version's values equal global + the one-block mean).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { table } from '../table.js';
import { createRng } from '../../learning/rng.js';
import { FileBlobStore } from '../../store/blobs/file-blobs.js';
import { encodeSafetensors, decodeSafetensors } from '../../protocol/safetensors.js';
import { mapWeights, tensor } from '../../protocol/tensors.js';
import { recommendedDegree } from '../../privacy/secagg/graph.js';
import { makeConfig } from '../../privacy/secagg/server.js';
import { runSecAggRoundStored } from '../../privacy/secagg/driver.js';
import { blobSource } from '../../coordinator/stream-aggregate.js';
import { DEFAULT_UNMASK_BLOCK_WORDS, streamSecAggVersion, unmaskedSum } from '../../coordinator/stream-secagg.js';
import { FedAvg } from '../../learning/strategies/fedavg.js';

export interface CoordinatorRow {
  sites: number;
  survivors: number;
  params: number;
  blockWords: number;
  maskedBytes: number;
  streamedS: number;
  oneBlockS: number;
  ratio: number;
  streamedPeakRssMiB: number;
  oneBlockPeakRssMiB: number;
  baseRssMiB: number;
  streamedMiBps: number;
  maxAbsDiff: number;
}

const MiB = 1024 * 1024;

/** Runs `f`, sampling this process's RSS every 20 ms: its duration (s) and the peak seen (bytes). */
async function measured<T>(f: () => Promise<T>): Promise<{ value: T; s: number; peak: number }> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage.rss()); }, 20);
  const t0 = performance.now();
  try {
    const value = await f();
    peak = Math.max(peak, process.memoryUsage.rss());
    return { value, s: (performance.now() - t0) / 1000, peak };
  } finally {
    clearInterval(timer);
  }
}

const gc = () => (globalThis as { gc?: () => void }).gc?.();

export async function coordinatorRound(params: number, sites: number, blockWords = DEFAULT_UNMASK_BLOCK_WORDS): Promise<CoordinatorRow> {
  const root = mkdtempSync(join(tmpdir(), 'setu-bench-secagg-'));
  try {
    const blobs = new FileBlobStore(root);
    const rng = createRng(3, 'global');
    const g = new Float32Array(params);
    for (let i = 0; i < params; i++) g[i] = rng.next() - 0.5;
    const global = await blobs.put(encodeSafetensors(mapWeights(['w'], () => tensor([params], g)), { round: '0' }));
    const { degree, threshold } = recommendedDegree(sites);
    const config = makeConfig({ numClients: sites, vectorLength: params, degree, threshold, clipRange: 1, weightScale: 200 });
    const digests = new Map<number, Promise<string>>();
    const examples = (i: number) => 100 + ((i * 37) % 97);
    const { unmasking } = runSecAggRoundStored({
      config,
      update: (i) => {
        const r = createRng(5, `site${i}`);
        return Float32Array.from({ length: params }, () => (r.next() - 0.5) * 0.2);
      },
      examples,
      ...(sites > 3 ? { dropBeforeMasking: [sites - 1] } : {}),
      keep: (m) => digests.set(m.clientId, blobs.put(new Uint8Array(m.masked.buffer, m.masked.byteOffset, m.masked.byteLength)).then((b) => b.digest)),
    });
    const survivorDigests = await Promise.all(unmasking.survivors.map((c) => digests.get(c)!));
    const numExamples = unmasking.survivors.reduce((a, c) => a + examples(c), 0);
    digests.clear();
    gc();
    await new Promise((r) => setTimeout(r, 100));
    const baseRss = process.memoryUsage.rss();
    const sources = () => Promise.all(survivorDigests.map((d) => blobSource(blobs, d)));
    const fedavg = FedAvg.fromParams({ weighting: 'examples' }).elementwise;
    const streamed = await measured(async () => blobs.putStream(streamSecAggVersion({
      global: await blobSource(blobs, global.digest), rules: { aggregate: ['w'], local: [], skip: [] }, unmasking, masked: await sources(),
      elementwise: fedavg, numExamples, metadata: { round: '1' }, blockWords,
    })));
    gc();
    await new Promise((r) => setTimeout(r, 100));
    const oneBlock = await measured(async () => {
      const src = await sources();
      try {
        return await unmaskedSum({ masked: src, unmasking, blockWords: params });
      } finally {
        await Promise.all(src.map((s) => s.close?.()));
      }
    });
    // Check: the streamed version's values are global + the one-block mean (FedAvg of the one result is itself).
    const out = decodeSafetensors(await blobs.readAll(streamed.value.digest)).weights['w']!.data;
    let diff = 0;
    for (let i = 0; i < params; i++) diff = Math.max(diff, Math.abs(out[i]! - Math.fround(oneBlock.value.mean[i]! + g[i]!)));
    if (diff !== 0) throw new Error(`the streamed SecAgg+ version differs from the one-block result by ${diff}`);
    const maskedBytes = unmasking.survivors.length * unmasking.words * 4;
    return {
      sites, survivors: unmasking.survivors.length, params, blockWords, maskedBytes,
      streamedS: streamed.s, oneBlockS: oneBlock.s, ratio: streamed.s / oneBlock.s,
      streamedPeakRssMiB: streamed.peak / MiB, oneBlockPeakRssMiB: oneBlock.peak / MiB, baseRssMiB: baseRss / MiB,
      streamedMiBps: maskedBytes / MiB / streamed.s, maxAbsDiff: diff,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export async function coordinatorBench(params: number[], sites: number[], blockWords: number | undefined, json: boolean): Promise<number> {
  const rows: CoordinatorRow[] = [];
  const before = loadavg();
  for (const P of params) for (const n of sites) rows.push(await coordinatorRound(P, n, blockWords));
  const after = loadavg();
  const la = (x: number[]) => x.map((v) => Number(v.toFixed(2)));
  if (json) {
    console.log(JSON.stringify({ bench: 'secagg', mode: 'coordinator', node: process.version, loadAverage: { before: la(before), after: la(after) }, rows }, null, 2));
    return 0;
  }
  console.log('SecAgg+ on the coordinator: the new version unmasked block by block from masked blobs (streamed) vs the whole masked sum in memory (one block)');
  console.log(table(
    ['sites', 'survivors', 'params', 'block words', 'streamed s', 'one-block s', 'ratio', 'streamed MiB/s', 'RSS base MiB', 'peak RSS streamed', 'peak RSS one-block'],
    rows.map((r) => [r.sites, r.survivors, r.params, r.blockWords, r.streamedS.toFixed(2), r.oneBlockS.toFixed(2), r.ratio.toFixed(2) + '×', r.streamedMiBps.toFixed(0), r.baseRssMiB.toFixed(0), r.streamedPeakRssMiB.toFixed(0), r.oneBlockPeakRssMiB.toFixed(0)]),
  ));
  console.log(`load average before ${la(before).join(' ')}, after ${la(after).join(' ')}`);
  return 0;
}
