/**
 * Arithmetic in GF(p), p = 2^521 − 1 (a Mersenne prime), with bigint. Large enough that a 256-bit secret
 * (a self-mask seed or an X25519 private key) is a single field element.
 */
import { randomBytes } from 'node:crypto';

export const P = (1n << 521n) - 1n;

export function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}

/** Inverse by the extended Euclidean algorithm; throws on 0. */
export function inv(a: bigint): bigint {
  let r0 = mod(a), r1 = P, s0 = 1n, s1 = 0n;
  if (r0 === 0n) throw new Error('no inverse of 0 in the field');
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return mod(s0);
}

/** Uniform field element by rejection sampling on 521 random bits (no modulo bias). */
export function randomElement(): bigint {
  for (;;) {
    const b = randomBytes(66);
    b[0] = b[0]! & 0x01; // keep 521 bits: 1 in the top byte + 65 × 8
    const v = BigInt('0x' + b.toString('hex'));
    if (v < P) return v;
  }
}

export function bytesToBigint(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt('0x' + Buffer.from(b).toString('hex'));
}

/** Big-endian, exactly `len` bytes; throws if the value does not fit. */
export function bigintToBytes(v: bigint, len: number): Buffer {
  if (v < 0n) throw new Error('negative value');
  const hex = v.toString(16).padStart(len * 2, '0');
  if (hex.length > len * 2) throw new Error(`value does not fit in ${len} bytes`);
  return Buffer.from(hex, 'hex');
}
