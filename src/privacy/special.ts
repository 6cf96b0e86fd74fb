/**
 * Special functions the accountant needs, accurate in log space far into the tails
 * (the RDP series evaluates erfc at arguments where it underflows double precision).
 */

const LOG_SQRT_PI = 0.5 * Math.log(Math.PI);

/** erf(x) by its Maclaurin series; accurate to ~1e-16 for |x| ≤ 1.5. */
function erfSeries(x: number): number {
  let term = x, sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

/**
 * log of the continued fraction K(x) with erfc(x) = exp(−x²)/√π · K(x), x ≥ 1.5,
 * K = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated by the modified Lentz method.
 */
function logErfcCf(x: number): number {
  const tiny = 1e-300;
  let f = x, c = x, d = 0;
  for (let n = 1; n < 5000; n++) {
    const a = n / 2;
    d = x + a * d; if (Math.abs(d) < tiny) d = tiny;
    c = x + a / c; if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return -x * x - LOG_SQRT_PI - Math.log(f);
}

/** log(erfc(x)) for any real x, without underflow for large positive x. */
export function logErfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === Infinity) return -Infinity;
  if (x === -Infinity) return Math.LN2;
  if (x >= 1.5) return logErfcCf(x);
  if (x > -1.5) return Math.log(1 - erfSeries(x));
  return Math.log(2 - Math.exp(logErfcCf(-x)));
}

export function erfc(x: number): number {
  return Math.exp(logErfc(x));
}
