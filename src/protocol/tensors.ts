/**
 * Model weights as they travel and as the learning core sees them: named tensors whose values are held as
 * float32 for arithmetic, each remembering the dtype it travels in (F32 when absent).
 *
 * - Floating dtypes (F32, F16, BF16) decode exactly to float32; aggregation accumulates in float32 or wider and
 *   is rounded back to the tensor's dtype when the model is written.
 * - Integer dtypes (I64, I32, I16, I8, U8, BOOL) hold integer values in float32, which is exact within ±2^24;
 *   the codec refuses an integer tensor holding anything larger, so no value is ever silently rounded. (A BatchNorm
 *   layer's `num_batches_tracked` counter is such a tensor.)
 *
 * Tensor names come from outside (a site's upload, a study lead's file), so every Weights object is built with a
 * null prototype (`emptyWeights()`) and looked up with `Object.hasOwn`: a tensor named `__proto__`, `constructor`
 * or `toString` is an ordinary name, never a property of Object.prototype.
 * Insertion order of the record is the canonical order (safetensors writes keys sorted, so never rely on order
 * across the wire: look tensors up by name).
 */
import { indexOfNonFinite } from './finite.js';

/** The safetensors dtypes Setu reads and writes. */
export const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const;
export type DType = (typeof DTYPES)[number];

/** Bytes per element. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export const isDType = (s: unknown): s is DType => typeof s === 'string' && (DTYPES as readonly string[]).includes(s);
export const isFloatDType = (d: DType): boolean => d === 'F32' || d === 'F16' || d === 'BF16' || d === 'F64';

/** Integer dtypes are exact in float32 only within ±2^24. */
export const MAX_EXACT_INT = 2 ** 24;

/** Smallest and largest value of each integer dtype that float32 holds exactly. */
export function intRange(d: DType): [number, number] {
  switch (d) {
    case 'I64':
    case 'I32':
      return [-MAX_EXACT_INT, MAX_EXACT_INT];
    case 'I16':
      return [-32768, 32767];
    case 'I8':
      return [-128, 127];
    case 'U8':
      return [0, 255];
    case 'BOOL':
      return [0, 1];
    default:
      throw new Error(`${d} is not an integer dtype`);
  }
}

export interface Tensor {
  shape: number[];
  /** The values, row-major, as float32 whatever the dtype (exact: see the file comment). */
  data: Float32Array;
  /** The dtype it travels in; absent means F32. */
  dtype?: DType;
}

export type Weights = Record<string, Tensor>;

export const dtypeOf = (t: Tensor): DType => t.dtype ?? 'F32';

/** A Weights object with no prototype: every key is an own, ordinary name. */
export function emptyWeights(): Weights {
  return Object.create(null) as Weights;
}

/** Own-property lookup (never Object.prototype's `constructor`, `toString`, …). */
export function hasTensor(w: Weights, name: string): boolean {
  return Object.hasOwn(w, name);
}

/** Sets `w[name]` as an own data property, whatever the name (assignment to `__proto__` would not). */
export function setTensor(w: Weights, name: string, t: Tensor): void {
  Object.defineProperty(w, name, { value: t, enumerable: true, writable: true, configurable: true });
}

export function tensor(shape: number[], data?: Float32Array, dtype?: DType): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (data && data.length !== size) throw new Error(`tensor data length ${data.length} does not match shape [${shape}]`);
  return { shape: [...shape], data: data ?? new Float32Array(size), ...(dtype && dtype !== 'F32' ? { dtype } : {}) };
}

/** A tensor of `like`'s shape and dtype holding `data` (new values, same layout). */
export function tensorLike(like: Tensor, data: Float32Array): Tensor {
  return { shape: [...like.shape], data, ...(like.dtype && like.dtype !== 'F32' ? { dtype: like.dtype } : {}) };
}

/** Builds Weights from `names` with `make(name)`, in that order, on a null prototype. */
export function mapWeights(names: Iterable<string>, make: (name: string) => Tensor): Weights {
  const out = emptyWeights();
  for (const k of names) setTensor(out, k, make(k));
  return out;
}

