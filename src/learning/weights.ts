/**
 * Element-wise arithmetic on Weights (named float32 tensors). Functions that take two
 * Weights look tensors up by name and require identical layouts, so a mismatched upload
 * fails loudly instead of mixing parameters.
 */
import { cloneWeights, layoutMismatch, layoutOf, zerosLike, type Weights } from '../protocol/tensors.js';

export { cloneWeights, zerosLike };

export function assertSameLayout(a: Weights, b: Weights, what = 'weights'): void {
  const msg = layoutMismatch(b, layoutOf(a));
  if (msg) throw new Error(`${what}: ${msg}`);
}

/** a − b, as new Weights. */
export function sub(a: Weights, b: Weights): Weights {
  assertSameLayout(a, b, 'sub');
  const out = zerosLike(a);
  for (const k of Object.keys(a)) {
    const x = a[k]!.data, y = b[k]!.data, o = out[k]!.data;
    for (let i = 0; i < x.length; i++) o[i] = x[i]! - y[i]!;
  }
  return out;
}

/** y += alpha · x, in place on y. */
export function axpyInPlace(y: Weights, alpha: number, x: Weights): Weights {
  assertSameLayout(y, x, 'axpy');
  for (const k of Object.keys(y)) {
    const yd = y[k]!.data, xd = x[k]!.data;
    for (let i = 0; i < yd.length; i++) yd[i] = yd[i]! + alpha * xd[i]!;
  }
  return y;
}

/** Sets every value to zero, in place. */
export function fillZero(w: Weights): Weights {
  for (const t of Object.values(w)) t.data.fill(0);
  return w;
}

/** Squared L2 norm over all tensors (float64). */
export function sqNorm(w: Weights): number {
  let s = 0;
  for (const t of Object.values(w)) for (let i = 0; i < t.data.length; i++) s += t.data[i]! * t.data[i]!;
  return s;
}

/** Squared L2 distance (float64). */
export function sqDist(a: Weights, b: Weights): number {
  assertSameLayout(a, b, 'sqDist');
  let s = 0;
  for (const k of Object.keys(a)) {
    const x = a[k]!.data, y = b[k]!.data;
    for (let i = 0; i < x.length; i++) {
      const d = x[i]! - y[i]!;
      s += d * d;
    }
  }
  return s;
}

/** Flattens to one Float32Array in insertion order of `layoutFrom` (default: `w` itself). */
export function flatten(w: Weights, layoutFrom: Weights = w): Float32Array {
  let n = 0;
  for (const t of Object.values(layoutFrom)) n += t.data.length;
  const out = new Float32Array(n);
  let off = 0;
  for (const k of Object.keys(layoutFrom)) {
    const t = w[k];
    if (!t) throw new Error(`flatten: missing tensor "${k}"`);
    out.set(t.data, off);
    off += t.data.length;
  }
  return out;
}

/** Inverse of flatten, shaped like `like`. */
export function unflatten(flat: Float32Array, like: Weights): Weights {
  const out = zerosLike(like);
  let off = 0;
  for (const k of Object.keys(like)) {
    const o = out[k]!.data;
    o.set(flat.subarray(off, off + o.length));
    off += o.length;
  }
  if (off !== flat.length) throw new Error(`unflatten: ${flat.length} values for a layout of ${off}`);
  return out;
}
