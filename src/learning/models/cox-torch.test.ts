/**
 * The linear Cox model against PyTorch (/usr/bin/python3, torch): its initial weights are the ones
 * `torch.manual_seed(s); nn.Linear(d, 1)` draws, and its loss and gradient under both normalisations
 * equal the Cox partial-likelihood loss written in torch (pycox's formulation) and differentiated by
 * autograd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pythonSkipReason, runPython } from '../../testing/oracles.js';
import { createRng } from '../rng.js';
import { tensor } from '../../protocol/tensors.js';
import type { Dataset } from '../types.js';
import { Cox, coxHazardRatios, linearCoxTorchInit } from './cox.js';

const D = 5, N = 60, SEEDS = [0, 7, 42];

function data(): Dataset {
  const rng = createRng(3);
  const x = new Float32Array(N * D), time = new Float32Array(N), event = new Float32Array(N);
  for (let i = 0; i < N * D; i++) x[i] = rng.normal();
  // Distinct times, so no tie rule is involved.
  for (let i = 0; i < N; i++) {
    time[i] = i + 1 + rng.next() * 0.5;
    event[i] = rng.next() < 0.6 ? 1 : 0;
  }
  return { x, n: N, d: D, y: new Float32Array(event), time, event };
}

test('a linear Cox model starts where torch does, and its loss and gradient equal torch autograd for both normalisations', { skip: pythonSkipReason(['torch']) }, () => {
  const ds = data();
  const py = `
import json, torch
ds = json.load(open("data.json"))
x = torch.tensor(ds["x"], dtype=torch.float64).reshape(-1, ${D}); t = torch.tensor(ds["time"], dtype=torch.float64); e = torch.tensor(ds["event"], dtype=torch.float64)
out = {}
for s in ${JSON.stringify(SEEDS)}:
    torch.manual_seed(s); lin = torch.nn.Linear(${D}, 1)
    w0 = [float(v) for v in lin.weight.detach().flatten()]; b0 = float(lin.bias.detach()[0])
    lin = lin.double(); res = {"weight": w0, "bias": b0}
    for norm in ["events", "batch"]:
        lin.zero_grad()
        log_h = lin(x).flatten()
        order = torch.argsort(t, descending=True)
        lh, ev = log_h[order], e[order]
        nll = -((lh - torch.logcumsumexp(lh, 0)) * ev).sum()
        loss = nll / (ev.sum() if norm == "events" else len(ev))
        loss.backward()
        res[norm] = {"loss": float(loss), "grad": [float(v) for v in lin.weight.grad.flatten()], "bgrad": float(lin.bias.grad[0])}
    out[str(s)] = res
print(json.dumps(out))
`;
  const ref = JSON.parse(runPython(py, { 'data.json': JSON.stringify({ x: Array.from(ds.x), time: Array.from(ds.time!), event: Array.from(ds.event!) }) })) as Record<string, { weight: number[]; bias: number; events: { loss: number; grad: number[]; bgrad: number }; batch: { loss: number; grad: number[]; bgrad: number } }>;
  const idx = Array.from({ length: N }, (_, i) => i);
  for (const s of SEEDS) {
    const r = ref[String(s)]!;
    const w = linearCoxTorchInit(s, D);
    assert.deepEqual(Array.from(w['layers.0.weight']!.data), r.weight, `seed ${s}: initial weight`);
    assert.deepEqual(Array.from(w['layers.0.bias']!.data), [r.bias]);
    for (const normalise of ['events', 'batch'] as const) {
      const model = new Cox({ kind: 'cox', inputDim: D, normalise });
      const grad = { 'layers.0.weight': tensor([1, D], new Float32Array(D)), 'layers.0.bias': tensor([1], new Float32Array(1)) };
      const loss = model.lossAndGrad(w, ds, idx, grad);
      const want = r[normalise];
      assert.ok(Math.abs(loss - want.loss) < 1e-6 * Math.abs(want.loss), `seed ${s} ${normalise}: loss ${loss} vs torch ${want.loss}`);
      Array.from(grad['layers.0.weight'].data).forEach((g, j) => assert.ok(Math.abs(g - want.grad[j]!) < 1e-6 * Math.max(1e-3, Math.abs(want.grad[j]!)), `seed ${s} ${normalise}: grad ${j} ${g} vs torch ${want.grad[j]}`));
      assert.ok(Math.abs(grad['layers.0.bias'].data[0]! - want.bgrad) < 1e-6, 'the partial likelihood ignores the bias');
    }
  }
});

test('normalisation is checked, rescales by events/rows, and hazard ratios are exp(β) of a linear model', () => {
  assert.throws(() => new Cox({ kind: 'cox', inputDim: 2, normalise: 'rows' as 'batch' }), /normalise must be "events" or "batch"/);
  const ds = data();
  const w = linearCoxTorchInit(1, D);
  const events = Array.from(ds.event!).filter((e) => e > 0.5).length;
  const le = new Cox({ kind: 'cox', inputDim: D }).evaluate(w, ds).loss;
  const lb = new Cox({ kind: 'cox', inputDim: D, normalise: 'batch' }).evaluate(w, ds).loss;
  assert.ok(Math.abs(lb - (le * events) / N) < 1e-12);
  const hr = coxHazardRatios({ 'layers.0.weight': tensor([1, 2], Float32Array.from([Math.log(2), -1])), 'layers.0.bias': tensor([1], new Float32Array(1)) }, ['age', 'sex']);
  assert.deepEqual(hr.map((h) => h.feature), ['age', 'sex']);
  assert.ok(Math.abs(hr[0]!.hazardRatio - 2) < 1e-6 && Math.abs(hr[1]!.hazardRatio - Math.exp(-1)) < 1e-7);
  assert.throws(() => coxHazardRatios(new Cox({ kind: 'cox', inputDim: 2, hidden: [3] }).init(createRng(1))), /linear Cox model/);
});
