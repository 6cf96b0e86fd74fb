/**
 * Group commit: the calls of one event-loop turn go in one batch, at most `max` an item; with `parallel` N at most
 * N batches are written at once and the next starts as one ends; a batch that throws fails its own items only.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { GroupCommit } from './group-commit.js';

it('batches the calls of a turn, at most max each, at most parallel at once; a failed batch fails only its items', async () => {
  const batches: number[][] = [];
  let inFlight = 0, most = 0;
  const release: (() => void)[] = [];
  const gc = new GroupCommit<number, number>(async (items) => {
    batches.push(items);
    most = Math.max(most, ++inFlight);
    await new Promise<void>((r) => release.push(r));
    inFlight--;
    if (items.includes(13)) throw new Error('batch with 13 failed');
    return items.map((i) => (i === 7 ? { ok: false, error: new Error('seven refused') } : { ok: true, value: i * 10 }));
  }, 4, 2);
  const calls = Array.from({ length: 20 }, (_, i) => gc.add(i));
  const settled = Promise.allSettled(calls);
  // Two batches start; the rest wait for one of them to end.
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches, [[0, 1, 2, 3], [4, 5, 6, 7]]);
  while (batches.length < 5 || release.length) {
    const r = release.shift();
    if (r) r();
    await new Promise((res) => setImmediate(res));
  }
  const out = await settled;
  assert.equal(most, 2, 'never more than two batches at once');
  assert.deepEqual(batches, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]);
  out.forEach((o, i) => {
    if (i === 7) assert.match(String((o as PromiseRejectedResult).reason), /seven refused/);
    else if (i >= 12 && i <= 15) assert.match(String((o as PromiseRejectedResult).reason), /batch with 13 failed/);
    else assert.deepEqual(o, { status: 'fulfilled', value: i * 10 });
  });
});
