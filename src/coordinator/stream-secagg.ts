/**
 * The new model version of a SecAgg+ round, unmasked block by block from the survivors' masked inputs in the blob
 * store (routes/secagg.ts writes each one there as it arrives), so the coordinator's memory is a block per site
 * plus the output block, whatever the model's size, and no whole vector (masked or not) is ever held:
 *
 *   1. the weight element (last word of a weighted round's input) is summed and unmasked first: the mean divides by it;
 *   2. the new version's header is written (the global model's layout, as encodeSafetensors writes it);
 *   3. the tensors are walked in the file's order, which is the flat vector's (both sort the names); an aggregated
 *      tensor goes in blocks of `blockWords`: the same word range of every masked input is added mod 2^32, the
 *      masks of that range are removed (Unmasking.unmask seeks each mask stream to the block), the block is
 *      dequantised into the mean update, added to the global values and reduced by the study's mean kernel, as
 *      the in-memory path does with the one result standing for all sites (secagg.ts secAggPlus), so the result is
 *      bit-identical to it; a local or skipped tensor's bytes are copied from the previous version.
 * Only for a strategy stack whose aggregate is a mean (FedAvg, FedProx): others get the unmasked sum in memory.
 */
import { decodeValues, encodeSafetensorsHeader, encodeValues } from '../protocol/safetensors.js';
import { DTYPE_BYTES, roundToDtype, type ResolvedRules } from '../protocol/tensors.js';
import type { Elementwise } from '../learning/strategy.js';
import { onePass } from '../learning/strategies/weighted-sum.js';
import { dequantiseSum, dequantiseUnitSum } from '../privacy/secagg/quantize.js';
import { addVector } from '../privacy/secagg/crypto.js';
import type { Unmasking } from '../privacy/secagg/server.js';
import { readSourceHeader, type ByteSource } from './stream-aggregate.js';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Words per block (1 Mi words = 4 MiB per site and for the output): a test sets a few to cross many blocks. */
export const DEFAULT_UNMASK_BLOCK_WORDS = 1 << 20;

export interface SecAggVersionArgs {
  /** The round's global model (the previous version), whole. */
  global: ByteSource;
  rules: ResolvedRules;
  unmasking: Unmasking;
  /** The survivors' masked inputs: `unmasking.words` little-endian uint32 words each, any order (the sum is mod 2^32). */
  masked: readonly ByteSource[];
  /** The study's mean (the hosted strategy's elementwise kernel, kind 'mean'). */
  elementwise: Elementwise;
  /** Σ examples of the survivors (the one result's example count in the in-memory path). */
  numExamples: number;
  metadata: Record<string, string>;
  blockWords?: number;
}

/** Reads words [from, from + into.length) of `src` into `into`. */
async function readWords(src: ByteSource, from: number, into: Int32Array): Promise<void> {
  const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
  if (src.readInto && HOST_LITTLE_ENDIAN) return src.readInto(bytes, from * 4);
  const got = await src.read(from * 4, (from + into.length) * 4);
  if (got.length !== bytes.length) throw new Error(`a masked input ends at byte ${from * 4 + got.length}, before word ${from + into.length}`);
  bytes.set(got);
}

/** Words [from, from + acc.length) of the masked sum, unmasked, in `acc` (`bufs`: one scratch block per input). */
async function unmaskedBlock(a: Pick<SecAggVersionArgs, 'masked' | 'unmasking'>, from: number, acc: Int32Array, bufs: Int32Array[]): Promise<void> {
  const len = acc.length;
  const parts = bufs.map((b) => b.subarray(0, len));
  await Promise.all(a.masked.map((src, k) => readWords(src, from, parts[k]!)));
  acc.fill(0);
  for (const p of parts) addVector(acc, p);
  a.unmasking.unmask(acc, from);
}

/** The survivors' weight sum: the unmasked weight element of a weighted round, else the number of survivors. */
export async function unmaskedWeightSum(a: Pick<SecAggVersionArgs, 'masked' | 'unmasking'>): Promise<number> {
  const cfg = a.unmasking.config;
  if (!(cfg.weightScale > 0)) return a.unmasking.count;
  const acc = new Int32Array(1);
  await unmaskedBlock(a, cfg.vectorLength, acc, a.masked.map(() => new Int32Array(1)));
  const w = dequantiseUnitSum(acc[0]!, cfg.quantBits, cfg.modBits);
  if (!(w > 0)) throw new Error('SecAgg+: the weights of the survivors sum to zero');
  return w;
}

/**
 * The whole unmasked sum Σ wᵢΔᵢ and the mean update as float32 (what SecAggServer.finish gives), read from the
 * blobs: for the strategies that aggregate in memory (models up to the in-memory bound).
 */
