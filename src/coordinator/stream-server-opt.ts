/**
 * A server optimiser's round (FedAvgM, FedAdam, FedYogi, FedAdagrad: learning/strategy.ts `ServerStep`) streamed from
 * the update blobs, so a model of any size costs the coordinator a few slices, never the model several times:
 *   1. the weighted mean y of the sites' models, slice by slice, exactly as FedAvg's (stream-aggregate.ts);
 *   2. on each slice of y, the strategy's own `apply` with the global model's slice x and the previous moments'
 *      slices (zero before the first streamed round), giving the new model's slice and the new moments' slices;
 *   3. the new model goes out as the aggregation's chunks (BlobStore.putStream in the engine); each new moment is
 *      written at the same time as a blob of its own, a safetensors file of the aggregated tensors in F32
 *      (`momentsHeader`), named by digest in the strategy state that the engine commits with the new version.
 * The in-memory strategy calls the same `apply` on whole tensors, and the mean is the same kernel in the same order,
 * so both paths give the same bits (stream-server-opt.test.ts). Moments are written before the last chunk of the
 * model is handed over: when the engine commits the version, they are durable. A restarted coordinator reads them
 * back by digest, so the next round continues from exactly the saved moments.
 */
import { decodeSafetensors, decodeValues, encodeSafetensors, encodeSafetensorsHeader, type SafetensorsHeader, type TensorEntry } from '../protocol/safetensors.js';
import { DTYPE_BYTES, emptyWeights, setTensor, type Weights } from '../protocol/tensors.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { ServerStep, StrategyState } from '../learning/strategy.js';
import { blobSource, bytesSource, DEFAULT_SLICE_BYTES, readSourceHeader, streamAggregate, type ByteSource, type StreamAggregateArgs } from './stream-aggregate.js';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface StreamServerStepArgs extends Omit<StreamAggregateArgs, 'elementwise'> {
  step: ServerStep;
  /** Where the new moments are written. */
  blobs: BlobStore;
  /** The previous moments by name (files as `momentsHeader` describes); absent before the first round: zeros. */
  moments?: Record<string, ByteSource>;
  /** Receives the new moments' digests by name once they are stored (before the last model chunk is yielded). */
  saved: (digests: Record<string, string>) => void;
}

/** The layout of a moment file: the aggregated tensors, sorted by name, in F32. */
export function momentEntries(model: SafetensorsHeader, aggregate: readonly string[]): { name: string; dtype: 'F32'; shape: number[] }[] {
  const agg = new Set(aggregate);
  return model.tensors.filter((t) => agg.has(t.name)).sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0)).map((t) => ({ name: t.name, dtype: 'F32' as const, shape: [...t.shape] }));
}

