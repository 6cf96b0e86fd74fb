/**
 * Streaming aggregation: the next model version of a round, computed slice by slice from the stored update blobs,
 * so the coordinator's memory per open round is about one slice per site plus the output slice, whatever the number
 * of sites and the model's size, and no update is ever decoded whole.
 *
 * For a strategy whose aggregate is elementwise (learning/strategy.ts `Elementwise`: FedAvg, FedProx, SCAFFOLD's
 * server step, Median, TrimmedMean):
 *   1. read each blob's safetensors header (small) and check every update against the model's layout;
 *   2. write the new version's header (encodeSafetensorsHeader: the bytes encodeSafetensors would write);
 *   3. walk the model's tensors in the file's order; an `aggregate` tensor is read in slices of a few MiB, the same
 *      element range from every update, reduced into one float64 slice in site-id order (the arithmetic of
 *      MeanAggregator / coordinateWise, so the result is bit-identical to the in-memory path), rounded to the
 *      model's dtype and written; a `local` or `skip` tensor's bytes are copied from the previous version.
 * The output is an async sequence of chunks for BlobStore.putStream (or any writer). An update may carry an F32
 * tensor as F16 or BF16 when the study's transport says so (`transportDtypes`); it is accumulated in float64 all
 * the same.
 */
import {
  SafetensorsError, decodeValues, encodeSafetensorsHeader, encodeValues, readSafetensorsHeaderOf, safetensorsHeaderBytes, type SafetensorsHeader, type TensorEntry,
} from '../protocol/safetensors.js';
import { DTYPE_BYTES, roundToDtype, type DType, type ResolvedRules } from '../protocol/tensors.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { Elementwise } from '../learning/strategy.js';
import { compareIds } from '../learning/sampling.js';
import { onePass } from '../learning/strategies/weighted-sum.js';
import { indexOfNonFinite } from '../protocol/finite.js';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes of a stored file, read by range (a blob, or bytes already in memory). */
export interface ByteSource {
  readonly size: number;
  read(start: number, end: number): Promise<Uint8Array>;
  /**
   * Fills `target` from `position` (the range inside the file), where the source can without allocating: the
   * aggregation's slices are read into buffers it reuses. `close` lets go of what that held (it reopens if read again).
   */
  readInto?(target: Uint8Array, position: number): Promise<void>;
  close?(): Promise<void>;
}

export function bytesSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.length, read: async (start, end) => bytes.subarray(start, Math.min(end, bytes.length)) };
}

/**
 * A blob this small is read whole, once, when its source opens: its header and its slices are then memory reads.
 * Read by range, each of a tiny update's three or four reads was a statement on PostgreSQL, one after another for
 * every site at commit (5,044 blob reads in a 1,000-site round, 32 s of summed wait: `setu bench live --store
 * postgres`); the sources open concurrently (engine.ts). At most this many bytes per update stay in memory.
 */
export const WHOLE_SOURCE_BYTES = 16 * 1024;

/** `recordedSize`: the size its row records (an update's), so that a small one costs one read, not two. */
export async function blobSource(blobs: BlobStore, digest: string, recordedSize?: number): Promise<ByteSource> {
  const size = recordedSize !== undefined && recordedSize <= WHOLE_SOURCE_BYTES ? recordedSize : await blobs.size(digest);
  if (size === undefined) throw new Error(`blob ${digest} is missing from the blob store`);
  if (size <= WHOLE_SOURCE_BYTES) {
    const bytes = await blobs.readAll(digest);
    if (bytes.length !== size) throw new Error(`blob ${digest} holds ${bytes.length} bytes, not the ${size} its row records`);
    return bytesSource(bytes);
  }
  const openReader = blobs.openReader?.bind(blobs);
  if (!openReader) return { size, read: (start, end) => blobs.read(digest, start, end) };
  // One open file for all of a round's slices, not an open, a stat and a close per read.
  let reader: ReturnType<typeof openReader> | undefined;
  return {
    size,
    read: (start, end) => blobs.read(digest, start, end),
    readInto: async (target, position) => (await (reader ??= openReader(digest))).readInto(target, position),
    close: async () => {
      const r = reader;
      reader = undefined;
      if (r) await (await r).close();
    },
  };
}

/** The safetensors header of a stored file, reading only its first bytes. */
export async function readSourceHeader(src: ByteSource, what: string): Promise<SafetensorsHeader> {
  try {
    const span = safetensorsHeaderBytes(await src.read(0, 8));
    return readSafetensorsHeaderOf(await src.read(0, span), src.size);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new Error(`${what}: ${e.message}`);
    throw e;
  }
}

export interface StreamUpdate {
  siteId: string;
  numExamples: number;
  source: ByteSource;
}

