/** Helpers shared by this folder's tests (not part of the learning API). */
import { createRng } from './rng.js';
import type { Dataset } from './types.js';

/** n rows of d standard-normal features with fair-coin binary labels, deterministic in `seed`. */
export function binaryData(n: number, d: number, seed: number): Dataset {
  const rng = createRng(seed);
  const x = new Float32Array(n * d), y = new Float32Array(n);
  for (let i = 0; i < n * d; i++) x[i] = rng.normal();
  for (let i = 0; i < n; i++) y[i] = rng.next() < 0.5 ? 1 : 0;
  return { x, n, d, y };
}
