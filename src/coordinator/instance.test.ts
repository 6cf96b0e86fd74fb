/** A coordinator's instance id is its data directory's: the same after a restart, another for another directory. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTANCE_ID_FILE, ensureInstanceId } from './instance.js';

test('the instance id is kept in the data directory (mode 600) and differs between directories', () => {
  const a = mkdtempSync(join(tmpdir(), 'setu-inst-'));
  const b = mkdtempSync(join(tmpdir(), 'setu-inst-'));
  try {
    const first = ensureInstanceId(a);
    assert.match(first, /^coord-[0-9a-f]{16}$/);
    assert.equal(ensureInstanceId(a), first, 'a restart on the same directory is the same instance');
    assert.equal(statSync(join(a, INSTANCE_ID_FILE)).mode & 0o777, 0o600);
    assert.notEqual(ensureInstanceId(b), first, 'another data directory is another instance');
    writeFileSync(join(b, INSTANCE_ID_FILE), 'something else\n');
    assert.throws(() => ensureInstanceId(b), /does not hold a coordinator instance id \(coord- and 16 hex digits\); remove it to make a new one/);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});
