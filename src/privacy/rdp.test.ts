import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_ORDERS, RdpAccountant, computeRdp, epsFromRdp, epsFromRdpClassic, epsilonFor, noiseMultiplierFor, rdpSampledGaussian,
} from './rdp.js';
import { logErfc } from './special.js';

const close = (a: number, b: number, rtol: number, msg?: string) =>
  assert.ok(Math.abs(a - b) <= rtol * Math.abs(b), `${msg ?? ''} got ${a}, expected ${b} (rtol ${rtol})`);

test('q = 1 is the plain Gaussian mechanism: RDP = α/(2σ²)', () => {
  for (const s of [0.5, 1, 3.7]) for (const a of [1.5, 2, 10, 256]) close(rdpSampledGaussian(1, s, a), a / (2 * s * s), 1e-15);
  assert.equal(rdpSampledGaussian(0, 1, 5), 0);
  assert.equal(rdpSampledGaussian(0.5, 0, 5), Infinity);
});

test('as q → 1 the subsampled RDP approaches the Gaussian closed form (integer and fractional orders)', () => {
  for (const a of [2, 7, 3.5]) close(rdpSampledGaussian(1 - 1e-9, 2, a), a / 8, 1e-6, `α=${a}`);
});

test('subsampled RDP matches an independent multi-precision integration of A_α (mpmath, 40 digits)', () => {
  // Reference values: log(∫ N(z;0,σ²)·((1−q) + q·exp((2z−1)/(2σ²)))^α dz)/(α−1), computed with mpmath.quad.
  const cases: [number, number, number, number][] = [
    [1e-4, 1, 1.5, 1.2885373907673299e-08],
    [1e-3, 1, 2, 1.7182803522145153e-06],
    [0.01, 10, 20, 1.0068263112022611e-05],
    [0.1, 100, 20.5, 1.0252214593881177e-05],
    [0.02, 0.8, 3.7, 0.0038500335559169627],
    [0.05, 1.2, 12.3, 1.0184227253619698],
  ];
  for (const [q, s, a, want] of cases) close(rdpSampledGaussian(q, s, a), want, 1e-6, `q=${q} σ=${s} α=${a}`);
});

test('TF-Privacy rdp_accountant_test values: scalar and sequence', () => {
  close(computeRdp(0.1, 2, 10, [5])[0]!, 0.07737, 1e-4);
  const got = computeRdp(0.01, 2.5, 50, [1.5, 2.5, 5, 50, 100]);
  const want = [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307];
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-5, `order ${i}: ${g} vs ${want[i]}`));
});

test('RDP composes linearly and grows with q, shrinks with σ', () => {
  const one = computeRdp(0.05, 1.3, 1), many = computeRdp(0.05, 1.3, 37);
  one.forEach((r, i) => close(many[i]!, 37 * r, 1e-12));
  assert.ok(rdpSampledGaussian(0.02, 1, 8) < rdpSampledGaussian(0.04, 1, 8));
  assert.ok(rdpSampledGaussian(0.02, 2, 8) < rdpSampledGaussian(0.02, 1, 8));
});

test('conversion: constant RDP (pure DP) picks the largest order; value by hand', () => {
  const orders = Array.from({ length: 31 }, (_, i) => i + 2);
  const r = epsFromRdp(orders, orders.map(() => 1.1), 1e-5);
  assert.equal(r.order, 32);
  // 1.1 + log(1 − 1/32) − (log 1e-5 + log 32)/31, the Balle et al. bound by hand.
  close(r.eps, 1.32783806176, 1e-10);
  const c = epsFromRdpClassic(orders, orders.map(() => 1.1), 1e-5);
  close(c.eps, 1.1 - Math.log(1e-5) / 31, 1e-12);
  assert.ok(r.eps < c.eps, 'the tighter conversion is tighter');
});

test('MNIST DP-SGD example (N=60000, batch 256, 60 epochs, δ=1e-5): classic vs tighter conversion', () => {
  const q = 256 / 60000, steps = Math.ceil((60 * 60000) / 256); // 14063, as compute_dp_sgd_privacy
  const tfOrders = [...Array.from({ length: 99 }, (_, x) => 1 + (x + 1) / 10), ...Array.from({ length: 52 }, (_, i) => 12 + i)];
  // TF-Privacy's compute_dp_sgd_privacy docstring: σ = 1.12 gives ε = 2.92 (classic conversion, its order grid).
  close(epsFromRdpClassic(tfOrders, computeRdp(q, 1.12, steps, tfOrders), 1e-5).eps, 2.92, 2e-3);
  // σ = 1.1 (TF-Privacy tutorial table) gives 3.01 with the classic conversion; the tighter one gives ≈ 2.60.
  close(epsFromRdpClassic(tfOrders, computeRdp(q, 1.1, steps, tfOrders), 1e-5).eps, 3.01, 2e-3);
  close(epsilonFor(1.1, 1e-5, q, steps), 2.597, 1e-3);
});

test('noiseMultiplierFor inverts epsilonFor and honours the target', () => {
  for (const [eps, q, steps] of [[1, 0.1, 500], [3, 0.01, 2000], [0.5, 1, 10]] as const) {
    const s = noiseMultiplierFor(eps, 1e-3, q, steps);
    assert.ok(epsilonFor(s, 1e-3, q, steps) <= eps, 'guarantee holds');
    assert.ok(epsilonFor(s * 0.995, 1e-3, q, steps) > eps, 'σ is not much larger than needed');
  }
  assert.equal(noiseMultiplierFor(Infinity, 1e-3, 0.1, 100), 0);
  assert.throws(() => noiseMultiplierFor(0, 1e-3, 0.1, 100), /target ε/);
});

test('accountant accumulates, peeks without spending, and round-trips through JSON', () => {
  const acc = new RdpAccountant().compose(0.1, 1.5, 20);
  const e1 = acc.epsilon(1e-5).eps;
  const peeked = acc.peek(0.1, 1.5, 20).epsilon(1e-5).eps;
  assert.equal(acc.epsilon(1e-5).eps, e1);
  close(peeked, epsilonFor(1.5, 1e-5, 0.1, 40), 1e-12);
  const back = RdpAccountant.fromJSON(JSON.parse(JSON.stringify(acc)));
  assert.equal(back.epsilon(1e-5).eps, e1);
  assert.deepEqual(back.orders, DEFAULT_ORDERS);
  const inf = new RdpAccountant().compose(0.1, 0, 1);
  assert.equal(RdpAccountant.fromJSON(JSON.parse(JSON.stringify(inf))).epsilon(1e-5).eps, Infinity);
  assert.throws(() => RdpAccountant.fromJSON({ orders: [2], rdp: [-1] }), /≥ 0/);
});

const LOG_ERFC_30 = -903.974117110643878, LOG_ERFC_8 = -66.6594719708051615;
test('logErfc is accurate in the body and deep in the tail', () => {
  // References from scipy.special.erfc and mpmath (30 digits) for the tail, where erfc underflows doubles.
  close(Math.exp(logErfc(0.5)), 0.4795001221869535, 1e-13);
  close(Math.exp(logErfc(3)), 2.209049699858544e-5, 1e-12);
  close(Math.exp(logErfc(-2)), 1.9953222650189528, 1e-14);
  close(logErfc(30), LOG_ERFC_30, 1e-14);
  close(logErfc(8), LOG_ERFC_8, 1e-14);
});
