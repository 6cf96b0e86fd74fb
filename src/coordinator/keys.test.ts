/**
 * The coordinator's own identities on disk: coordinator.key (signs the audit chain) and admin.key (the
 * bootstrap consortium admin), both mode 600, made once per store; a coordinator started on the same store
 * with a missing or different coordinator.key refuses to start instead of signing with a second key.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator } from './start.js';
import { CoordinatorKeyError } from './auth.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { writeFileSync } from 'node:fs';

describe('coordinator keys', () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-keys-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const db = join(root, 'shared.db');

  it('makes coordinator.key and admin.key once, mode 600, and keeps them across restarts', async () => {
    const dir = join(root, 'a');
    const c1 = await startCoordinator({ dataDir: dir, db, port: 0 });
    const first = c1.adminKey!;
    assert.equal(first.keyId, 'user-admin');
    const pub = c1.audit.key.publicKeyRaw;
    await c1.close();
    for (const f of ['coordinator.key', 'admin.key']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
    const c2 = await startCoordinator({ dataDir: dir, db, port: 0 });
    assert.equal(c2.adminKey!.privateKey, first.privateKey);
    assert.equal(c2.audit.key.publicKeyRaw, pub);
    const v = await c2.audit.verify();
    assert.ok(v.ok && v.count === 1, JSON.stringify(v)); // the bootstrap admin's enrolment, once
    await c2.close();
  });

  it('refuses a second coordinator on the same store without the same coordinator.key', async () => {
    const other = join(root, 'b');
    await assert.rejects(startCoordinator({ dataDir: other, db, port: 0 }), (e) => e instanceof CoordinatorKeyError && /is missing/.test(e.message));
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'coordinator.key'), generateSigningKeys().privateKeyPem, { mode: 0o600 });
    await assert.rejects(startCoordinator({ dataDir: other, db, port: 0 }), (e) => e instanceof CoordinatorKeyError && /signed by/.test(e.message));
    // With the right key it starts, without an admin.key of its own (the admin's key stays where it was made).
    copyFileSync(join(root, 'a', 'coordinator.key'), join(other, 'coordinator.key'));
    const c = await startCoordinator({ dataDir: other, db, port: 0 });
    assert.equal(c.adminKey, undefined);
    await c.close();
  });
});
