import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sampleSites } from './sampling.js';
import { NotEnoughSitesError } from './strategy.js';

const sites = Array.from({ length: 50 }, (_, i) => `s${i}`);

test('fraction with a minimum; deterministic per (seed, round); independent of input order', () => {
  const a = sampleSites(3, sites, { fraction: 0.1, minSites: 2, seed: 7 });
  assert.equal(a.length, 5);
  assert.deepEqual(a, sampleSites(3, [...sites].reverse(), { fraction: 0.1, minSites: 2, seed: 7 }));
  assert.notDeepEqual(a, sampleSites(4, sites, { fraction: 0.1, minSites: 2, seed: 7 }));
  assert.equal(sampleSites(1, sites, { fraction: 0.01, minSites: 3, seed: 1 }).length, 3);
  assert.deepEqual(sampleSites(1, ['b', 'a'], { fraction: 1, minSites: 1, seed: 1 }), ['a', 'b']);
});

test('every site gets picked over many rounds (no site starves)', () => {
  const seen = new Set<string>();
  for (let r = 1; r <= 200; r++) sampleSites(r, sites, { fraction: 0.1, minSites: 1, seed: 3 }).forEach((s) => seen.add(s));
  assert.equal(seen.size, 50);
});

test('fixed list and not enough sites', () => {
  assert.deepEqual(sampleSites(1, sites, { fraction: 1, minSites: 1, sites: ['s3', 's1'], seed: 0 }), ['s1', 's3']);
  assert.throws(() => sampleSites(1, ['s1'], { fraction: 1, minSites: 1, sites: ['s3', 's1'], seed: 0 }), NotEnoughSitesError);
  assert.throws(() => sampleSites(1, ['a'], { fraction: 1, minSites: 2, seed: 0 }), /needs at least 2 site\(s\) for this round but only 1/);
});