export interface StreamAggregateArgs {
  /** The round's global model (the previous version), whole: every tensor, local and skipped ones too. */
  global: ByteSource;
  rules: ResolvedRules;
  /** The round's updates (their `aggregate` tensors), any order: they are reduced in site-id order. */
  updates: readonly StreamUpdate[];
  elementwise: Elementwise;
  /** The new version's safetensors metadata. */
  metadata: Record<string, string>;
  /** Dtypes an update may use for an F32 tensor besides F32 (the study's transport: F16, BF16). */
  transportDtypes?: readonly DType[];
  /** Bytes of float32 per slice (default: sliceBytesFor the number of updates, at most 4 MiB). */
  sliceBytes?: number;
  /**
   * A server optimiser's step (stream-server-opt.ts): called on each slice of the mean (checked finite), in file
   * order, before the result is rounded to the tensor's dtype; what it returns is written instead.
   */
  afterMean?: (tensor: TensorEntry, start: number, mean: Float32Array) => Promise<Float32Array>;
}

export const DEFAULT_SLICE_BYTES = 4 * 1024 * 1024;
/**
 * What the slice buffers of all of a round's updates hold together (two per update: one read while the other is
 * reduced). A fixed 4 MiB slice made the round's memory sites × 8 MiB: 100 sites of a 1M-parameter MLP peaked at
 * 633 MiB against 238 MiB for 10 (`setu bench live --model mlp --params 1000000`). Slices shrink with the number
 * of updates instead, to no less than MIN_SLICE_BYTES; the sums are the same whatever the slicing.
 */
export const SLICE_BUFFERS_BYTES = 64 * 1024 * 1024;
export const MIN_SLICE_BYTES = 16 * 1024;

/** Bytes of float32 per slice for `updates` updates read side by side: `asked` when given (tests), else within the budget. */
export function sliceBytesFor(updates: number, asked?: number): number {
  if (asked !== undefined) return asked;
  const fit = Math.floor(SLICE_BUFFERS_BYTES / (2 * Math.max(1, updates)) / 4) * 4;
  return Math.max(MIN_SLICE_BYTES, Math.min(DEFAULT_SLICE_BYTES, fit));
}
const FLT_MAX = 3.4028234663852886e38;

/**
 * The global model's header and the round's updates sorted by site id, each with its header checked against the
 * model (checkUpdate): what every streamed reduction opens first. One result per site and a positive example count.
 */
export async function openUpdates(a: Pick<StreamAggregateArgs, 'global' | 'updates' | 'rules' | 'transportDtypes'>) {
  if (a.updates.length === 0) throw new Error('aggregation: no updates to aggregate');
  const model = await readSourceHeader(a.global, 'the global model');
  const byName = new Map(model.tensors.map((t) => [t.name, t]));
  const sorted = [...a.updates].sort((x, y) => compareIds(x.siteId, y.siteId));
  const seen = new Set<string>();
  const ups = await Promise.all(sorted.map(async (u) => {
    if (seen.has(u.siteId)) throw new Error(`site "${u.siteId}" sent two results for the same round`);
    seen.add(u.siteId);
    if (!(Number.isInteger(u.numExamples) && u.numExamples > 0)) throw new Error(`site "${u.siteId}": numExamples must be a positive integer, got ${u.numExamples}`);
    const header = await readSourceHeader(u.source, `the update of site "${u.siteId}"`);
    return { ...u, header, tensors: checkUpdate(header, byName, a.rules, a.transportDtypes ?? [], u.siteId) };
  }));
  return { model, ups };
}

