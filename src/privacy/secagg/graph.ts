/**
 * The SecAgg+ communication graph (Bell et al. 2020): a random k-regular graph built as a Harary (circulant)
 * graph over a seeded random permutation of the clients. Each client is joined to the k/2 clients on either side
 * of it on the permuted ring, so neighbourhoods are symmetric. The seed is public (sent in the setup message),
 * so every client can recompute the graph and check that the server forwarded it its true neighbours.
 */
import { MaskStream } from './crypto.js';

/** Seeded uniform integers in [0, bound) by rejection on AES-CTR words (no modulo bias). */
function seededInts(seed: Uint8Array): (bound: number) => number {
  const s = new MaskStream(seed);
  let buf: Uint32Array = new Uint32Array(0), pos = 0;
  const u32 = () => {
    if (pos >= buf.length) { const i = s.next(1024); buf = new Uint32Array(i.buffer, i.byteOffset, i.length); pos = 0; }
    return buf[pos++]!;
  };
  return (bound) => {
    const limit = Math.floor(4294967296 / bound) * bound;
    for (;;) { const v = u32(); if (v < limit) return v % bound; }
  };
}

/** Neighbour lists (sorted) of a k-regular graph on n clients; k ≥ n − 1 gives the complete graph. */
export function neighbourGraph(n: number, k: number, seed: Uint8Array): number[][] {
  if (!(Number.isInteger(n) && n >= 2)) throw new Error(`need at least 2 clients, got ${n}`);
  if (!(Number.isInteger(k) && k >= 2)) throw new Error(`neighbour degree must be an integer ≥ 2, got ${k}`);
  if (k >= n - 1) return Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => j).filter((j) => j !== i));
  if (k % 2 !== 0) throw new Error(`neighbour degree k=${k} must be even when k < n − 1`);
  const perm = Array.from({ length: n }, (_, i) => i);
  const rnd = seededInts(seed);
  for (let i = n - 1; i > 0; i--) { const j = rnd(i + 1); [perm[i], perm[j]] = [perm[j]!, perm[i]!]; }
  const out: number[][] = Array.from({ length: n }, () => []);
  for (let p = 0; p < n; p++) {
    for (let d = 1; d <= k / 2; d++) {
      out[perm[p]!]!.push(perm[(p + d) % n]!, perm[(p - d + n) % n]!);
    }
  }
  return out.map((l) => l.sort((a, b) => a - b));
}

/** Bell et al. take k = O(log n): here the even number ≥ 2·⌈log2 n⌉ (capped at n − 1), threshold ⌊k/2⌋ + 1. */
export function recommendedDegree(n: number): { degree: number; threshold: number } {
  let k = 2 * Math.ceil(Math.log2(n));
  if (k >= n - 1) k = n - 1;
  return { degree: k, threshold: Math.floor(k / 2) + 1 };
}
