/**
 * The SQL store on a PostgreSQL that misbehaves, on a private cluster this test starts (and kills) itself:
 * backends terminated while their connections are checked out (inside open transactions) and while queries run,
 * ten times; the postmaster SIGKILLed, the server down for 10 s, then back. The process must survive every
 * one (an 'error' event on a checked-out client with no listener ends it), each failed call must be
 * StoreUnavailable (the API's 503), and the next call after the server is back must work.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { openStore, StoreUnavailable, type Store } from './store.js';
import { privateClusterSkipReason, startPrivateCluster, type PrivateCluster } from '../testing/pg-cluster.js';

const skip = privateClusterSkipReason();

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function assertUnavailable(results: PromiseSettledResult<unknown>[], atLeast: number): void {
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  assert.ok(failed.length >= atLeast, `at least ${atLeast} calls failed (${failed.length})`);
  for (const e of failed) assert.ok(e instanceof StoreUnavailable, `a lost connection is StoreUnavailable, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
}

describe('PostgreSQL faults (private cluster)', { skip }, () => {
  let cluster: PrivateCluster;
  let store: Store;
  const lost: Error[] = [];

  before(async () => {
    cluster = await startPrivateCluster();
    store = await openStore(cluster.url, { onConnectionError: (e) => void lost.push(e) });
  });
  after(async () => {
    await store?.close().catch(() => {});
    cluster?.destroy();
  });

  /** Opens `n` transactions that have run a statement and now wait, each holding a checked-out connection. */
  function heldTransactions(n: number, tag: string): { done: Promise<PromiseSettledResult<unknown>[]>; release: () => void } {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const txs = Array.from({ length: n }, (_, j) => store.transaction(async (tx) => {
      await tx.setKv(`${tag}.${j}`, 'written');
      await gate;
      return tx.getKv(`${tag}.${j}`);
    }));
    return { done: Promise.allSettled(txs), release };
  }

  async function idleInTransaction(admin: pg.Client): Promise<number> {
    const r = await admin.query(`select count(*)::int as n from pg_stat_activity where datname = 'postgres' and state = 'idle in transaction' and pid <> pg_backend_pid()`);
    return r.rows[0].n as number;
  }

  it('survives pg_terminate_backend during queries and open transactions, 10 times; the next call works', async () => {
    const admin = new pg.Client({ connectionString: cluster.url });
    admin.on('error', () => {}); // this test's own connection is not under test
    await admin.connect();
    try {
      for (let i = 0; i < 10; i++) {
        const held = heldTransactions(4, `t${i}`);
        await until('four transactions holding their connections', async () => ((await idleInTransaction(admin)) >= 4 ? true : undefined));
        const running = Promise.allSettled(Array.from({ length: 3 }, () => store.listSites())); // queued or running while the backends die
        const reported = lost.length;
        const cut = await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = 'postgres' and pid <> pg_backend_pid() and backend_type = 'client backend'`);
        // Every cut connection, idle in the pool or checked out, reports its loss once its backend has gone; until
        // then a statement sent on an idle one can still meet the FATAL (a 503 the client retries).
        await until('every cut connection to report its loss', async () => (lost.length >= reported + cut.rowCount! ? true : undefined));
        held.release();
        const results = await held.done;
        assertUnavailable(results, 4);
        assertUnavailable(await running, 0);
        // Nothing of the cut transactions was committed, and the store works at once.
        assert.equal(await store.getKv(`t${i}.0`), undefined);
        await store.setKv(`after.${i}`, String(i));
        assert.equal(await store.getKv(`after.${i}`), String(i));
      }
      assert.ok(lost.length >= 10, `the dropped connections were reported to the store's listener (${lost.length})`);
    } finally {
      await admin.end().catch(() => {});
    }
  });

  it('rides out a SIGKILLed postmaster and a 10 s outage, answering StoreUnavailable meanwhile, then resumes', async () => {
    const held = heldTransactions(2, 'pm');
    await until('two transactions holding their connections', async () => ((await store.listSites()) && (await countHeld()) >= 2 ? true : undefined));
    const reported = lost.length;
    process.kill(cluster.postmasterPid(), 'SIGKILL');
    // Its backends notice the postmaster's death and close their connections: both held ones report it.
    await until('the held connections to drop', async () => (lost.length >= reported + 2 ? true : undefined));
    held.release();
    assertUnavailable(await held.done, 2);
    const downSince = Date.now();
    const during: PromiseSettledResult<unknown>[] = [];
    while (Date.now() - downSince < 10_000) {
      const t0 = Date.now();
      during.push(...(await Promise.allSettled([store.getKv('x'), store.transaction((tx) => tx.setKv('y', '1'))])));
      assert.ok(Date.now() - t0 < 12_000, 'a call during the outage fails within the connect timeout instead of hanging');
      await new Promise((r) => setTimeout(r, 1000));
    }
    assertUnavailable(during, during.length);
    await cluster.start();
    await until('the store to answer again', async () => (await store.setKv('back', '1'), await store.getKv('back')));
    assert.equal(await store.getKv('back'), '1');

    async function countHeld(): Promise<number> {
      const admin = new pg.Client({ connectionString: cluster.url });
      admin.on('error', () => {});
      await admin.connect();
      try {
        return await idleInTransaction(admin);
      } finally {
        await admin.end();
      }
    }
  });
});
