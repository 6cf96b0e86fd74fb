/**
 * A fold of update deltas into a model, streamed slice by slice from the blobs: what client-level DP-FedAvg
 * (stream-dp.ts) and an asynchronous study's FedBuff fold (stream-async-fold.ts) both compute,
 *
 *   w' = w + η · (Σ_i a_i · clip_C(u_i − b_i) + N(0, std²)) / D
 *
 * with u_i a site's update, b_i the version it trained from (the global model itself in a synchronous round),
 * a_i its weight, D the fixed denominator. Memory is a few slices per update whatever the model's size; no update
 * is ever decoded whole.
 *
 *   pass 1 (only when clipping): each update's delta is read slice by slice, in the model's header order (the order
 *     of the in-memory Weights), and its L2 norm summed in float64 as privacy/clip.ts l2Norm does, so the clip factor
 *     (clipInPlace's (C/‖Δ‖)(1 − 1e−6)) is the same bits;
 *   pass 2: the new version's header, then each tensor in file order: an aggregated one slice by slice, the deltas
 *     recomputed, clipped, weighted and summed in the updates' given order (in float32 or float64, as the in-memory
 *     path sums), the slice's noise drawn at once (NormalSource.fill, the same variates in the same order), the
 *     result rounded to the tensor's dtype and written; a local or skipped tensor's bytes copied from `current`.
 * With the model's tensors stored in name order (as every version Setu writes is), the noise falls on the same
 * elements as in memory, so a seeded source gives the in-memory result bit for bit.
 */
import { DTYPE_BYTES, roundToDtype, type DType, type ResolvedRules } from '../protocol/tensors.js';
import { decodeValues, encodeSafetensorsHeader, encodeValues, type SafetensorsHeader, type TensorEntry } from '../protocol/safetensors.js';
import { fillNormal, type NormalSource } from '../privacy/noise.js';
import { checkUpdate, readSourceHeader, sliceBytesFor, type ByteSource } from './stream-aggregate.js';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const FLT_MAX = 3.4028234663852886e38;

export interface FoldUpdate {
  siteId: string;
  /** The site's update (its `aggregate` tensors). */
  source: ByteSource;
  /** The version it trained from (whole); the same object for updates that share it (read once per slice). */
  base: ByteSource;
  /** a_i: the update's weight in the sum. */
  weight: number;
}

export interface DeltaFoldArgs {
  /** The model the sum is added to, whole: its local and skipped tensors carry over. */
  current: ByteSource;
  rules: ResolvedRules;
  /** In the order they are summed (the in-memory path's order). */
  updates: readonly FoldUpdate[];
  /** Clip each delta to this L2 norm (client-level DP); none: unclipped. */
  clipNorm?: number;
  /** Gaussian noise of this std on the sum, drawn from `normal`. */
  noise?: { std: number; normal: NormalSource };
  /** η and D of the formula above. */
  serverLr: number;
  denominator: number;
  /** The precision of the running sum: the in-memory DP-FedAvg sums into float32, the async fold into float64. */
  sum: 'f32' | 'f64';
  metadata: Record<string, string>;
  transportDtypes?: readonly DType[];
  sliceBytes?: number;
}

type Opened = { source: ByteSource; header: SafetensorsHeader; tensors: Map<string, TensorEntry> };

