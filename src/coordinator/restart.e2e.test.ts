/**
 * Kill the coordinator with SIGKILL in the middle of a study and start it again on the same data
 * directory: the study continues from its last committed round, the agents reconnect by themselves,
 * nothing committed is lost, and the final model is bit-for-bit the one an uninterrupted run gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openStore } from '../store/store.js';
import { decodeSafetensors } from '../protocol/safetensors.js';
import { createHash } from 'node:crypto';
import { adminClient, studyLeadClient, freePort, startCoordinatorProcess, enrolHeartSites, stopAll, waitFor } from '../testing/processes.js';

const ROUNDS = 20;

interface RunOptions {
  killAfterRound?: number;
  /** FedAvg by default; a server optimiser's moments must survive the kill too. */
  strategy?: { name: string; params?: Record<string, unknown> };
  rounds?: number;
}

async function runFederation(opts: RunOptions): Promise<{ digests: Map<number, string>; beforeKill?: Map<number, string>; killedAt?: number; lastState?: unknown }> {
  const ROUNDS = opts.rounds ?? 20;
  const dir = mkdtempSync(join(tmpdir(), 'setu-restart-'));
  const children: ChildProcess[] = [];
  let coord: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = join(dir, 'coordinator');
    coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'));
    const admin = adminClient(dataDir, url);
    await enrolHeartSites(admin, url, dir, 4, children);
    const lead = await studyLeadClient(admin, url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'restart',
      dataset: 'heart',
      model: { kind: 'logistic', inputDim: 13 },
      strategy: opts.strategy ?? { name: 'FedAvg' },
      rounds: ROUNDS,
      fit: { localSteps: 100, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } },
      seed: 7,
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const status = async () => admin.json<{ status: string; round: number; error: string | null }>('GET', `/v1/studies/${id}`);

    let beforeKill: Map<number, string> | undefined;
    let killedAt: number | undefined;
    if (opts.killAfterRound !== undefined) {
      killedAt = await waitFor('some committed rounds', async () => {
        const s = await status();
        return s.round >= opts.killAfterRound! ? s.round : undefined;
      }, 60_000, 20);
      coord.kill('SIGKILL');
      await new Promise((r) => coord!.once('exit', r));
      // What the store holds at the moment of the crash.
      const store = await openStore(join(dataDir, 'setu.db'));
      beforeKill = new Map((await store.listModelVersions(id)).map((v) => [v.round, v.digest]));
      await store.close();
      assert.ok(beforeKill.size >= opts.killAfterRound + 1, 'the committed rounds are on disk');
      await new Promise((r) => setTimeout(r, 500)); // agents now see connection refused and back off
      coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coordinator.log'));
    }
    const final = await waitFor('the study to finish', async () => {
      const s = await status();
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 120_000, 100);
    assert.equal(final.status, 'completed', final.error ?? '');
    assert.equal(final.round, ROUNDS);
    await stopAll([...children, coord]);
    const store = await openStore(join(dataDir, 'setu.db'));
    const versions = await store.listModelVersions(id);
    const rounds = await store.listRounds(id);
    const lastState = await store.latestStrategyState(id);
    // Digest of the weights alone (the file's metadata names the study, which differs between runs).
    const weightDigests = new Map<number, string>();
    for (const v of versions) {
      const w = decodeSafetensors(await store.blobs.readAll(v.digest)).weights;
      const h = createHash('sha256');
      for (const k of Object.keys(w).sort()) h.update(k).update(new Uint8Array(w[k]!.data.buffer, w[k]!.data.byteOffset, w[k]!.data.byteLength));
      weightDigests.set(v.round, h.digest('hex'));
    }
    await store.close();
    assert.deepEqual(versions.map((v) => v.round), Array.from({ length: ROUNDS + 1 }, (_, i) => i), 'one model version per round, none lost, none duplicated');
    assert.equal(rounds.filter((r) => r.status === 'committed').length, ROUNDS + 1, 'every fit round plus the final evaluation committed once');
    for (const [round, digest] of beforeKill ?? []) assert.equal(versions.find((v) => v.round === round)?.digest, digest, `round ${round} was committed before the crash and must be unchanged`);
    return { digests: weightDigests, lastState: lastState ? JSON.parse(lastState.json) : undefined, ...(beforeKill ? { beforeKill } : {}), ...(killedAt !== undefined ? { killedAt } : {}) };
  } finally {
    await stopAll([...children, ...(coord ? [coord] : [])]);
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a coordinator killed with SIGKILL mid-study resumes and loses nothing', { timeout: 240_000 }, async () => {
  const crashed = await runFederation({ killAfterRound: 5 });
  assert.ok(crashed.killedAt! >= 5 && crashed.killedAt! < ROUNDS, `killed mid-study (after round ${crashed.killedAt})`);
  const clean = await runFederation({});
  assert.deepEqual([...crashed.digests.entries()], [...clean.digests.entries()], 'the interrupted run ends with exactly the model of an uninterrupted one');
});

test('a FedAdam study killed mid-study resumes from its saved moments (blobs) and ends with the uninterrupted model', { timeout: 240_000 }, async () => {
  const strategy = { name: 'FedAdam', params: { serverLr: 0.05 } };
  const crashed = await runFederation({ killAfterRound: 3, strategy, rounds: 8 });
  assert.ok(crashed.killedAt! >= 3 && crashed.killedAt! < 8, `killed mid-study (after round ${crashed.killedAt})`);
  // The streamed server step kept the moments in blobs, named in the committed state.
  assert.deepEqual(Object.keys((crashed.lastState as { momentBlobs: Record<string, string> }).momentBlobs), ['m', 'v']);
  const clean = await runFederation({ strategy, rounds: 8 });
  assert.deepEqual([...crashed.digests.entries()], [...clean.digests.entries()], 'the interrupted run ends with exactly the model of an uninterrupted one');
});
