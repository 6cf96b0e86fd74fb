/**
 * Small dense symmetric linear algebra for the Newton–Raphson fits (a p × p information matrix,
 * p = the number of covariates), row-major in plain arrays. Cholesky, as R's coxph uses, so a
 * singular (collinear) design is found and named rather than silently inverted.
 */

export class SingularMatrixError extends Error {
  constructor(readonly column: number) {
    super(`the information matrix is singular at column ${column + 1} (collinear or constant covariates)`);
    this.name = 'SingularMatrixError';
  }
}

/** Lower-triangular L with A = L Lᵀ, for a symmetric positive-definite p × p `a`. */
export function cholesky(a: readonly number[], p: number): number[] {
  if (a.length !== p * p) throw new Error(`cholesky: expected ${p * p} entries, got ${a.length}`);
  const l = new Array<number>(p * p).fill(0);
  // Relative pivot tolerance, like R's toler.chol (1e-10 scaled by the diagonal).
  const scale = Math.max(...Array.from({ length: p }, (_, i) => Math.abs(a[i * p + i]!)), 0);
  for (let j = 0; j < p; j++) {
    let s = a[j * p + j]!;
    for (let k = 0; k < j; k++) s -= l[j * p + k]! ** 2;
    if (!(s > 1e-10 * scale) || !Number.isFinite(s)) throw new SingularMatrixError(j);
    const d = Math.sqrt(s);
    l[j * p + j] = d;
    for (let i = j + 1; i < p; i++) {
      let t = a[i * p + j]!;
      for (let k = 0; k < j; k++) t -= l[i * p + k]! * l[j * p + k]!;
      l[i * p + j] = t / d;
    }
  }
  return l;
}

/** x with (L Lᵀ) x = b. */
export function choleskySolve(l: readonly number[], p: number, b: readonly number[]): number[] {
  const y = new Array<number>(p);
  for (let i = 0; i < p; i++) {
    let s = b[i]!;
    for (let k = 0; k < i; k++) s -= l[i * p + k]! * y[k]!;
    y[i] = s / l[i * p + i]!;
  }
  const x = new Array<number>(p);
  for (let i = p - 1; i >= 0; i--) {
    let s = y[i]!;
    for (let k = i + 1; k < p; k++) s -= l[k * p + i]! * x[k]!;
    x[i] = s / l[i * p + i]!;
  }
  return x;
}

/** A⁻¹ of a symmetric positive-definite matrix, row-major. */
export function inverseSpd(a: readonly number[], p: number): number[] {
  const l = cholesky(a, p);
  const inv = new Array<number>(p * p);
  for (let j = 0; j < p; j++) {
    const e = new Array<number>(p).fill(0);
    e[j] = 1;
    const col = choleskySolve(l, p, e);
    for (let i = 0; i < p; i++) inv[i * p + j] = col[i]!;
  }
  return inv;
}

/** xᵀ A x. */
export function quadForm(a: readonly number[], p: number, x: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) s += x[i]! * a[i * p + j]! * x[j]!;
  return s;
}
