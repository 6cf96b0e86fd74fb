import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  newStudy, propose, approve, decline, withdraw, start, complete, stop, eligibleSites, LifecycleError, type LifecycleStudy,
} from './lifecycle.js';

const lead = { by: 'lead-1', at: 1000 };
const adminA = { by: 'admin-a', at: 2000 };
const adminB = { by: 'admin-b', at: 2001 };
const terms = { purpose: 'heart-disease risk model, research only', conditions: ['no commercial use'] };

function proposed(): LifecycleStudy {
  return propose(newStudy('s1', ['in-a', 'in-b', 'jp-c']), lead).study;
}

test('the happy path: draft → proposed → approvals → running → completed, each step audited', () => {
  let s = newStudy('s1', ['in-a', 'in-b', 'jp-c']);
  assert.equal(s.state, 'draft');
  const kinds: string[] = [];
  const step = (t: { study: LifecycleStudy; audit: { kind: string; subject: string } }) => {
    assert.equal(t.audit.subject, 's1');
    kinds.push(t.audit.kind);
    s = t.study;
  };
  step(propose(s, lead));
  step(approve(s, 'in-a', terms, adminA));
  step(decline(s, 'in-b', 'ethics board has not reviewed it', adminB));
  step(approve(s, 'jp-c', { purpose: 'same' }, adminB));
  assert.deepEqual(eligibleSites(s), ['in-a', 'jp-c']);
  step(start(s, lead));
  assert.equal(s.state, 'running');
  step(complete(s, lead, { rounds: 15 }));
  assert.equal(s.state, 'completed');
  assert.deepEqual(kinds, ['study.proposed', 'study.approved', 'study.declined', 'study.approved', 'study.started', 'study.completed']);
  assert.deepEqual(s.approvals['in-a']!.terms, terms);
});

test('transitions are pure: the input study is not modified', () => {
  const s = proposed();
  const before = structuredClone(s);
  approve(s, 'in-a', terms, adminA);
  assert.deepEqual(s, before);
});

test('illegal study transitions throw a clear LifecycleError', () => {
  const d = newStudy('s1', ['in-a']);
  assert.throws(() => start(d, lead), /cannot start study s1: it is draft; start is allowed only when proposed/);
  assert.throws(() => approve(d, 'in-a', terms, adminA), /cannot approve study s1: it is draft/);
  assert.throws(() => complete(d, lead), /cannot complete study s1: it is draft/);
  const p = proposed();
  assert.throws(() => propose(p, lead), /cannot propose study s1: it is proposed/);
  assert.throws(() => start(p, lead), /0 site\(s\) approved, 1 needed \(awaiting in-a, in-b, jp-c\)/);
  const r = start(approve(p, 'in-a', terms, adminA).study, lead).study;
  assert.throws(() => approve(r, 'in-b', terms, adminB), /it is running/);
  const done = complete(r, lead).study;
  assert.throws(() => stop(done, 'late', lead), /cannot stop study s1: it is completed/);
  const stopped = stop(r, 'safety signal', lead).study;
  assert.equal(stopped.stopReason, 'safety signal');
  assert.throws(() => complete(stopped, lead), /it is stopped/);
  assert.throws(() => propose(newStudy('s2', []), lead), /invites no sites/);
  assert.throws(() => newStudy('s3', ['a', 'a']), /listed twice/);
  assert.ok(new LifecycleError('x') instanceof Error);
});

test('site approvals: invited sites only, no double approval, terms required, declined may change its mind', () => {
  const p = proposed();
  assert.throws(() => approve(p, 'jp-z', terms, adminA), /site jp-z is not invited to study s1/);
  assert.throws(() => approve(p, 'toString', terms, adminA), /not invited/);
  assert.throws(() => approve(p, 'in-a', { purpose: ' ' }, adminA), /need a purpose/);
  assert.throws(() => approve(p, 'in-a', { purpose: 'x', expiresAt: 10 }, adminA), /expire in the past/);
  const a = approve(p, 'in-a', terms, adminA).study;
  assert.throws(() => approve(a, 'in-a', terms, adminA), /already approved/);
  assert.throws(() => decline(a, 'in-a', 'no', adminA), /it has approved; withdraw instead/);
  assert.throws(() => decline(a, 'in-b', ' ', adminA), /needs a reason/);
  const d = decline(a, 'in-b', 'no capacity', adminB).study;
  assert.equal(approve(d, 'in-b', terms, adminB).study.approvals['in-b']!.status, 'approved');
  assert.throws(() => start(approve(p, 'in-a', terms, adminA).study, lead, 2), /1 site\(s\) approved, 2 needed/);
});

test('withdrawal: final, only after approval, and from the next round on while running', () => {
  const p = approve(approve(proposed(), 'in-a', terms, adminA).study, 'jp-c', terms, adminB).study;
  assert.throws(() => withdraw(p, 'in-b', 'x', adminA), /has not approved \(it is pending\)/);
  const w = withdraw(p, 'in-a', 'changed our mind', adminA);
  assert.equal(w.audit.kind, 'study.withdrawn');
  assert.deepEqual(eligibleSites(w.study), ['jp-c']);
  assert.throws(() => approve(w.study, 'in-a', terms, adminA), /withdrawal is final/);
  const running = start(p, lead).study;
  assert.throws(() => withdraw(running, 'jp-c', 'x', adminB), /needs the next round number/);
  const wr = withdraw(running, 'jp-c', 'data quality issue found', adminB, 4);
  assert.equal(wr.study.approvals['jp-c']!.fromRound, 4);
  assert.deepEqual(eligibleSites(wr.study), ['in-a']);
  assert.deepEqual(wr.audit.data, { site: 'jp-c', reason: 'data quality issue found', fromRound: 4 });
  assert.throws(() => withdraw(complete(running, lead).study, 'in-a', 'x', adminA), /it is completed/);
});

test('eligibleSites drops approvals whose terms have lapsed', () => {
  const s = approve(approve(proposed(), 'in-a', { purpose: 'p', expiresAt: 5000 }, adminA).study, 'jp-c', terms, adminB).study;
  assert.deepEqual(eligibleSites(s, 4999), ['in-a', 'jp-c']);
  assert.deepEqual(eligibleSites(s, 5000), ['jp-c']);
  assert.deepEqual(eligibleSites(s), ['in-a', 'jp-c']);
});
