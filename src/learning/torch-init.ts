/**
 * PyTorch-compatible initialisation. `torch.manual_seed(s)` seeds a standard MT19937, and
 * `nn.Linear`'s default initialisation draws U(−1/√fan_in, 1/√fan_in) for the weight
 * (kaiming_uniform with a = √5) and then for the bias, converting each 32-bit draw to a float
 * as torch's CPU kernel does. Reproducing that lets a Setu study seeded s start from exactly the
 * model a PyTorch reference seeded s starts from.
 *
 * Why it matters: on small clinical benchmarks (FLamby's Fed-Heart-Disease trains a logistic
 * model for only 1,500 small SGD steps) the starting point dominates the result, so comparing
 * against a PyTorch run seed by seed is only fair from the same start.
 */
import type { Weights } from '../protocol/tensors.js';

/** MT19937 (Matsumoto & Nishimura), seeded like std::mt19937 / torch's CPU generator. */
export class MT19937 {
  private readonly mt = new Uint32Array(624);
  private i = 624;

  constructor(seed: number) {
    this.mt[0] = seed >>> 0;
    for (let j = 1; j < 624; j++) {
      const p = this.mt[j - 1]! ^ (this.mt[j - 1]! >>> 30);
      this.mt[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
  }

  next32(): number {
    if (this.i >= 624) this.twist();
    let y = this.mt[this.i++]!;
    y ^= y >>> 11;
    y = (y ^ ((y << 7) & 0x9d2c5680)) >>> 0;
    y = (y ^ ((y << 15) & 0xefc60000)) >>> 0;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const mt = this.mt;
    for (let k = 0; k < 624; k++) {
      const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
      let v = mt[(k + 397) % 624]! ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      mt[k] = v >>> 0;
    }
    this.i = 0;
  }

  /** torch's CPU `uniform_(from, to)` for float32: 24 random bits, arithmetic in double, rounded to float. */
  uniformF32(from: number, to: number): number {
    const f = Math.fround(from), t = Math.fround(to);
    const x = (this.next32() & 0xffffff) * 2 ** -24;
    return Math.fround(x * Math.fround(t - f) + f);
  }
}

/**
 * Redraws `w` (fresh weights from any Model.init, in parameter order) as torch would initialise the same
 * stack of Linear layers after `torch.manual_seed(seed)`: every `…weight` of shape [out, in] from
 * U(±gain·√(3/in)) with gain = √(2/(1+5)), then its `…bias` from U(±1/√in). Tensors are visited in
 * insertion order, which is the models' parameter order (weight before bias, layer by layer).
 */
export function torchLinearInit(w: Weights, seed: number): Weights {
  const g = new MT19937(seed);
  let fanIn: number | undefined;
  const out: Weights = {};
  for (const [name, t] of Object.entries(w)) {
    const data = new Float32Array(t.data.length);
    if (/(^|\.)weight$/.test(name) && t.shape.length === 2) {
      fanIn = t.shape[1]!;
      const bound = Math.sqrt(2 / (1 + 5)) * Math.sqrt(3 / fanIn);
      for (let i = 0; i < data.length; i++) data[i] = g.uniformF32(-bound, bound);
    } else if (/(^|\.)bias$/.test(name) && fanIn !== undefined) {
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < data.length; i++) data[i] = g.uniformF32(-bound, bound);
    } else {
      throw new Error(`torch init: cannot initialise tensor "${name}" of shape [${t.shape}] like a torch Linear layer`);
    }
    out[name] = { shape: [...t.shape], data };
  }
  return out;
}
