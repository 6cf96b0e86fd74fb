/**
 * Shamir secret sharing over GF(2^521 − 1). Share x-coordinates are the holders' 1-based indices
 * (client id + 1), never 0 (0 is where the secret sits).
 */
import { P, inv, mod, randomElement } from './field.js';

export interface Share { x: bigint; y: bigint }

/** Splits `secret` (< p) into shares at the given x's; any `t` of them reconstruct it, fewer reveal nothing. */
export function split(secret: bigint, t: number, xs: readonly bigint[]): Share[] {
  if (secret < 0n || secret >= P) throw new Error('secret must be a field element');
  if (!(Number.isInteger(t) && t >= 1)) throw new Error(`threshold must be an integer ≥ 1, got ${t}`);
  if (xs.length < t) throw new Error(`cannot split among ${xs.length} holders with threshold ${t}`);
  const seen = new Set<bigint>();
  for (const x of xs) {
    if (x <= 0n || x >= P) throw new Error('share x must be in 1..p−1');
    if (seen.has(x)) throw new Error('share x-coordinates must be distinct');
    seen.add(x);
  }
  const coef = [secret];
  for (let i = 1; i < t; i++) coef.push(randomElement());
  return xs.map((x) => {
    let y = 0n; // Horner
    for (let i = coef.length - 1; i >= 0; i--) y = mod(y * x + coef[i]!);
    return { x, y };
  });
}

/** Lagrange interpolation at 0 from exactly the given shares. */
function interpolateAtZero(shares: readonly Share[]): bigint {
  let acc = 0n;
  for (let j = 0; j < shares.length; j++) {
    let num = 1n, den = 1n;
    const xj = shares[j]!.x;
    for (let m = 0; m < shares.length; m++) {
      if (m === j) continue;
      const xm = shares[m]!.x;
      num = mod(num * xm);
      den = mod(den * (xm - xj));
    }
    acc = mod(acc + shares[j]!.y * num * inv(den));
  }
  return acc;
}

/**
 * Reconstructs from at least `t` shares. With more than t, a second, different subset is interpolated too and
 * must agree: a corrupted share then shows up as an error instead of a wrong secret.
 */
export function reconstruct(shares: readonly Share[], t: number): bigint {
  if (shares.length < t) throw new Error(`need ${t} shares to reconstruct, have ${shares.length}`);
  const seen = new Set<bigint>();
  for (const s of shares) {
    if (seen.has(s.x)) throw new Error('duplicate share x-coordinate');
    seen.add(s.x);
  }
  const secret = interpolateAtZero(shares.slice(0, t));
  if (shares.length > t && interpolateAtZero(shares.slice(shares.length - t)) !== secret) {
    throw new Error('inconsistent shares: two subsets interpolate to different secrets');
  }
  return secret;
}
