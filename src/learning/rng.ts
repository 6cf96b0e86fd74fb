/**
 * Seeded, deterministic pseudo-random numbers for the learning core.
 *
 * Generator: xoshiro128** (Blackman & Vigna), 128-bit state, period 2^128 − 1, seeded by
 * expanding a 32-bit seed with splitmix32 so that nearby seeds give unrelated streams.
 * Everything is 32-bit integer arithmetic (Math.imul, >>> 0), so results are identical on
 * every JavaScript engine and platform. Independent sub-streams come from `deriveSeed`,
 * never from sharing one generator between consumers: a site's shuffles therefore do not
 * depend on how many numbers another consumer drew first.
 */
import type { Rng } from './types.js';

/** splitmix32 step: a good 32-bit mixer used for seeding and hashing. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return (z ^ (z >>> 15)) >>> 0;
}

/** Normalises a user seed (any finite number, possibly > 2^32 or negative) to a uint32. */
export function seed32(seed: number): number {
  if (!Number.isFinite(seed)) throw new Error(`seed must be a finite number, got ${seed}`);
  const s = Math.trunc(seed);
  const lo = s >>> 0;
  const hi = Math.floor(s / 4294967296) >>> 0;
  return hi === 0 ? lo : mix32(lo ^ mix32(hi));
}

/**
 * Derives an independent 32-bit seed from a base seed and a path of labels, e.g.
 * `deriveSeed(42, 'site', 3, 'epoch', 7)`. Labels are hashed with their type, so
 * `('1')` and `(1)` differ, and order matters.
 */
export function deriveSeed(seed: number, ...labels: Array<string | number>): number {
  let h = mix32(seed32(seed) ^ 0x5eed5eed);
  for (const label of labels) {
    if (typeof label === 'number') {
      h = mix32(h ^ 0x01000193);
      h = mix32(h ^ seed32(label));
    } else {
      h = mix32(h ^ 0x02000193);
      for (let i = 0; i < label.length; i++) h = mix32(h ^ label.charCodeAt(i));
      h = mix32(h ^ label.length);
    }
  }
  return h;
}

/** Serialisable position of an Xoshiro128 generator. */
export interface RngState {
  s: [number, number, number, number];
  /** Box–Muller produces normals in pairs; the spare one is part of the state. */
  spare: number | null;
}

export class Xoshiro128 implements Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  constructor(seed: number) {
    let x = seed32(seed);
    // splitmix32 expansion; an all-zero state is impossible because mix32 is a bijection
    // applied to 4 distinct inputs, at most one of which can map to 0.
    x = (x + 0x9e3779b9) | 0; this.a = mix32(x);
    x = (x + 0x9e3779b9) | 0; this.b = mix32(x);
    x = (x + 0x9e3779b9) | 0; this.c = mix32(x);
    x = (x + 0x9e3779b9) | 0; this.d = mix32(x);
  }

  static fromState(st: RngState): Xoshiro128 {
    const r = new Xoshiro128(0);
    [r.a, r.b, r.c, r.d] = st.s.map((v) => v >>> 0) as [number, number, number, number];
    if ((r.a | r.b | r.c | r.d) === 0) throw new Error('invalid RNG state: all zero');
    r.spare = st.spare;
    return r;
  }

  state(): RngState {
    return { s: [this.a, this.b, this.c, this.d], spare: this.spare };
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling), n ≤ 2^32. */
  nextInt(n: number): number {
    if (!(n > 0 && n <= 4294967296 && Number.isInteger(n))) throw new Error(`nextInt: bad bound ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return r % n;
    }
  }

  /** Standard normal via the Box–Muller transform (both outputs used). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u1 = 0;
    while (u1 === 0) u1 = this.next(); // log(0) guard
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Creates the default generator for `seed`, optionally on a derived sub-stream. */
export function createRng(seed: number, ...labels: Array<string | number>): Xoshiro128 {
  return new Xoshiro128(labels.length ? deriveSeed(seed, ...labels) : seed);
}

/** In-place Fisher–Yates shuffle. */
export function shuffleInPlace<T extends { length: number; [i: number]: number }>(a: T, rng: Xoshiro128): T {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

/** A random permutation of 0..n-1. */
export function permutation(n: number, rng: Xoshiro128): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return shuffleInPlace(p, rng);
}
