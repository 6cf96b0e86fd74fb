/**
 * PyTorch-identical initial weights for `torch.manual_seed(seed); nn.Linear(in, out)`.
 *
 * Why: for methods whose result is dominated by the starting point (FedAvg with lr 1e-3 on
 * Fed-Heart-Disease moves little from it), the spread over seeds is mostly the spread of the
 * initial models. Starting from exactly the model torch draws for a seed makes Setu's run
 * for seed s directly comparable with the PyTorch peer's and FLamby's run for seed s; the
 * batch shuffles remain Setu's own (BatchStream), so runs still differ there.
 *
 * torch's CPU generator is MT19937 seeded with the low 32 bits of the seed; a float
 * `uniform_(a, b)` takes one 32-bit draw x, keeps 24 bits u = (x & 0xFFFFFF) / 2^24 and
 * returns float32(u·(b − a) + a) computed in double with a, b already rounded to float32.
 * nn.Linear draws the weight (kaiming_uniform_ with a = √5, i.e. bound 1/√in) row-major,
 * then the bias with the same bound. linear.test.ts checks values printed by torch 1.13.
 */
import { tensor, type Weights } from '../protocol/tensors.js';

/** MT19937 (Matsumoto & Nishimura), 32-bit output, the generator behind torch's CPU RNG. */
export class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private i = 624;

  constructor(seed: number) {
    const s = Number.isSafeInteger(seed) ? seed : 0;
    this.mt[0] = Number(BigInt.asUintN(32, BigInt(s)));
    for (let j = 1; j < 624; j++) {
      const p = this.mt[j - 1]! ^ (this.mt[j - 1]! >>> 30);
      this.mt[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
  }

  nextUint32(): number {
    const mt = this.mt;
    if (this.i >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.i = 0;
    }
    let y = mt[this.i++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** torch's float32 `uniform_(from, to)` for one element. */
  uniformFloat32(from: number, to: number): number {
    const a = Math.fround(from), b = Math.fround(to);
    const u = (this.nextUint32() & 0xffffff) / 16777216;
    return Math.fround(u * (b - a) + a);
  }
}

/** Weights of `torch.manual_seed(seed); torch.nn.Linear(inFeatures, outFeatures)`, as `weight` [out, in] and `bias` [out]. */
export function torchLinearInit(seed: number, inFeatures: number, outFeatures = 1): Weights {
  if (!(Number.isInteger(inFeatures) && inFeatures > 0 && Number.isInteger(outFeatures) && outFeatures > 0)) {
    throw new Error(`torchLinearInit: feature counts must be positive integers, got ${inFeatures}, ${outFeatures}`);
  }
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`torchLinearInit: seed must be a non-negative integer, got ${seed}`);
  const g = new Mt19937(seed);
  const bound = 1 / Math.sqrt(inFeatures);
  const w = new Float32Array(inFeatures * outFeatures);
  for (let i = 0; i < w.length; i++) w[i] = g.uniformFloat32(-bound, bound);
  const b = new Float32Array(outFeatures);
  for (let i = 0; i < b.length; i++) b[i] = g.uniformFloat32(-bound, bound);
  return { weight: tensor([outFeatures, inFeatures], w), bias: tensor([outFeatures], b) };
}
