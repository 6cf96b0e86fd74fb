/**
 * An external trainer's own sample-level DP-SGD at real site agents: the agent hands each trainer the plan (σ, q,
 * steps, a secret seed) in task.json, and its accountant charges the site's account from what the trainer declares
 * it did, not from the plan. A trainer that declares more than the plan is a task error (trainer_failed) and nothing
 * is charged or uploaded; a site whose own budget cannot pay for the plan refuses before its trainer starts
 * (budget_exhausted). The study lead sees both; the round commits with the one sound update.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor } from '../protocol/tensors.js';
import { epsilonFor } from '../privacy/rdp.js';
import { adminOf, runSetu, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import { python, skipWithoutTorch } from '../testing/python.js';

const SDK = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'python', 'setu_trainer');

/** A trainer that writes down the plan it was handed and declares `declare(plan)` (a Python expression). */
const trainer = (declare: string) => `import json, os, setu_trainer as s
class T(s.Trainer):
    def fit(self, w, c):
        p = c.dp
        json.dump({"clipNorm": p.clip_norm, "noiseMultiplier": p.noise_multiplier, "sampleRate": p.sample_rate, "steps": p.steps, "seed": p.seed}, open(os.environ["PLAN_OUT"], "w"))
        c.declare_dp_sgd(*(${declare}))
        return {k: s.Tensor.from_list(v.dtype, v.shape, [x + 0.01 for x in v.tolist()]) for k, v in w.items()}, 40, {"loss": 0.5}
    def evaluate(self, w, c):
        return 10, {"loss": 0.5}
s.run(T())`;

const SITES: Record<string, { code: string; privacy?: unknown }> = {
  // Stops at half its steps with 1.5× the noise: more private than the plan, and charged as such.
  honest: { code: trainer('p.noise_multiplier * 1.5, p.sample_rate, p.steps // 2') },
  greedy: { code: trainer('p.noise_multiplier, p.sample_rate, p.steps + 1') },
  poor: { code: trainer('p.noise_multiplier, p.sample_rate, p.steps'), privacy: { budget: { epsilon: 0.01, delta: 1e-5 } } },
};

test('an external trainer\'s declared DP-SGD is what the site is charged; a declaration over the plan or a plan over the budget is a task error', { skip: skipWithoutTorch(), timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-ext-dpsgd-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    const lead = await studyLeadClient(admin, c.url);
    const csv = 'x\n' + Array.from({ length: 40 }, (_, i) => `${i}\n`).join('');
    for (const [name, s] of Object.entries(SITES)) {
      const siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'train.py'), s.code);
      writeFileSync(join(siteDir, 'data.csv'), csv);
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({
        coordinator: c.url, pollWaitMs: 2000, datasets: { d: { format: 'csv', path: 'data.csv' } }, ...(s.privacy ? { privacy: s.privacy } : {}),
        trainer: { kind: 'external', command: [python(), './train.py'], env: { PYTHONPATH: SDK, PLAN_OUT: join(siteDir, 'plan.json') }, features: ['dp-sgd'], timeoutSeconds: 60 },
      }));
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    await waitFor('3 sites whose external trainers declare dp-sgd', async () =>
      (await admin.json<{ trainer?: { kind: string; features: string[] } | null }[]>('GET', '/v1/sites')).filter((s) => s.trainer?.features.includes('dp-sgd')).length === 3 ? true : undefined, 60_000);
    const s = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'own dp-sgd', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: 'FedAvg' }, rounds: 2, minSites: 1,
      fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 120,
      privacy: { dp: { level: 'sample', epsilon: 5, delta: 1e-5, clipNorm: 1 } },
    });
    await lead.request('PUT', `/v1/studies/${s.id}/initial-weights`, { type: 'application/octet-stream', data: encodeSafetensors(mapWeights(['body.weight', 'head.bias'], () => tensor([2], new Float32Array([1, 2])))) });
    await lead.json('POST', `/v1/studies/${s.id}/start`, {});
    const detail = await waitFor('round 2 committed', async () => {
      const d = await lead.json<{ status: string; error: string | null; taskErrors?: { site: string; code: string; message: string; round: number }[]; rounds: { round: number; status: string }[] }>('GET', `/v1/studies/${s.id}`);
      if (d.status === 'failed') throw new Error(`study failed: ${d.error}`);
      return d.rounds.filter((r) => r.status === 'committed').length >= 2 ? d : undefined;
    }, 150_000);
    // What the honest trainer was handed: the agent's plan, with a secret seed (HKDF of the site's noise secret, hex).
    const plan = JSON.parse(readFileSync(join(dir, 'honest', 'plan.json'), 'utf8'));
    assert.equal(plan.clipNorm, 1);
    assert.equal(plan.steps, 10);
    assert.equal(plan.sampleRate, 0.1, 'q = batch / rows = 4 / 40');
    assert.match(plan.seed, /^[0-9a-f]{64}$/);
    // Charged from its declaration (5 steps at 1.5σ a round), not from the plan, once a round.
    const budget = JSON.parse(readFileSync(join(dir, 'honest', 'state', 'status.json'), 'utf8')).budgets[s.id];
    assert.equal(budget.charges, 2);
    const declared = epsilonFor(plan.noiseMultiplier * 1.5, 1e-5, 0.1, 2 * 5);
    assert.ok(Math.abs(budget.spent - declared) < 1e-6 * declared, `spent ε ${budget.spent}, the accountant's for the declarations ${declared}`);
    assert.ok(budget.spent < epsilonFor(plan.noiseMultiplier, 1e-5, 0.1, 2 * 10) / 2, 'well under what the plan would have cost');
    const ledger = await c.store.studySpend(s.id);
    const sites = Object.fromEntries((await admin.json<{ id: string; name: string }[]>('GET', '/v1/sites')).map((x) => [x.id, x.name]));
    assert.deepEqual(ledger.map((l) => [sites[l.siteId], l.releases, l.steps]), [['honest', 2, 10]], 'the coordinator\'s ledger holds the honest site\'s declared steps only');
    // The greedy trainer's declaration is refused at its agent; the poor site refuses before its trainer runs.
    const errors = (detail.taskErrors ?? []).filter((e) => e.round === 1);
    const why = Object.fromEntries(errors.map((e) => [e.site, `${e.code}: ${e.message}`]));
    assert.match(why['greedy']!, /^trainer_failed: external \(.*train\.py\) failed \(dp\): external trainer DP-SGD: 11 steps exceed the plan's 10/);
    assert.match(why['poor']!, /^budget_exhausted: privacy budget: this task \(dp-sgd, .*over this site's budget ε=0\.01/);
    assert.equal(existsSync(join(dir, 'poor', 'plan.json')), false, 'the poor site\'s trainer never saw its data');
    for (const n of ['greedy', 'poor']) assert.equal(JSON.parse(readFileSync(join(dir, n, 'state', 'status.json'), 'utf8')).budgets?.[s.id]?.charges ?? 0, 0, `${n} was charged nothing`);
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