export function cloneWeights(w: Weights): Weights {
  return mapWeights(Object.keys(w), (k) => tensorLike(w[k]!, new Float32Array(w[k]!.data)));
}

export function zerosLike(w: Weights): Weights {
  return mapWeights(Object.keys(w), (k) => tensorLike(w[k]!, new Float32Array(w[k]!.data.length)));
}

/** The tensors of `w` named in `names` (same objects, not copies), in `names`' order; missing ones are an error. */
export function pickWeights(w: Weights, names: readonly string[]): Weights {
  return mapWeights(names, (k) => {
    if (!hasTensor(w, k)) throw new Error(`missing tensor "${k}"`);
    return w[k]!;
  });
}

/** Total number of scalars. */
export function weightCount(w: Weights): number {
  let n = 0;
  for (const t of Object.values(w)) n += t.data.length;
  return n;
}

/** What one tensor must look like: the study's model fixes it for every upload. */
export interface TensorInfo {
  shape: number[];
  dtype: DType;
}

/** Describes the expected layout: name -> shape and dtype (null prototype). */
export type WeightsLayout = Record<string, TensorInfo>;

export function layoutOf(w: Weights): WeightsLayout {
  const out = Object.create(null) as WeightsLayout;
  for (const k of Object.keys(w)) Object.defineProperty(out, k, { value: { shape: [...w[k]!.shape], dtype: dtypeOf(w[k]!) }, enumerable: true });
  return out;
}

/** Returns null when `got` equals `want` (names, shapes, dtypes), otherwise a message naming the first difference. */
export function layoutDifference(got: WeightsLayout, want: WeightsLayout): string | null {
  const wantNames = Object.keys(want).sort();
  const gotNames = Object.keys(got).sort();
  for (const k of wantNames) if (!Object.hasOwn(got, k)) return `missing tensor "${k}"`;
  for (const k of gotNames) if (!Object.hasOwn(want, k)) return `unexpected tensor "${k}"`;
  for (const k of wantNames) {
    const a = want[k]!, b = got[k]!;
    if (a.shape.length !== b.shape.length || a.shape.some((v, i) => v !== b.shape[i])) return `tensor "${k}" has shape [${b.shape}], expected [${a.shape}]`;
    if (a.dtype !== b.dtype) return `tensor "${k}" is ${b.dtype}, expected ${a.dtype}`;
  }
  return null;
}

/** Returns null when `w` matches `layout` exactly, otherwise a message naming the first mismatch. */
export function layoutMismatch(w: Weights, layout: WeightsLayout): string | null {
  return layoutDifference(layoutOf(w), layout);
}

/** Returns null when every value is finite, otherwise a message naming the tensor and index. */
export function firstNonFinite(w: Weights): string | null {
  for (const [k, t] of Object.entries(w)) {
    const i = indexOfNonFinite(t.data);
    if (i >= 0) return `tensor "${k}" has a non-finite value (${t.data[i]}) at index ${i}`;
  }
  return null;
}

/**
 * `w` for an F16/BF16 transport (a study's `transport.updateDtype`): every F32 tensor labelled `dtype`, so the
 * encoder writes it rounded to nearest even in half the bytes; other tensors as they are. Values are shared, not copied.
 */
export function narrowForTransport(w: Weights, dtype: 'F16' | 'BF16' | undefined): Weights {
  if (!dtype) return w;
  return mapWeights(Object.keys(w), (k) => (dtypeOf(w[k]!) === 'F32' ? { shape: w[k]!.shape, data: w[k]!.data, dtype } : w[k]!));
}

// ---------------------------------------------------------------- rounding to a dtype

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE binary16 bits, round to nearest even; overflow gives ±Infinity, as numpy and torch do. */
export function floatToHalfBits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf or NaN (quiet)
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // rounds to ±0
    mant |= 0x800000; // the implicit bit, then shift into the subnormal range
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) r++; // may carry into the exponent, up to Inf: correct
  return sign | r;
}

