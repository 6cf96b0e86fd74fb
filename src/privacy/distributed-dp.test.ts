import { test } from 'node:test';
import assert from 'node:assert/strict';
import { privatiseUpdate } from './dpfedavg.js';
import { CryptoNormal } from './noise.js';
import { makeConfig } from './secagg/server.js';
import { runSecAggRound } from './secagg/driver.js';
import { seedBytes } from './testing.js';

test('distributed DP under SecAgg+: sites clip and add σ²C²/n each; the unmasked sum carries noise σC', () => {
  const n = 10, len = 20000, C = 0.5, sigma = 1.2;
  const dp = { clipNorm: C, noiseMultiplier: sigma, mode: 'distributed' as const, clientsPerRound: n };
  const src = new CryptoNormal(seedBytes('ddp'));
  // Every site's true update is the same direction with norm 2C: clipping halves it.
  const truth = new Float32Array(len).fill((2 * C) / Math.sqrt(len));
  const sent: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    const d = { u: { shape: [len], data: Float32Array.from(truth) } };
    const r = privatiseUpdate(d, dp, src);
    assert.equal(r.unclipped, false);
    sent.push(d.u.data);
  }
  // Quantisation range wide enough for the noise (per-site std σC/√n ≈ 0.19): ±4 clips nothing here.
  const cfg = makeConfig({ numClients: n, vectorLength: len, degree: 4, threshold: 3, clipRange: 4 });
  const { result } = runSecAggRound({ config: cfg, update: (i) => sent[i]! });
  const clippedCoord = C / Math.sqrt(len);
  let s = 0, s2 = 0;
  for (let j = 0; j < len; j++) { const e = result.sum[j]! - n * clippedCoord; s += e; s2 += e * e; }
  const sd = Math.sqrt(s2 / len), mean = s / len;
  assert.ok(Math.abs(sd - sigma * C) < 0.02 * sigma * C, `noise sd ${sd} vs σC = ${sigma * C}`);
  assert.ok(Math.abs(mean) < 0.02, `noise mean ${mean}`);
});
