/**
 * Gaussian noise for DP mechanisms, drawn from a cryptographic generator.
 *
 * Uniform bits come from AES-256-CTR keyed by a 256-bit seed: `crypto.randomBytes(32)` in production, a fixed
 * seed in tests (reproducible). Normals come from the Box–Muller transform on 53-bit uniforms.
 * Known limitation: like Opacus and TF-Privacy we sample floating-point Gaussians; the floating-point
 * attacks on textbook samplers (Mironov 2012; Jin et al. 2022) are not mitigated here by a discrete sampler.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import type { Weights } from '../protocol/tensors.js';

export interface NormalSource {
  /** A standard normal variate. */
  normal(): number;
  /**
   * Fills `out` with the next `out.length` variates, the very ones as many `normal()` calls would return (a streamed
   * aggregation draws a slice's noise at once and must match the in-memory path's draw for draw).
   */
  fill?(out: Float32Array | Float64Array): void;
}

/** The next `out.length` variates of `src` into `out`, in the order `normal()` returns them. */
export function fillNormal(src: NormalSource, out: Float32Array | Float64Array): void {
  if (src.fill) src.fill(out);
  else for (let i = 0; i < out.length; i++) out[i] = src.normal();
}

const CHUNK = 64 * 1024;

export class CryptoNormal implements NormalSource {
  private readonly cipher;
  private buf = new Uint32Array(0);
  private pos = 0;
  private spare: number | null = null;

  /** `seed`: 32 bytes. Omitted: a fresh seed from the OS CSPRNG (never reproducible, as production wants). */
  constructor(seed?: Uint8Array) {
    const key = seed ?? randomBytes(32);
    if (key.length !== 32) throw new Error(`noise seed must be 32 bytes, got ${key.length}`);
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }

  private u32(): number {
    if (this.pos >= this.buf.length) {
      const bytes = this.cipher.update(Buffer.alloc(CHUNK));
      this.buf = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
      this.pos = 0;
    }
    return this.buf[this.pos++]!;
  }

  /** Uniform in (0, 1): 53 random bits, never 0 (Box–Muller takes its log). */
  uniform(): number {
    const hi = this.u32() >>> 5, lo = this.u32() >>> 6; // 27 + 26 bits
    return (hi * 67108864 + lo + 0.5) / 9007199254740992;
  }

  normal(): number {
    if (this.spare !== null) { const s = this.spare; this.spare = null; return s; }
    const u1 = this.uniform(), u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  fill(out: Float32Array | Float64Array): void {
    let i = 0;
    if (this.spare !== null && out.length > 0) { out[i++] = this.spare; this.spare = null; }
    // Whole Box–Muller pairs straight into the slice; an odd last one keeps its sine for the next call.
    // The four words of a pair read straight from the buffer while it holds them (uniform()'s arithmetic inlined).
    const TWO_PI = 2 * Math.PI;
    while (i + 1 < out.length) {
      if (this.pos + 4 > this.buf.length) {
        const u1 = this.uniform(), u2 = this.uniform();
        const r = Math.sqrt(-2 * Math.log(u1));
        out[i] = r * Math.cos(TWO_PI * u2);
        out[i + 1] = r * Math.sin(TWO_PI * u2);
        i += 2;
        continue;
      }
      const buf = this.buf;
      let pos = this.pos;
      const pairs = Math.min((out.length - i) >>> 1, (buf.length - pos) >>> 2);
      for (let p = 0; p < pairs; p++, i += 2, pos += 4) {
        const u1 = ((buf[pos]! >>> 5) * 67108864 + (buf[pos + 1]! >>> 6) + 0.5) / 9007199254740992;
        const u2 = ((buf[pos + 2]! >>> 5) * 67108864 + (buf[pos + 3]! >>> 6) + 0.5) / 9007199254740992;
        const r = Math.sqrt(-2 * Math.log(u1)), a = TWO_PI * u2;
        out[i] = r * Math.cos(a);
        out[i + 1] = r * Math.sin(a);
      }
      this.pos = pos;
    }
    if (i < out.length) out[i] = this.normal();
  }
}

/** Adds N(0, std²) independently to every scalar of `w`, in place. */
export function addGaussianNoise(w: Weights, std: number, src: NormalSource): void {
  if (!(std >= 0) || !Number.isFinite(std)) throw new Error(`noise std must be finite and ≥ 0, got ${std}`);
  if (std === 0) return;
  for (const t of Object.values(w)) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) d[i] = d[i]! + std * src.normal();
  }
}