/** IEEE 754 binary16 bits to number (exact: every half is representable in float32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal or zero
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 → bfloat16 bits (the top half of a float32), round to nearest even. */
export function floatToBf16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff; // NaN stays NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 is the top half of a float32. */
export function bf16ToFloat(b: number): number {
  u32[0] = (b << 16) >>> 0;
  return f32[0]!;
}

/** Round half to even (the unbiased rounding numpy's `rint` uses). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Rounds every value of `t` in place to what its dtype can hold: F16/BF16 to the nearest representable value,
 * integer dtypes to the nearest integer (half to even) clamped to the exact range. An aggregate computed in
 * float32 becomes exactly what the file will store, so the digest of a model names what every site receives.
 */
export function roundToDtype(t: Tensor): Tensor {
  const d = dtypeOf(t), a = t.data;
  if (d === 'F32' || d === 'F64') return t;
  if (d === 'F16') for (let i = 0; i < a.length; i++) a[i] = halfToFloat(floatToHalfBits(a[i]!));
  else if (d === 'BF16') for (let i = 0; i < a.length; i++) a[i] = bf16ToFloat(floatToBf16Bits(a[i]!));
  else {
    const [lo, hi] = intRange(d);
    for (let i = 0; i < a.length; i++) {
      const v = a[i]!;
      if (Number.isFinite(v)) a[i] = Math.min(hi, Math.max(lo, roundHalfEven(v)));
    }
  }
  return t;
}

// ---------------------------------------------------------------- per-tensor rules of a study

/** What happens to a tensor in a study: averaged by the strategy, kept at each site (FedBN), or frozen. */
export type TensorRuleKind = 'aggregate' | 'local' | 'skip';

export interface TensorRule {
  /** A tensor name, or a pattern where `*` matches any run of characters (dots included). */
  match: string;
  rule: TensorRuleKind;
}

/** Every tensor's rule: the first rule whose pattern matches it, else aggregate. */
export interface ResolvedRules {
  aggregate: string[];
  local: string[];
  skip: string[];
}

function patternOf(match: string): RegExp {
  return new RegExp(`^${match.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
}

/**
 * Resolves a study's tensor rules against the names of its model. Throws, naming the rule, when a rule matches no
 * tensor (a typo would otherwise silently aggregate a layer meant to stay local) or no tensor is left to aggregate.
 */
export function resolveTensorRules(names: readonly string[], rules: readonly TensorRule[] = []): ResolvedRules {
  const patterns = rules.map((r) => patternOf(r.match));
  const used = new Array<boolean>(rules.length).fill(false);
  const out: ResolvedRules = { aggregate: [], local: [], skip: [] };
  for (const name of names) {
    const i = patterns.findIndex((p) => p.test(name));
    if (i >= 0) used[i] = true;
    out[i >= 0 ? rules[i]!.rule : 'aggregate'].push(name);
  }
  const unused = used.findIndex((u) => !u);
  if (unused >= 0) throw new Error(`/tensorRules/${unused}: "${rules[unused]!.match}" matches no tensor of the model (it has ${names.length}: ${names.slice(0, 8).join(', ')}${names.length > 8 ? ', …' : ''})`);
  if (out.aggregate.length === 0) throw new Error('/tensorRules: every tensor is local or skipped; at least one must be aggregated');
  return out;
}

/** What the API and the model card say about a model: each tensor's name, dtype, shape and rule, and the parameter count. */
export function describeTensors(layout: WeightsLayout, rules: ResolvedRules): { tensors: { name: string; dtype: DType; shape: number[]; rule: TensorRuleKind }[]; parameters: number } {
  const ruleOf = new Map<string, TensorRuleKind>();
  for (const kind of ['aggregate', 'local', 'skip'] as const) for (const k of rules[kind]) ruleOf.set(k, kind);
  const tensors = Object.keys(layout).map((name) => ({ name, dtype: layout[name]!.dtype, shape: [...layout[name]!.shape], rule: ruleOf.get(name) ?? 'aggregate' }));
  return { tensors, parameters: tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0) };
}