export async function unmaskedSum(a: Pick<SecAggVersionArgs, 'masked' | 'unmasking' | 'blockWords'>): Promise<{ sum: Float64Array; mean: Float32Array; weightSum: number }> {
  const cfg = a.unmasking.config, n = cfg.vectorLength;
  const weightSum = await unmaskedWeightSum(a);
  const block = Math.max(1, Math.min(a.blockWords ?? DEFAULT_UNMASK_BLOCK_WORDS, n));
  const bufs = a.masked.map(() => new Int32Array(block));
  const acc = new Int32Array(block);
  const sum = new Float64Array(n), mean = new Float32Array(n);
  for (let i0 = 0; i0 < n; i0 += block) {
    const len = Math.min(block, n - i0), blockAcc = acc.subarray(0, len);
    await unmaskedBlock(a, i0, blockAcc, bufs);
    sum.set(dequantiseSum(blockAcc, a.unmasking.count, cfg.clipRange, cfg.quantBits, cfg.modBits), i0);
  }
  for (let i = 0; i < n; i++) mean[i] = sum[i]! / weightSum;
  return { sum, mean, weightSum };
}

/** The new model version's safetensors, header first, then the tensors' bytes block by block. */
export async function* streamSecAggVersion(a: SecAggVersionArgs): AsyncGenerator<Uint8Array> {
  const cfg = a.unmasking.config;
  if (a.elementwise.kind !== 'mean') throw new Error('a SecAgg+ round streams only under a mean strategy');
  if (a.masked.length !== a.unmasking.count) throw new Error(`SecAgg+: ${a.masked.length} masked inputs for ${a.unmasking.count} survivors`);
  const model = await readSourceHeader(a.global, 'the global model');
  const aggregated = new Set(a.rules.aggregate);
  const entries = [...model.tensors].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const words = entries.reduce((n, t) => (aggregated.has(t.name) ? n + (t.end - t.begin) / DTYPE_BYTES[t.dtype] : n), 0);
  if (words !== cfg.vectorLength) throw new Error(`SecAgg+: the round masked ${cfg.vectorLength} values but the model aggregates ${words}`);
  const weightSum = await unmaskedWeightSum(a);
  // The one result standing for all sites (secagg.ts secAggPlus) and its weight in the study's mean kernel.
  const w = a.elementwise.weighting === 'examples' ? a.numExamples : 1;
  const inv = 1 / w;
  yield encodeSafetensorsHeader(entries, a.metadata).bytes;
  const block = Math.max(1, a.blockWords ?? DEFAULT_UNMASK_BLOCK_WORDS);
  const largest = Math.min(block, Math.max(1, cfg.vectorLength));
  const bufs = a.masked.map(() => new Int32Array(largest));
  const acc = new Int32Array(largest);
  const model32 = new Float32Array(largest);
  let flat = 0; // the flat vector's word of the tensor's first element
  try {
    for (const t of entries) {
      const size = DTYPE_BYTES[t.dtype], n = (t.end - t.begin) / size, base = model.dataStart + t.begin;
      if (!aggregated.has(t.name)) {
        for (let at = 0; at < t.end - t.begin; at += block * 4) yield new Uint8Array(await a.global.read(base + at, base + Math.min(t.end - t.begin, at + block * 4)));
        continue;
      }
      for (let i0 = 0; i0 < n; i0 += block) {
        const len = Math.min(block, n - i0), blockAcc = acc.subarray(0, len);
        const [, g] = await Promise.all([unmaskedBlock(a, flat + i0, blockAcc, bufs), a.global.read(base + i0 * size, base + (i0 + len) * size)]);
        const glob = decodeValues(g, t.dtype, t.name);
        const sum = dequantiseSum(blockAcc, a.unmasking.count, cfg.clipRange, cfg.quantBits, cfg.modBits);
        // unflatten(mean, global, global): the float32 mean plus the global value, rounded to float32.
        const m = model32.subarray(0, len);
        for (let i = 0; i < len; i++) m[i] = Math.fround(sum[i]! / weightSum) + glob[i]!;
        const o = new Float32Array(len);
        onePass([m], [w], inv, o);
        const bad = o.findIndex((v) => !Number.isFinite(v));
        if (bad >= 0) throw new Error(`aggregated model: tensor "${t.name}" is not finite at index ${i0 + bad}`);
        if (t.dtype !== 'F32') {
          roundToDtype({ shape: [len], data: o, dtype: t.dtype });
          const over = o.findIndex((v) => !Number.isFinite(v));
          if (over >= 0) throw new Error(`aggregated model: tensor "${t.name}" has a non-finite value (${o[over]}) at index ${i0 + over} after rounding to its dtype`);
        }
        yield t.dtype === 'F32' && HOST_LITTLE_ENDIAN ? new Uint8Array(o.buffer) : encodeValues(o, t.dtype, t.name);
      }
      flat += n;
    }
  } finally {
    await Promise.all(a.masked.map((s) => s.close?.()));
  }
}
