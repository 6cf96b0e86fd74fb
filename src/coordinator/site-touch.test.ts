/** A site's last-seen time is written once per SITE_TOUCH_EVERY_MS, not on every signed request (server.ts siteTouches). */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../store/store.js';
import { SITE_TOUCH_EVERY_MS, siteTouches } from './server.js';

it('a burst of requests from one site writes its last-seen time once per window, and again after it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-touch-'));
  const store = await openStore(join(dir, 'setu.db'));
  try {
    await store.createSite({ id: 'site-t', name: 't', institution: null, jurisdiction: null, credential_hash: 'none:site-t', public_key: null, status: 'active', created_at: 1, last_seen_at: null });
    let t = 1_000_000;
    const touch = siteTouches(store, () => t);
    await Promise.all(Array.from({ length: 50 }, () => touch('site-t')));
    assert.equal((await store.getSite('site-t'))!.last_seen_at, 1_000_000);
    t += SITE_TOUCH_EVERY_MS - 1;
    await touch('site-t');
    assert.equal((await store.getSite('site-t'))!.last_seen_at, 1_000_000, 'within the window: not written again');
    t += 1;
    await touch('site-t');
    assert.equal((await store.getSite('site-t'))!.last_seen_at, 1_000_000 + SITE_TOUCH_EVERY_MS, 'after the window: written');
    t -= 60_000;
    await touch('site-t');
    assert.equal((await store.getSite('site-t'))!.last_seen_at, t, 'a clock that stepped back writes at once');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
