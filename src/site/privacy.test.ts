/** The site's DP plan, budget check and account: planned σ meets the target exactly over the study; refusal says why. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskMessage } from '../protocol/api.js';
import { SiteState } from './state.js';
import type { SiteConfig } from './config.js';
import { budgetCap, budgetRefusal, dpPlanOf, loadBudget, spendAndPersist } from './privacy.js';
import { epsilonFor } from '../privacy/rdp.js';

const task = (dp: NonNullable<TaskMessage['privacy']>['dp'], rounds = 5): TaskMessage => ({
  taskId: 't.r1.s', studyId: 'study-1', round: 1, kind: 'fit', modelVersionId: 'v0', dataset: 'heart', model: { kind: 'logistic', inputDim: 2 },
  fit: { localSteps: 40, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, strategy: 'FedAvg', seed: 1, deadlineAt: 0,
  privacy: { ...(dp ? { dp } : {}), rounds, clientsPerRound: 4, secagg: false },
});
const cfg = (privacy?: SiteConfig['privacy']): SiteConfig => ({ coordinator: 'http://x', datasets: {}, configDir: '.', stateDirAbs: '.', ...(privacy ? { privacy } : {}) }) as SiteConfig;

test('sample-level plan: q = batch/rows, σ so that rounds × steps cost the study target; spends compose to it', () => {
  const t = task({ level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 });
  const p = dpPlanOf(t, 200)!;
  assert.equal(p.mechanism, 'dp-sgd');
  assert.equal(p.plan.sampleRate, 0.02);
  assert.equal(p.plan.steps, 40);
  const eps = epsilonFor(p.plan.noiseMultiplier, 1e-3, 0.02, 5 * 40);
  assert.ok(eps <= 1 && eps > 0.99, `the whole study costs ε=${eps}`);
  assert.equal(dpPlanOf({ ...t, privacy: { rounds: 5, clientsPerRound: 4, secagg: true } }, 200), undefined, 'SecAgg+ alone spends nothing');
  const c = dpPlanOf(task({ level: 'client', epsilon: 1, delta: 1e-3, clipNorm: 0.1, noiseMultiplier: 3, mode: 'central' }), 200)!;
  assert.deepEqual(c.plan, { sampleRate: 1, noiseMultiplier: 3, steps: 1 });
});

test('budget: the site cap wins over the study target; five rounds fit, a sixth is refused with the numbers; the account persists', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-sitepriv-'));
  try {
    const state = new SiteState(dir);
    const t = task({ level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 });
    assert.deepEqual(budgetCap(cfg(), t), { epsilon: 1, delta: 1e-3 }, 'no site budget: the study target');
    assert.deepEqual(budgetCap(cfg({ budget: { epsilon: 3, delta: 1e-5 } }), t), { epsilon: 3, delta: 1e-5 });
    assert.deepEqual(budgetCap(cfg({ budget: { epsilon: 3, delta: 1e-5 }, studies: { 'study-1': { epsilon: 0.5, delta: 1e-5 } } }), t), { epsilon: 0.5, delta: 1e-5 });
    const p = dpPlanOf(t, 200)!;
    let last = 0;
    for (let r = 1; r <= 5; r++) {
      const b = loadBudget(state, cfg(), t); // re-read from disk every round, as the agent does
      assert.equal(budgetRefusal(b, p), undefined, `round ${r} fits`);
      const rep = spendAndPersist(state, t.studyId, b, p, `r${r}`);
      assert.ok(rep.epsilon > last && rep.epsilon <= 1, `round ${r}: ε=${rep.epsilon}`);
      last = rep.epsilon;
    }
    const b = loadBudget(state, cfg(), t);
    assert.equal(b.records().length, 5);
    assert.match(budgetRefusal(b, p)!, /would bring the study's ε to 1\.\d+, over this site's budget ε=1 \(δ=0\.001; spent so far 0\.99/);
    // A smaller cap set later keeps what was spent and refuses at once.
    assert.ok(budgetRefusal(loadBudget(state, cfg({ budget: { epsilon: 0.5, delta: 1e-3 } }), t), p));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
