import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchStream } from './batches.js';

test('each pass is a permutation with the last partial batch kept', () => {
  const s = BatchStream.create(10, 4, 42);
  assert.equal(s.batchesPerEpoch, 3);
  for (let e = 0; e < 3; e++) {
    const b = [s.next(), s.next(), s.next()];
    assert.deepEqual(b.map((x) => x.length), [4, 4, 2]);
    const all = b.flatMap((x) => [...x]).sort((a, c) => a - c);
    assert.deepEqual(all, [...Array(10).keys()]);
    assert.deepEqual(s.state(), { n: 10, batchSize: 4, seed: 42, epoch: e + 1, offset: 0 });
  }
});

test('successive passes are reshuffled', () => {
  const s = BatchStream.create(50, 50, 1);
  assert.notDeepEqual([...s.next()], [...s.next()]);
});

test('restore continues exactly the same stream (site restart)', () => {
  const a = BatchStream.create(13, 4, 7);
  for (let i = 0; i < 9; i++) a.next(); // stop mid-epoch
  const saved = JSON.parse(JSON.stringify(a.state()));
  const b = BatchStream.restore(saved);
  for (let i = 0; i < 20; i++) assert.deepEqual([...a.next()], [...b.next()]);
});

test('restore refuses a corrupt state', () => {
  assert.throws(() => BatchStream.restore({ n: 10, batchSize: 4, seed: 1, epoch: 0, offset: 10 }), /offset/);
  assert.throws(() => BatchStream.restore({ n: 0, batchSize: 4, seed: 1, epoch: 0, offset: 0 }), /n must be/);
  assert.throws(() => BatchStream.restore({ n: 3, batchSize: 1.5, seed: 1, epoch: 0, offset: 0 }), /batchSize/);
});

test('different seeds give different orders', () => {
  assert.notDeepEqual([...BatchStream.create(30, 30, 1).next()], [...BatchStream.create(30, 30, 2).next()]);
});
