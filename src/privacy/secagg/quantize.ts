/**
 * Fixed-point quantisation for secure aggregation. A value x is clamped to [−c, c] and mapped to an integer in
 * [0, 2^Q − 1]: round((x + c) · (2^Q − 1)/(2c)). Sums of up to n such values must not wrap modulo 2^modBits,
 * so Q ≤ modBits − ⌈log2 n⌉ (checked by the config). Dequantising a sum of m values subtracts m·c.
 * The error of one value is at most c/(2^Q − 1) (half a step), of a sum of m values m times that.
 */

export function quantScale(clipRange: number, quantBits: number): number {
  return (2 ** quantBits - 1) / (2 * clipRange);
}

/**
 * Writes the quantised `factor · x` into out[off..). Values outside [−c, c] are clamped; non-finite values
 * refused. (The factor is a client's weight in a weighted round, fused here to avoid a scaled copy.)
 */
export function quantiseInto(x: ArrayLike<number>, clipRange: number, quantBits: number, out: Int32Array, off = 0, factor = 1): void {
  const s = quantScale(clipRange, quantBits), top = 2 ** quantBits - 1;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]! * factor;
    // v − v is NaN exactly for NaN and ±∞ (cheaper than Number.isFinite on this hot path).
    if (v - v !== 0) throw new Error(`cannot quantise non-finite value at index ${i}`);
    const c = v < -clipRange ? -clipRange : v > clipRange ? clipRange : v;
    // (c + clipRange)·s ≥ 0, so truncating after + 0.5 rounds half up, like Math.round.
    let q = ((c + clipRange) * s + 0.5) >>> 0;
    if (q > top) q = top;
    out[off + i] = q | 0; // stored as int32 bits; read back unsigned
  }
}

/** Dequantises a sum of `count` quantised values held as uint32 modulo 2^modBits. */
export function dequantiseSum(sum: Int32Array, count: number, clipRange: number, quantBits: number, modBits: number, off = 0, len = sum.length - off): Float64Array {
  const s = quantScale(clipRange, quantBits);
  const mask = modBits === 32 ? 0xffffffff : 2 ** modBits - 1;
  const out = new Float64Array(len);
  for (let i = 0; i < len; i++) {
    const u = modBits === 32 ? sum[off + i]! >>> 0 : (sum[off + i]! >>> 0) & mask;
    out[i] = u / s - count * clipRange;
  }
  return out;
}

/** Quantisation of a weight in [0, 1] to [0, 2^Q − 1] (the extra element carrying a client's weight). */
export function quantiseUnit(w: number, quantBits: number): number {
  if (!(w >= 0 && w <= 1)) throw new Error(`weight must be in [0, 1], got ${w}`);
  return Math.round(w * (2 ** quantBits - 1)) | 0;
}

export function dequantiseUnitSum(sum: number, quantBits: number, modBits: number): number {
  const u = modBits === 32 ? sum >>> 0 : (sum >>> 0) & (2 ** modBits - 1);
  return u / (2 ** quantBits - 1);
}