/** The new model version's safetensors, header first, then the tensors' bytes slice by slice. */
export async function* streamAggregate(a: StreamAggregateArgs): AsyncGenerator<Uint8Array> {
  const { model, ups } = await openUpdates(a);
  const weights = ups.map((u) => weightOf(u, a.elementwise));
  const total = weights.reduce((s, w) => s + w, 0);
  // One reciprocal, as WeightedSum.mean scales by (bit-identical results).
  const inv = 1 / total;
  const aggregated = new Set(a.rules.aggregate);
  // The file's order: encodeSafetensors writes tensors sorted by name.
  const entries = [...model.tensors].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const head = encodeSafetensorsHeader(entries, a.metadata);
  yield head.bytes;
  const sliceElems = Math.max(1, Math.floor(sliceBytesFor(ups.length, a.sliceBytes) / 4));
  const col = new Float64Array(ups.length);
  // Two slices' buffers per update, reused for every slice of every tensor (sized for the largest slice needed).
  const largest = Math.min(sliceElems, entries.reduce((m, t) => (aggregated.has(t.name) ? Math.max(m, (t.end - t.begin) / DTYPE_BYTES[t.dtype]) : m), 1));
  const buffers: [Float32Array[], Float32Array[]] = [ups.map(() => new Float32Array(largest)), ups.map(() => new Float32Array(largest))];
  try {
    yield* tensors();
  } finally {
    await Promise.all(ups.map((u) => u.source.close?.()));
  }
  async function* tensors(): AsyncGenerator<Uint8Array> {
    for (const t of entries) {
      const n = (t.end - t.begin) / DTYPE_BYTES[t.dtype];
      if (!aggregated.has(t.name)) {
        // Local and skipped tensors carry over unchanged, byte for byte.
        const base = model.dataStart + t.begin;
        for (let at = 0; at < t.end - t.begin; at += sliceElems * 4) yield new Uint8Array(await a.global.read(base + at, base + Math.min(t.end - t.begin, at + sliceElems * 4)));
        continue;
      }
      // The reads of the next slice run (in libuv's threads) while this one is reduced, into the other of two
      // buffers per update (float32 read in place; a narrowed transport dtype decoded from its bytes).
      const readSlice = (i0: number, i1: number, slot: Float32Array[]) => {
        const p = Promise.all(ups.map(async (u, k) => {
          const e = u.tensors.get(t.name)!, size = DTYPE_BYTES[e.dtype], base = u.header.dataStart + e.begin;
          if (u.source.readInto && e.dtype === 'F32' && HOST_LITTLE_ENDIAN) {
            const into = slot[k]!.subarray(0, i1 - i0);
            await u.source.readInto(new Uint8Array(into.buffer, into.byteOffset, into.byteLength), base + i0 * size);
            return into;
          }
          return decodeValues(await u.source.read(base + i0 * size, base + i1 * size), e.dtype, t.name);
        }));
        p.catch(() => {}); // awaited below; a failure while this slice is reduced must not go unhandled
        return p;
      };
      let next = readSlice(0, Math.min(n, sliceElems), buffers[0]);
      for (let i0 = 0, s = 0; i0 < n; i0 += sliceElems, s ^= 1) {
        const i1 = Math.min(n, i0 + sliceElems), len = i1 - i0;
        const slices = await next;
        if (i1 < n) next = readSlice(i1, Math.min(n, i1 + sliceElems), buffers[s ^ 1]);
        let o: Float32Array = new Float32Array(len);
        let flag: number;
        // The in-memory kernel itself (WeightedSum's), on this slice of every update: the same sums in the same order.
        if (a.elementwise.kind === 'mean') flag = onePass(slices, weights, inv, o);
        else flag = coordinateSlice(slices, a.elementwise.reduce, col, o);
        if (!(flag <= FLT_MAX)) {
          const i = indexOfNonFinite(o);
          if (i >= 0) throw new Error(`aggregated model: tensor "${t.name}" is not finite at index ${i0 + i}`);
        }
        if (a.afterMean) o = await a.afterMean(t, i0, o);
        // Past the check above every float32 value is finite; rounding to F16 (or BF16, or an integer) may overflow.
        if (t.dtype !== 'F32') {
          roundToDtype({ shape: [len], data: o, dtype: t.dtype });
          const bad = indexOfNonFinite(o);
          if (bad >= 0) throw new Error(`aggregated model: tensor "${t.name}" has a non-finite value (${o[bad]}) at index ${i0 + bad} after rounding to its dtype`);
        }
        yield t.dtype === 'F32' && HOST_LITTLE_ENDIAN ? new Uint8Array(o.buffer) : encodeValues(o, t.dtype, t.name);
      }
    }
  }
}

/** The update's tensors by name, after checking they are the model's aggregated ones (shape; dtype or its transport). */
export function checkUpdate(h: SafetensorsHeader, model: Map<string, TensorEntry>, rules: ResolvedRules, transport: readonly DType[], siteId: string): Map<string, TensorEntry> {
  const got = new Map(h.tensors.map((t) => [t.name, t]));
  const who = `the update of site "${siteId}"`;
  for (const k of rules.aggregate) {
    const want = model.get(k), e = got.get(k);
    if (!want) throw new Error(`the global model lacks tensor "${k}"`);
    if (!e) throw new Error(`${who}: missing tensor "${k}"`);
    if (e.shape.length !== want.shape.length || e.shape.some((d, i) => d !== want.shape[i])) throw new Error(`${who}: tensor "${k}" has shape [${e.shape}], expected [${want.shape}]`);
    if (e.dtype !== want.dtype && !(want.dtype === 'F32' && transport.includes(e.dtype))) throw new Error(`${who}: tensor "${k}" is ${e.dtype}, expected ${want.dtype}`);
  }
  const agg = new Set(rules.aggregate);
  for (const k of got.keys()) if (!agg.has(k)) throw new Error(`${who}: unexpected tensor "${k}"`);
  return got;
}

/** A site's weight in the mean (as MeanAggregator's weightOf); 1 for coordinate-wise strategies (unused). */
function weightOf(u: StreamUpdate, e: Elementwise): number {
  return e.kind === 'mean' && e.weighting === 'examples' ? u.numExamples : 1;
}

/** o[i] = reduce(the sites' values of element i, sorted), as coordinateWise computes it. */
function coordinateSlice(ds: Float32Array[], reduce: (sorted: Float64Array, sites: number) => number, col: Float64Array, o: Float32Array): number {
  let flag = 0;
  for (let i = 0; i < o.length; i++) {
    for (let k = 0; k < ds.length; k++) col[k] = ds[k]![i]!;
    col.sort();
    const v = (o[i] = reduce(col, ds.length));
    flag += Math.abs(v);
  }
  return flag;
}
