/**
 * Krum and Multi-Krum (learning/strategy.ts `RobustSelection`) streamed from the update blobs:
 *   1. the squared distance between every pair of updates, summed slice by slice: the same element range of every
 *      update is read (n slices in memory, read ahead like stream-aggregate.ts), and each pair's float64 running sum
 *      goes on exactly as learning/weights.ts `sqDist` adds it, element after element in the order of the first
 *      update's tensors, so the n² distances equal the in-memory ones bit for bit;
 *   2. the scores and the choice with the in-memory strategy's own functions (krum.ts `scoresFromDistances`,
 *      `selectLowest`: ties to the smaller site id);
 *   3. the chosen updates' weighted mean streamed by stream-aggregate.ts, as FedAvg's (Krum: one update, whose mean
 *      with weight 1 is its own values).
 * Memory: O(n × slice) plus n² numbers, whatever the model's size; each update is read twice (the distances, then
 * the mean of those chosen).
 */
import { decodeValues, type SafetensorsHeader, type TensorEntry } from '../protocol/safetensors.js';
import { DTYPE_BYTES } from '../protocol/tensors.js';
import type { RobustSelection } from '../learning/strategy.js';
import { checkKrumSites, scoresFromDistances, selectLowest } from '../learning/strategies/krum.js';
import { openUpdates, sliceBytesFor, streamAggregate, type StreamAggregateArgs, type StreamUpdate } from './stream-aggregate.js';

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface StreamKrumArgs extends Omit<StreamAggregateArgs, 'elementwise'> {
  selection: RobustSelection;
}

/** The new model version's safetensors, in chunks: the mean of the updates Krum (or Multi-Krum) selects. */
export async function* streamKrum(a: StreamKrumArgs): AsyncGenerator<Uint8Array> {
  const { sorted, distances } = await pairwiseDistances(a);
  checkKrumSites(sorted.length, a.selection.byzantine);
  const scores = scoresFromDistances(distances, a.selection.byzantine);
  const chosen = selectLowest(scores, a.selection.select(sorted.length)).sort((x, y) => x - y).map((i) => sorted[i]!);
  yield* streamAggregate({ ...a, updates: chosen, elementwise: { kind: 'mean', weighting: a.selection.weighting } });
}

/** The updates sorted by site id and the symmetric matrix of their squared distances (float64), by slices. */
export async function pairwiseDistances(a: Omit<StreamKrumArgs, 'selection' | 'metadata'>): Promise<{ sorted: StreamUpdate[]; distances: number[][] }> {
  const { ups } = await openUpdates(a);
  const k = ups.length;
  const d: number[][] = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const sliceElems = Math.max(1, Math.floor(sliceBytesFor(ups.length, a.sliceBytes) / 4));
  // sqDist(y_i, y_j) (i < j) walks y_i's tensors in its own order; updates written by another tool may order them
  // differently, so each distinct order is one pass over the pairs whose first update has it (one pass in practice).
  const orderOf = (h: SafetensorsHeader) => h.tensors.map((t) => t.name);
  const groups = new Map<string, number[]>();
  ups.forEach((u, i) => {
    const key = JSON.stringify(orderOf(u.header));
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  try {
    for (const [key, firsts] of groups) {
      const lo = Math.min(...firsts);
      const rows = firsts.filter((i) => i < k - 1);
      if (!rows.length) continue;
      for (const name of JSON.parse(key) as string[]) {
        const n = (ups[0]!.tensors.get(name)!.end - ups[0]!.tensors.get(name)!.begin) / DTYPE_BYTES[ups[0]!.tensors.get(name)!.dtype];
        const readSlice = (i0: number, i1: number) => {
          const p = Promise.all(ups.map(async (u, idx) => (idx < lo ? undefined : read(u.source, u.header, u.tensors.get(name)!, i0, i1))));
          p.catch(() => {}); // awaited below
          return p;
        };
        let next = readSlice(0, Math.min(n, sliceElems));
        for (let i0 = 0; i0 < n; i0 += sliceElems) {
          const i1 = Math.min(n, i0 + sliceElems);
          const slices = await next;
          if (i1 < n) next = readSlice(i1, Math.min(n, i1 + sliceElems));
          for (const i of rows) {
            const x = slices[i]!;
            for (let j = i + 1; j < k; j++) d[i]![j] = sqDistInto(d[i]![j]!, x, slices[j]!);
          }
        }
      }
    }
  } finally {
    await Promise.all(ups.map((u) => u.source.close?.()));
  }
  for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) d[i]![j] = d[j]![i]!;
  return { sorted: ups, distances: d };
}

/** s + Σ (x[e] − y[e])², added element after element as sqDist does. */
function sqDistInto(s: number, x: Float32Array, y: Float32Array): number {
  for (let e = 0; e < x.length; e++) {
    const v = x[e]! - y[e]!;
    s += v * v;
  }
  return s;
}

/** Elements [i0, i1) of an update's tensor as float32 values (an F16/BF16 transport decoded). */
async function read(src: StreamUpdate['source'], h: SafetensorsHeader, e: TensorEntry, i0: number, i1: number): Promise<Float32Array> {
  const size = DTYPE_BYTES[e.dtype], base = h.dataStart + e.begin;
  if (src.readInto && e.dtype === 'F32' && HOST_LITTLE_ENDIAN) {
    const out = new Float32Array(i1 - i0);
    await src.readInto(new Uint8Array(out.buffer), base + i0 * size);
    return out;
  }
  return decodeValues(await src.read(base + i0 * size, base + i1 * size), e.dtype, e.name);
}
