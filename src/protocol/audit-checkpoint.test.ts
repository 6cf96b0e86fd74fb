import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateSigningKeys } from './signing.js';
import { GENESIS_HEAD, checkpointAgainstLog, checkpointProblem, compareCheckpoints, parseWitness, signCheckpoint, witnessSee } from './audit-checkpoint.js';

const k = generateSigningKeys();
const other = generateSigningKeys();
const h = (n: number) => n.toString(16).padStart(64, '0');
const cp = (count: number, ts: number, head = h(count), key = k) => signCheckpoint({ count, head: count === 0 ? GENESIS_HEAD : head }, ts, key.privateKey, key.publicKeyRaw);

test('a checkpoint verifies under its key, and any edited field fails', () => {
  const c = cp(5, 1000);
  assert.equal(checkpointProblem(c), null);
  assert.equal(checkpointProblem(c, k.publicKeyRaw), null);
  assert.match(checkpointProblem(c, other.publicKeyRaw)!, /signed by key/);
  for (const edit of [{ count: 6 }, { head: h(9) }, { ts: 1001 }, { publicKey: other.publicKeyRaw }]) {
    assert.match(checkpointProblem({ ...c, ...edit })!, /signature does not verify/, JSON.stringify(edit));
  }
  assert.match(checkpointProblem({ ...c, count: -1 })!, /non-negative/);
  assert.match(checkpointProblem(null)!, /not an object/);
});

test('checkpoint order: newer and same agree; same count with two heads, or fewer entries signed later, conflict; a late stale one is older', () => {
  assert.deepEqual(compareCheckpoints(cp(5, 1000), cp(7, 2000)), { order: 'newer' });
  assert.deepEqual(compareCheckpoints(cp(5, 1000), cp(5, 2000)), { order: 'same' });
  assert.deepEqual(compareCheckpoints(cp(5, 2000), cp(3, 1000)), { order: 'older' });
  const fork = compareCheckpoints(cp(5, 1000), cp(5, 2000, h(99)));
  assert.ok(fork.order === 'conflict' && /two heads for 5 entries/.test(fork.reason));
  const back = compareCheckpoints(cp(5, 1000), cp(3, 2000));
  assert.ok(back.order === 'conflict' && /went back from 5 entries .* to 3/.test(back.reason));
  const key = compareCheckpoints(cp(5, 1000), cp(6, 2000, h(6), other));
  assert.ok(key.order === 'conflict' && /signed by key/.test(key.reason));
});

test('a checkpoint against a log: a deleted tail, a deleted log and a rewound, rewritten head are each named', () => {
  const log = (n: number, at: (s: number) => string = h) => ({ count: n, hashAt: (s: number) => (s >= 1 && s <= n ? at(s) : undefined) });
  assert.equal(checkpointAgainstLog(cp(5, 1000), log(5)), null);
  assert.equal(checkpointAgainstLog(cp(5, 1000), log(9)), null);
  assert.match(checkpointAgainstLog(cp(5, 1000), log(3))!, /holds 3 entries, but the coordinator signed 5 .*tail was deleted/);
  assert.match(checkpointAgainstLog(cp(5, 1000), log(0))!, /log is empty.*whole log was deleted/);
  // The tail was deleted, the head row rewound, and the log grew again past the witness: seq 5 is another entry.
  assert.match(checkpointAgainstLog(cp(5, 1000), log(8, (s) => (s >= 4 ? h(100 + s) : h(s))))!, /entry seq 5 hashes to .* rewound and rewritten/);
  assert.equal(checkpointAgainstLog(cp(0, 1000), log(0)), null);
});

test('the witness rule: first kept, newer replaces, never back, contradictions kept as evidence, garbage ignored', () => {
  let r = witnessSee(undefined, cp(3, 1000), 'site-a', 1);
  assert.equal(r.outcome, 'first');
  let w = r.file!;
  r = witnessSee(w, cp(6, 2000), 'site-a', 2);
  assert.equal(r.outcome, 'newer');
  w = r.file!;
  assert.equal(w.checkpoint.count, 6);
  r = witnessSee(w, cp(4, 1500), 'site-a', 3);
  assert.equal(r.outcome, 'older');
  assert.equal(r.file, w);
  r = witnessSee(w, cp(4, 3000), 'site-a', 4);
  assert.equal(r.outcome, 'conflict');
  assert.equal(r.file!.checkpoint.count, 6, 'the kept checkpoint never goes back');
  assert.equal(r.file!.conflicts.length, 1);
  assert.equal(r.file!.conflicts[0]!.checkpoint.count, 4);
  w = r.file!;
  r = witnessSee(w, { ...cp(9, 5000), count: 10 }, 'site-a', 5);
  assert.equal(r.outcome, 'invalid');
  assert.equal(r.file, w);
  r = witnessSee(w, cp(9, 5000, h(9), other), 'site-a', 6);
  assert.equal(r.outcome, 'conflict', 'another key');
  assert.equal(r.file!.conflicts.length, 2);
  // The file round-trips, and a bare checkpoint or an export header parses as a witness too.
  assert.deepEqual(parseWitness(JSON.stringify(r.file, null, 2), 'x'), r.file);
  assert.deepEqual(parseWitness(JSON.stringify(cp(2, 7)), 'x').checkpoint, cp(2, 7));
  const c = cp(2, 7);
  const exportText = JSON.stringify({ format: 'setu-audit-v2', publicKey: c.publicKey, count: 2, head: c.head, exportedAt: 7, sig: c.sig }) + '\n{"seq":1}\n';
  assert.deepEqual(parseWitness(exportText, 'x').checkpoint, c);
  assert.throws(() => parseWitness('{"a":1}', 'x'), /neither a witness file/);
});
