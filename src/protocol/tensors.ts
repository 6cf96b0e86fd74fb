/**
 * Model weights as they travel and as the learning core sees them: named float32 tensors.
 * Insertion order of the record is the canonical order (safetensors writes keys sorted,
 * so never rely on order across the wire: look tensors up by name).
 */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export type Weights = Record<string, Tensor>;

export function tensor(shape: number[], data?: Float32Array): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (data && data.length !== size) throw new Error(`tensor data length ${data.length} does not match shape [${shape}]`);
  return { shape: [...shape], data: data ?? new Float32Array(size) };
}

export function cloneWeights(w: Weights): Weights {
  const out: Weights = {};
  for (const [k, t] of Object.entries(w)) out[k] = { shape: [...t.shape], data: new Float32Array(t.data) };
  return out;
}

export function zerosLike(w: Weights): Weights {
  const out: Weights = {};
  for (const [k, t] of Object.entries(w)) out[k] = { shape: [...t.shape], data: new Float32Array(t.data.length) };
  return out;
}

/** Total number of scalars. */
export function weightCount(w: Weights): number {
  let n = 0;
  for (const t of Object.values(w)) n += t.data.length;
  return n;
}

/** Describes the expected layout: name -> shape. Used to validate uploads against the study's model. */
export type WeightsLayout = Record<string, number[]>;

export function layoutOf(w: Weights): WeightsLayout {
  const out: WeightsLayout = {};
  for (const [k, t] of Object.entries(w)) out[k] = [...t.shape];
  return out;
}

/** Returns null when `w` matches `layout` exactly, otherwise a message naming the first mismatch. */
export function layoutMismatch(w: Weights, layout: WeightsLayout): string | null {
  const want = Object.keys(layout).sort();
  const got = Object.keys(w).sort();
  for (const k of want) if (!(k in w)) return `missing tensor "${k}"`;
  for (const k of got) if (!(k in layout)) return `unexpected tensor "${k}"`;
  for (const k of want) {
    const a = layout[k]!, b = w[k]!.shape;
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) return `tensor "${k}" has shape [${b}], expected [${a}]`;
  }
  return null;
}

/** Returns null when every value is finite, otherwise a message naming the tensor and index. */
export function firstNonFinite(w: Weights): string | null {
  for (const [k, t] of Object.entries(w)) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) return `tensor "${k}" has a non-finite value (${d[i]}) at index ${i}`;
  }
  return null;
}
