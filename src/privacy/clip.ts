/** L2 norms and clipping over whole Weights records (all tensors flattened into one vector). */
import type { Weights } from '../protocol/tensors.js';

export function l2Norm(w: Weights): number {
  let s = 0;
  for (const t of Object.values(w)) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  }
  return Math.sqrt(s);
}

/**
 * Scales `w` in place so that its L2 norm is at most `clip`: w ← w · min(1, C/‖w‖).
 * Returns the norm before clipping (callers need it for adaptive clipping and reporting).
 */
export function clipInPlace(w: Weights, clip: number): number {
  if (!(clip > 0) || !Number.isFinite(clip)) throw new Error(`clip norm must be finite and > 0, got ${clip}`);
  const norm = l2Norm(w);
  if (!Number.isFinite(norm)) throw new Error('cannot clip a vector with non-finite values');
  if (norm > clip) {
    // Shave 1e-6 off the scale factor so float32 rounding of the products can never leave ‖w‖ above C:
    // the DP sensitivity argument needs the bound to hold exactly.
    const f = (clip / norm) * (1 - 1e-6);
    for (const t of Object.values(w)) {
      const d = t.data;
      for (let i = 0; i < d.length; i++) d[i] = d[i]! * f;
    }
  }
  return norm;
}