/** The new model version's safetensors, in chunks; the new moments go to their blobs meanwhile. */
export async function* streamServerStep(a: StreamServerStepArgs): AsyncGenerator<Uint8Array> {
  const model = await readSourceHeader(a.global, 'the global model');
  const entries = momentEntries(model, a.rules.aggregate);
  const prev = a.moments ? await Promise.all(a.step.moments.map((name) => openMoment(a.moments![name], name, entries))) : undefined;
  // One writer per moment, fed slice by slice in the order the mean's slices come (the file order of `entries`).
  const writers = a.step.moments.map(() => chunkWriter(a.blobs));
  // Slices come for tensors with elements only (an empty one has none).
  const sized = entries.map((e) => ({ name: e.name, n: e.shape.reduce((p, d) => p * d, 1) })).filter((e) => e.n > 0);
  const order = new Map(sized.map((e, i) => [e.name, i]));
  let at = { tensor: 0, element: 0 };
  // The slices the mean will ask for next are known (its slice size, the tensors' order), so the global model's and
  // the moments' slice for the next one is read while this one is stepped, and the new moments' writes of this one
  // go on while the next is read and summed (awaited before the next push).
  const sliceElems = Math.max(1, Math.floor((a.sliceBytes ?? DEFAULT_SLICE_BYTES) / 4));
  const inputs = (tensor: number, i0: number, len: number) => {
    const name = sized[tensor]!.name;
    const p = Promise.all([globalSlice(a.global, model, name, i0, len), ...(prev ? prev.map((m) => m.slice(name, i0, len)) : [])]);
    p.catch(() => {}); // awaited when its slice comes
    return { tensor, i0, len, p };
  };
  let ahead: ReturnType<typeof inputs> | undefined;
  let writing: Promise<unknown> = Promise.resolve();
  try {
    const header = encodeSafetensorsHeader(entries).bytes;
    await Promise.all(writers.map((w) => w.push(header)));
    const onSlice = async (t: TensorEntry, i0: number, y: Float32Array): Promise<Float32Array> => {
      // The mean walks the aggregated tensors in this same order; the writers rely on it.
      if (order.get(t.name) !== at.tensor || i0 !== at.element) throw new Error(`server step: slice of "${t.name}" at ${i0} out of order`);
      const len = y.length, n = sized[at.tensor]!.n;
      const mine = ahead && ahead.tensor === at.tensor && ahead.i0 === i0 && ahead.len === len ? ahead : inputs(at.tensor, i0, len);
      at = i0 + len >= n ? { tensor: at.tensor + 1, element: 0 } : { tensor: at.tensor, element: i0 + len };
      ahead = at.tensor < sized.length ? inputs(at.tensor, at.element, Math.min(sliceElems, sized[at.tensor]!.n - at.element)) : undefined;
      const [x, ...read] = await mine.p;
      const ms = prev ? read : a.step.moments.map(() => new Float32Array(len));
      const o = new Float32Array(len);
      a.step.apply(x!, y, ms, o);
      for (let i = 0; i < len; i++) if (!Number.isFinite(o[i]!)) throw new Error(`aggregated model: tensor "${t.name}" is not finite at index ${i0 + i}`);
      await writing;
      writing = Promise.all(writers.map((w, k) => w.push(f32Bytes(ms[k]!))));
      writing.catch(() => {}); // awaited at the next slice or the end
      return o;
    };
    const chunks = streamAggregate({ ...a, elementwise: { kind: 'mean', weighting: a.step.weighting }, afterMean: onSlice });
    let last: Uint8Array | undefined;
    for await (const c of chunks) {
      if (last) yield last;
      last = c;
    }
    // Every slice has been through the step: the moments are complete; store them before the model's last chunk.
    if (at.tensor !== sized.length) throw new Error('server step: the mean ended before every tensor was stepped');
    await writing;
    for (const w of writers) w.end();
    const digests = await Promise.all(writers.map((w) => w.done));
    a.saved(Object.fromEntries(a.step.moments.map((name, k) => [name, digests[k]!.digest])));
    if (last) yield last;
  } finally {
    for (const w of writers) w.abort(new Error('server step: aggregation stopped'));
    await Promise.all(writers.map((w) => w.done.catch(() => undefined)));
    await ahead?.p.catch(() => undefined);
    await Promise.all([...(prev ?? []).map((p) => p.close()), a.global.close?.()]);
  }
}

/** The previous moments a round starts from: the blobs the streamed step saved, or the in-memory strategy's tensors. */
export async function previousMoments(blobs: BlobStore, step: ServerStep, momentBlobs: Record<string, string> | undefined, state: StrategyState): Promise<Record<string, ByteSource> | undefined> {
  if (momentBlobs) {
    const out: Record<string, ByteSource> = Object.create(null) as Record<string, ByteSource>;
    for (const name of step.moments) {
      const d = momentBlobs[name];
      if (typeof d !== 'string') throw new Error(`strategy state: moment "${name}" has no blob`);
      out[name] = await blobSource(blobs, d);
    }
    return out;
  }
  // State the in-memory path left (`m.<tensor>`, `v.<tensor>`: a model it admitted, of at most 64 MiB).
  if (Object.keys(state.tensors).length === 0) return undefined;
  const out: Record<string, ByteSource> = Object.create(null) as Record<string, ByteSource>;
  for (const name of step.moments) {
    const w = emptyWeights();
    for (const [k, t] of Object.entries(state.tensors)) if (k.startsWith(`${name}.`)) setTensor(w, k.slice(name.length + 1), { shape: t.shape, data: t.data });
    out[name] = bytesSource(encodeSafetensors(w));
  }
  return out;
}

