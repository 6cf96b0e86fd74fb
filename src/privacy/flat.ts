/**
 * Weights ↔ one flat vector, for secure aggregation (which works on vectors). The order is the tensor names
 * sorted, so both ends agree regardless of record insertion order (safetensors sorts names on the wire too).
 */
import { hasTensor, mapWeights, tensorLike, type Weights } from '../protocol/tensors.js';

export function flatLength(w: Weights): number {
  let n = 0;
  for (const t of Object.values(w)) n += t.data.length;
  return n;
}

/** Concatenates (a − b) if `minus` is given, else a, in sorted-name order. */
export function flatten(a: Weights, minus?: Weights): Float32Array {
  const out = new Float32Array(flatLength(a));
  let off = 0;
  for (const k of Object.keys(a).sort()) {
    const d = a[k]!.data;
    const m = minus && hasTensor(minus, k) ? minus[k]!.data : undefined;
    if (minus && (!m || m.length !== d.length)) throw new Error(`flatten: tensor "${k}" is missing or misshaped in the reference`);
    if (m) for (let i = 0; i < d.length; i++) out[off + i] = d[i]! - m[i]!;
    else out.set(d, off);
    off += d.length;
  }
  return out;
}

/** Builds Weights with `like`'s layout from `flat` (+ `plus` element-wise if given). */
export function unflatten(flat: ArrayLike<number>, like: Weights, plus?: Weights): Weights {
  let off = 0;
  const out = mapWeights(Object.keys(like).sort(), (k) => {
    const t = like[k]!, n = t.data.length, d = new Float32Array(n), p = plus && hasTensor(plus, k) ? plus[k]!.data : undefined;
    for (let i = 0; i < n; i++) d[i] = flat[off + i]! + (p ? p[i]! : 0);
    off += n;
    return tensorLike(t, d);
  });
  if (off !== flat.length) throw new Error(`unflatten: ${flat.length} values for a layout of ${off}`);
  return out;
}
