import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKeys } from '../protocol/signing.js';
import { signCheckpoint } from '../protocol/audit-checkpoint.js';
import { AuditWitness, WITNESS_FILE } from './audit-witness.js';

const k = generateSigningKeys();
const cp = (count: number, ts: number, head = count.toString(16).padStart(64, '0')) => signCheckpoint({ count, head }, ts, k.privateKey, k.publicKeyRaw);

test('the agent keeps the newest checkpoint on disk (mode 600), survives a restart, and keeps a contradiction as evidence', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-witness-'));
  try {
    const logs: string[] = [];
    let w = new AuditWitness(dir, 'hospital-a', (m) => logs.push(m));
    w.see(undefined); // a task from a coordinator that sends none: nothing to keep
    assert.equal(w.current(), undefined);
    w.see(cp(4, 1000));
    w.see(cp(9, 2000));
    const file = join(dir, WITNESS_FILE);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).checkpoint.count, 9);
    // A restarted agent reads what it kept and goes on from there.
    w = new AuditWitness(dir, 'hospital-a', (m) => logs.push(m));
    assert.equal(w.current()!.checkpoint.count, 9);
    w.see(cp(5, 3000)); // fewer entries, signed later: the log was cut
    assert.equal(logs.filter((l) => /contradicts what this site witnessed: the log went back from 9 entries/.test(l)).length, 1, logs.join('\n'));
    const kept = JSON.parse(readFileSync(file, 'utf8'));
    assert.equal(kept.checkpoint.count, 9, 'never goes back');
    assert.deepEqual(kept.conflicts.map((c: { checkpoint: { count: number } }) => c.checkpoint.count), [5]);
    w.see({ ...cp(12, 4000), head: 'f'.repeat(64) }); // not signed by the coordinator: reported, not kept
    assert.ok(logs.some((l) => /not valid/.test(l)));
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).conflicts.length, 1);
    // An unreadable witness is never overwritten: a new one starts beside it.
    writeFileSync(file, JSON.stringify({ format: 'setu-audit-witness-v1', holder: 'x', checkpoint: { count: 'many' } }));
    assert.equal(new AuditWitness(dir, 'hospital-a', (m) => logs.push(m)).current(), undefined, 'a witness without a valid checkpoint is unreadable');
    writeFileSync(file, '{oops');
    w = new AuditWitness(dir, 'hospital-a', (m) => logs.push(m));
    w.see(cp(12, 5000));
    assert.equal(readFileSync(file, 'utf8'), '{oops');
    assert.ok(readdirSync(dir).filter((f) => /^audit-witness\.\d+\.json$/.test(f)).length >= 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
