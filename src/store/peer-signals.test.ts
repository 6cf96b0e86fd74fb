/**
 * Signals between two handles of one PostgreSQL database, as two coordinator processes hold them: what one publishes
 * reaches the other in order, batched, identical ones once, never its own sender; a message too large for a NOTIFY
 * is not sent and holds nothing else back; a listening connection the server drops is opened again. Embedded stores
 * have no peers.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type Store } from './store.js';
import { MemoryStore } from './memory-store.js';
import { PgPeerSignals, type PeerMessage } from './peer-signals.js';
import { createTempDatabase, pgSkipReason } from '../testing/pg.js';

/** Collects what a handle hears, and resolves `until` once a message satisfies `pred`. */
function listener(s: Store) {
  const heard: PeerMessage[] = [];
  const waiters: { pred: (m: PeerMessage) => boolean; resolve: () => void }[] = [];
  s.peers!.subscribe((m) => {
    heard.push(m);
    for (const w of [...waiters]) if (w.pred(m)) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  });
  const until = (pred: (m: PeerMessage) => boolean, ms = 10_000) =>
    new Promise<void>((resolve, reject) => {
      if (heard.some(pred)) return resolve();
      const timer = setTimeout(() => reject(new Error(`not heard within ${ms} ms; heard ${JSON.stringify(heard.slice(-3))}`)), ms);
      waiters.push({ pred, resolve: () => (clearTimeout(timer), resolve()) });
    });
  return { heard, until };
}

it('PostgreSQL: one handle hears the other in order, batched, duplicates once, never itself; oversize dropped; a dropped listener reconnects', async (t) => {
  const skip = await pgSkipReason();
  if (skip) return t.skip(skip);
  const db = await createTempDatabase();
  const a = await openStore(db.url);
  const b = await openStore(db.url);
  try {
    assert.ok(a.peers instanceof PgPeerSignals && b.peers instanceof PgPeerSignals);
    const ha = listener(a);
    const hb = listener(b);
    await (a.peers as PgPeerSignals).listening();
    await (b.peers as PgPeerSignals).listening();

    // One event-loop turn: 300 messages of ~100 bytes (more than one NOTIFY holds), a duplicate, one of 9,000 bytes.
    const many = Array.from({ length: 300 }, (_, i) => ({ kind: 'event', n: i, pad: 'x'.repeat(90) }));
    a.peers!.publish(many[0]!);
    a.peers!.publish({ kind: 'event', huge: 'y'.repeat(9000) });
    for (const m of many.slice(1)) a.peers!.publish(m);
    a.peers!.publish(many[5]!);
    a.peers!.publish({ kind: 'drive', studyId: 'done' });
    await hb.until((m) => m.kind === 'drive');
    assert.deepEqual(hb.heard, [...many, { kind: 'drive', studyId: 'done' }], 'all of them, in order, the duplicate once, the oversized one not at all');

    // B answers; once A hears it, A has had every notification sent before it: none was its own.
    b.peers!.publish({ kind: 'tasks' });
    await ha.until((m) => m.kind === 'tasks');
    assert.deepEqual(ha.heard, [{ kind: 'tasks' }], 'a handle never hears itself');

    // The server drops B's listening connection: B listens again, and what A says after that reaches it.
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const r = await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query = 'LISTEN setu_peers'`);
      assert.equal(r.rowCount, 2, 'both handles were listening');
    } finally {
      await admin.end();
    }
    // A notification sent while B is away is lost (a hint); B's next one after reconnecting is heard.
    let k = 0;
    const said = setInterval(() => a.peers!.publish({ kind: 'drive', studyId: `again-${k++}` }), 100);
    try {
      await hb.until((m) => m.kind === 'drive' && String(m['studyId']).startsWith('again-'), 15_000);
    } finally {
      clearInterval(said);
    }
  } finally {
    await a.close();
    await b.close();
    await db.drop();
  }
});

it('memory and SQLite stores have no peers (one process owns them)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-peers-'));
  const sqlite = await openStore(join(dir, 'setu.db'));
  try {
    assert.equal(sqlite.peers, undefined);
    assert.equal((new MemoryStore() as Store).peers, undefined);
  } finally {
    await sqlite.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