/** The new version's safetensors, header first, then slice by slice. */
export async function* streamDeltaFold(a: DeltaFoldArgs): AsyncGenerator<Uint8Array> {
  if (a.updates.length === 0) throw new Error('aggregation: no updates to fold');
  if (!(a.denominator > 0) || !Number.isFinite(a.denominator)) throw new Error(`the fold's denominator must be finite and > 0, got ${a.denominator}`);
  if (a.clipNorm !== undefined && !(a.clipNorm > 0 && Number.isFinite(a.clipNorm))) throw new Error(`clip norm must be finite and > 0, got ${a.clipNorm}`);
  const std = a.noise?.std ?? 0;
  if (!(std >= 0) || !Number.isFinite(std)) throw new Error(`noise std must be finite and ≥ 0, got ${std}`);
  const model = await readSourceHeader(a.current, 'the current model');
  const byName = new Map(model.tensors.map((t) => [t.name, t]));
  const transport = a.transportDtypes ?? [];
  const ups: (Opened & { base: Opened; weight: number; siteId: string })[] = [];
  const bases = new Map<ByteSource, Opened>();
  bases.set(a.current, { source: a.current, header: model, tensors: byName });
  for (const u of a.updates) {
    if (!Number.isFinite(u.weight)) throw new Error(`site "${u.siteId}": its weight in the fold must be finite, got ${u.weight}`);
    let base = bases.get(u.base);
    if (!base) {
      const header = await readSourceHeader(u.base, `the version site "${u.siteId}" trained from`);
      const tensors = new Map(header.tensors.map((t) => [t.name, t]));
      for (const k of a.rules.aggregate) {
        const e = tensors.get(k), want = byName.get(k)!;
        if (!e || e.dtype !== want.dtype || e.shape.join() !== want.shape.join()) throw new Error(`the version site "${u.siteId}" trained from lacks tensor "${k}" as [${want.shape}] ${want.dtype}`);
      }
      base = { source: u.base, header, tensors };
      bases.set(u.base, base);
    }
    const header = await readSourceHeader(u.source, `the update of site "${u.siteId}"`);
    ups.push({ siteId: u.siteId, source: u.source, header, tensors: checkUpdate(header, byName, a.rules, transport, u.siteId), base, weight: u.weight });
  }
  const sliceElems = Math.max(1, Math.floor(sliceBytesFor(ups.length + bases.size, a.sliceBytes) / 4));
  // Two slices' buffers per source, reused for every slice (one is read while the other is computed on).
  const largest = Math.min(sliceElems, a.rules.aggregate.reduce((m, k) => { const t = byName.get(k)!; return Math.max(m, (t.end - t.begin) / DTYPE_BYTES[t.dtype]); }, 1));
  const slots = new Map<Opened, [Float32Array, Float32Array]>();
  const slotOf = (o: Opened, j: number): Float32Array => {
    let pair = slots.get(o);
    if (!pair) slots.set(o, (pair = [new Float32Array(largest), new Float32Array(largest)]));
    return pair[j & 1];
  };

  const sources = [...new Set([...ups.map((u) => u.source), ...bases.keys()])];
  try {
    const factors = a.clipNorm === undefined ? ups.map(() => 1) : await clipFactors(a.clipNorm);
    yield* fold(factors);
  } finally {
    await Promise.all(sources.map((s) => s.close?.()));
  }

  /** The values [i0, i1) of tensor `name` in `o` (float32, whatever its stored dtype), read into slot `j` where it can. */
  async function slice(o: Opened, name: string, i0: number, i1: number, j: number): Promise<Float32Array> {
    const e = o.tensors.get(name)!, size = DTYPE_BYTES[e.dtype], at = o.header.dataStart + e.begin;
    if (o.source.readInto && e.dtype === 'F32' && HOST_LITTLE_ENDIAN) {
      const into = slotOf(o, j).subarray(0, i1 - i0);
      await o.source.readInto(new Uint8Array(into.buffer, into.byteOffset, into.byteLength), at + i0 * 4);
      return into;
    }
    return decodeValues(await o.source.read(at + i0 * size, at + i1 * size), e.dtype, name);
  }

  /** Each slice of an aggregated tensor: the bases' and the updates' values (each base read once). */
  async function* slices(t: TensorEntry, withBases: readonly Opened[]): AsyncGenerator<{ i0: number; base: Map<Opened, Float32Array>; up: Float32Array[] }> {
    const n = (t.end - t.begin) / DTYPE_BYTES[t.dtype];
    const read = async (i0: number, j: number) => {
      const i1 = Math.min(n, i0 + sliceElems);
      const [bs, us] = await Promise.all([
        Promise.all(withBases.map(async (b) => [b, await slice(b, t.name, i0, i1, j)] as const)),
        Promise.all(ups.map((u) => slice(u, t.name, i0, i1, j))),
      ]);
      return { i0, base: new Map(bs), up: us };
    };
    // The next slice is read while this one is computed.
    let next = n > 0 ? read(0, 0) : undefined;
    for (let i0 = 0, j = 0; i0 < n; i0 += sliceElems, j++) {
      const cur = await next!;
      next = i0 + sliceElems < n ? read(i0 + sliceElems, j + 1) : undefined;
      next?.catch(() => {}); // awaited on the next turn; a failure meanwhile must not go unhandled
      yield cur;
    }
  }

  /** Pass 1: clipInPlace's factor for each update's delta, from its norm summed in header order. */
  async function clipFactors(clip: number): Promise<number[]> {
    const sq = new Float64Array(ups.length);
    const aggregated = new Set(a.rules.aggregate);
    for (const t of model.tensors) {
      if (!aggregated.has(t.name)) continue;
      // Only the versions the updates trained from (not the current one, unless one did).
      for await (const s of slices(t, [...new Set(ups.map((u) => u.base))])) {
        for (let k = 0; k < ups.length; k++) {
          const l = s.up[k]!, b = s.base.get(ups[k]!.base)!;
          let acc = sq[k]!;
          for (let i = 0; i < l.length; i++) { const d = Math.fround(l[i]! - b[i]!); acc += d * d; }
          sq[k] = acc;
        }
      }
    }
    return ups.map((u, k) => {
      const norm = Math.sqrt(sq[k]!);
      if (!Number.isFinite(norm)) throw new Error(`the update of site "${u.siteId}": cannot clip a vector with non-finite values`);
      return norm > clip ? (clip / norm) * (1 - 1e-6) : 1;
    });
  }

  /** Pass 2: the new version, in file order (encodeSafetensors writes tensors sorted by name). */
  async function* fold(factors: number[]): AsyncGenerator<Uint8Array> {
    const aggregated = new Set(a.rules.aggregate);
    const entries = [...model.tensors].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    yield encodeSafetensorsHeader(entries, a.metadata).bytes;
    const cur = bases.get(a.current)!;
    // The running sum and the noise of one slice, reused (the output slice is fresh: the writer may still hold the last).
    const accAll = a.sum === 'f32' ? new Float32Array(largest) : new Float64Array(largest);
    const noise = new Float64Array(std > 0 ? largest : 0);
    for (const t of entries) {
      if (!aggregated.has(t.name)) {
        const base = model.dataStart + t.begin, len = t.end - t.begin;
        for (let at = 0; at < len; at += sliceElems * 4) yield new Uint8Array(await a.current.read(base + at, base + Math.min(len, at + sliceElems * 4)));
        continue;
      }
      for await (const s of slices(t, [...bases.values()])) {
        const c = s.base.get(cur)!, len = c.length;
        const acc = accAll.subarray(0, len).fill(0);
        for (let k = 0; k < ups.length; k++) {
          const l = s.up[k]!, b = s.base.get(ups[k]!.base)!, f = factors[k]!, w = ups[k]!.weight;
          // The in-memory arithmetic: the delta rounded to float32, clipped in float32, weighted, added.
          if (f === 1) for (let i = 0; i < len; i++) acc[i] = acc[i]! + w * Math.fround(l[i]! - b[i]!);
          else for (let i = 0; i < len; i++) acc[i] = acc[i]! + w * Math.fround(Math.fround(l[i]! - b[i]!) * f);
        }
        if (std > 0) {
          const z = noise.subarray(0, len);
          fillNormal(a.noise!.normal, z);
          for (let i = 0; i < len; i++) acc[i] = acc[i]! + std * z[i]!;
        }
        const o = new Float32Array(len);
        let flag = 0;
        for (let i = 0; i < len; i++) { const v = (o[i] = c[i]! + (a.serverLr * acc[i]!) / a.denominator); flag += Math.abs(v); }
        if (!(flag <= FLT_MAX)) {
          const i = o.findIndex((v) => !Number.isFinite(v));
          if (i >= 0) throw new Error(`aggregated model: tensor "${t.name}" is not finite at index ${s.i0 + i}`);
        }
        if (t.dtype !== 'F32') {
          roundToDtype({ shape: [len], data: o, dtype: t.dtype });
          const bad = o.findIndex((v) => !Number.isFinite(v));
          if (bad >= 0) throw new Error(`aggregated model: tensor "${t.name}" has a non-finite value (${o[bad]}) at index ${s.i0 + bad} after rounding to its dtype`);
        }
        yield t.dtype === 'F32' && HOST_LITTLE_ENDIAN ? new Uint8Array(o.buffer) : encodeValues(o, t.dtype, t.name);
      }
    }
  }
}
