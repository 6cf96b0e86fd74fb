import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { cIndex, concordance } from './cindex.js';

/** O(n²) definition, written independently of the fast version. */
function bruteForce(risk: number[], time: number[], event: number[]): { c: number; comparable: number } {
  let num = 0, den = 0;
  for (let i = 0; i < risk.length; i++) {
    if (event[i] !== 1) continue;
    for (let j = 0; j < risk.length; j++) {
      if (i === j) continue;
      const comparable = time[i]! < time[j]! || (time[i] === time[j] && event[j] === 0);
      if (!comparable) continue;
      den++;
      if (risk[i]! > risk[j]!) num += 1;
      else if (risk[i] === risk[j]) num += 0.5;
    }
  }
  return { c: den ? num / den : NaN, comparable: den };
}

test('perfect, reversed and constant risk give 1, 0 and 0.5', () => {
  const t = [1, 2, 3, 4], e = [1, 1, 1, 1];
  assert.equal(cIndex([4, 3, 2, 1], t, e), 1);
  assert.equal(cIndex([1, 2, 3, 4], t, e), 0);
  assert.equal(cIndex([7, 7, 7, 7], t, e), 0.5);
});

test('tied risks count one half: pairs (0,1)=½, (0,2)=1, (1,2)=1', () => {
  assert.equal(cIndex([1, 1, 0], [1, 2, 3], [1, 1, 1]), 2.5 / 3);
});

test('censored rows only appear as the longer-lived member; tied event times are not comparable', () => {
  // Row 0 censored at 2: it pairs with nobody earlier. Only (1 event at 3) vs (2 at 4).
  const c = concordance([0.9, 0.2, 0.1], [2, 3, 4], [0, 1, 0]);
  assert.deepEqual([c.comparable, c.cIndex], [1, 1]);
  // Two events at the same time: no comparable pair.
  assert.ok(Number.isNaN(cIndex([1, 2], [5, 5], [1, 1])));
  // An event and a censoring at the same time: the event is first, so one comparable pair.
  assert.equal(concordance([2, 1], [5, 5], [1, 0]).comparable, 1);
});

test('NaN without events, and refuses NaN scores or mismatched lengths', () => {
  assert.ok(Number.isNaN(cIndex([1, 2, 3], [1, 2, 3], [0, 0, 0])));
  assert.throws(() => cIndex([1, NaN], [1, 2], [1, 1]), /row 1 is NaN/);
  assert.throws(() => cIndex([1, 2], [1], [1, 1]), /equal length/);
});

test('matches the O(n²) definition on random data with ties in time and risk', () => {
  const row = fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 6 }), fc.boolean());
  fc.assert(
    fc.property(fc.array(row, { minLength: 0, maxLength: 40 }), (rows) => {
      const risk = rows.map((r) => r[0]), time = rows.map((r) => r[1]), event = rows.map((r) => (r[2] ? 1 : 0));
      const want = bruteForce(risk, time, event);
      const got = concordance(risk, time, event);
      assert.equal(got.comparable, want.comparable);
      if (Number.isNaN(want.c)) assert.ok(Number.isNaN(got.cIndex));
      else assert.ok(Math.abs(got.cIndex - want.c) < 1e-12);
    }),
    { numRuns: 300, seed: 7 },
  );
});