/** Moments saved in blobs as the in-memory strategy's tensors (`m.<tensor>`…), for a round aggregated in memory. */
export async function momentsAsTensors(blobs: BlobStore, momentBlobs: Record<string, string>): Promise<Weights> {
  const out = emptyWeights();
  for (const [name, digest] of Object.entries(momentBlobs)) {
    for (const [k, t] of Object.entries(decodeSafetensors(await blobs.readAll(digest)).weights)) setTensor(out, `${name}.${k}`, t);
  }
  return out;
}

interface OpenMoment {
  slice(tensor: string, i0: number, len: number): Promise<Float32Array>;
  close(): Promise<void>;
}

async function openMoment(src: ByteSource | undefined, name: string, entries: ReturnType<typeof momentEntries>): Promise<OpenMoment> {
  if (!src) throw new Error(`strategy state: moment "${name}" is missing`);
  const h = await readSourceHeader(src, `the saved moment "${name}"`);
  const byName = new Map(h.tensors.map((t) => [t.name, t]));
  for (const e of entries) {
    const got = byName.get(e.name);
    if (!got || got.dtype !== 'F32' || got.shape.length !== e.shape.length || got.shape.some((d, i) => d !== e.shape[i])) {
      throw new Error(`the saved moment "${name}" does not match the model's tensor "${e.name}" [${e.shape}]`);
    }
  }
  return {
    async slice(tensor, i0, len) {
      const t = byName.get(tensor)!, base = h.dataStart + t.begin + i0 * 4;
      if (src.readInto && HOST_LITTLE_ENDIAN) {
        const out = new Float32Array(len);
        await src.readInto(new Uint8Array(out.buffer), base);
        return out;
      }
      return decodeValues(await src.read(base, base + len * 4), 'F32', tensor);
    },
    close: async () => src.close?.(),
  };
}

/** Elements [i0, i0 + len) of the global model's tensor `name`, as float32 values (the dtype the model stores). */
async function globalSlice(global: ByteSource, model: SafetensorsHeader, name: string, i0: number, len: number): Promise<Float32Array> {
  const e = model.tensors.find((m) => m.name === name)!, size = DTYPE_BYTES[e.dtype], base = model.dataStart + e.begin + i0 * size;
  if (global.readInto && e.dtype === 'F32' && HOST_LITTLE_ENDIAN) {
    const out = new Float32Array(len);
    await global.readInto(new Uint8Array(out.buffer), base);
    return out;
  }
  return decodeValues(await global.read(base, base + len * size), e.dtype, name);
}

function f32Bytes(v: Float32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const out = new Uint8Array(v.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) dv.setFloat32(i * 4, v[i]!, true);
  return out;
}

/**
 * A blob written from chunks pushed one at a time (BlobStore.putStream pulls them): `push` resolves once the store
 * has written the chunk and asks for the next, so at most one chunk per writer waits in memory. `abort` (after a
 * failure elsewhere) makes the stream throw, so the store discards what it had and `done` rejects.
 */
function chunkWriter(blobs: BlobStore): { push(c: Uint8Array): Promise<void>; end(): void; abort(e: Error): void; done: Promise<{ digest: string; size: number }> } {
  let pending: { chunk?: Uint8Array; end?: boolean } | undefined;
  let taken: (() => void) | undefined;
  let wake: (() => void) | undefined;
  let aborted: Error | undefined;
  let failed: unknown;
  let finished = false;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      while (!pending && !aborted) await new Promise<void>((r) => (wake = r));
      if (aborted) throw aborted;
      const item = pending!, t = taken;
      pending = taken = undefined;
      if (item.end) {
        t?.();
        return;
      }
      yield item.chunk!;
      t?.();
    }
  }
  const done = blobs.putStream(chunks());
  done.then(
    () => void (finished = true),
    (e: unknown) => {
      failed = e;
      finished = true;
      const t = taken;
      taken = undefined;
      t?.(); // a push waiting on a store that failed is let go, and rejects
    },
  );
  const offer = (item: NonNullable<typeof pending>): Promise<void> => {
    if (failed) return Promise.reject(failed);
    if (aborted) return Promise.reject(aborted);
    return new Promise<void>((resolve) => {
      pending = item;
      taken = resolve;
      poke();
    }).then(() => {
      if (failed) throw failed;
    });
  };
  return {
    push: (c) => offer({ chunk: c }),
    end: () => void offer({ end: true }).catch(() => undefined),
    abort: (e) => {
      if (finished) return;
      aborted = e;
      poke();
    },
    done,
  };
}
