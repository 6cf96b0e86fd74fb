import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duration, modelCard, modelCardMarkdown, type CardInput } from './model-card.js';
import { newStudy, propose, approve, withdraw, start } from './lifecycle.js';
import type { StudySpec } from '../protocol/api.js';

const spec: StudySpec = {
  name: 'heart', description: 'Heart-disease risk, research only', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' },
  rounds: 3, fit: { localSteps: 100, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } }, seed: 7,
};

function input(over: Partial<CardInput> = {}): CardInput {
  let l = newStudy('s1', ['a', 'b', 'c']);
  l = propose(l, { by: 'lead', at: 1 }).study;
  for (const s of ['a', 'b', 'c']) l = approve(l, s, { purpose: 'research', conditions: ['no commercial use'] }, { by: `adm-${s}`, at: 2 }).study;
  l = start(l, { by: 'lead', at: 3 }).study;
  l = withdraw(l, 'c', 'ethics review', { by: 'adm-c', at: 4 }, 2).study;
  return {
    studyId: 's1', name: 'heart', spec, completedAt: Date.UTC(2026, 0, 1), finalModel: { id: 's1.v3', digest: 'ab'.repeat(32) }, lifecycle: l,
    sites: [
      { id: 'a', name: 'cleveland', institutionId: 'aiims', institution: 'AIIMS', jurisdiction: 'IN', trainExamples: 199, testExamples: 104, metrics: { accuracy: 0.8, loss: 0.5 } },
      { id: 'b', name: 'switzerland', institutionId: 'osaka', institution: 'Osaka UH', jurisdiction: 'JP', trainExamples: 98, testExamples: 25, metrics: { accuracy: 0.64, loss: 0.7 } },
      { id: 'c', name: 'va', institutionId: 'keio', institution: 'Keio UH', jurisdiction: 'JP', trainExamples: null, testExamples: null, metrics: {} },
    ],
    institutions: [{ id: 'aiims', name: 'AIIMS', kind: 'hospital', jurisdiction: 'IN' }, { id: 'osaka', name: 'Osaka UH', kind: 'hospital', jurisdiction: 'JP' }, { id: 'keio', name: 'Keio UH', kind: 'hospital', jurisdiction: 'JP' }],
    acrossSites: { accuracy: 0.75, loss: 0.55 },
    usage: [
      { taskId: 't1', studyId: 's1', siteId: 'a', siteInstitution: 'aiims', siteCountry: 'IN', resourceId: 'in-slurm', institution: 'cdac', country: 'IN', cpuSeconds: 2.5, gpuSeconds: 0, wallSeconds: 3 },
      { taskId: 't2', studyId: 's1', siteId: 'b', siteInstitution: 'osaka', siteCountry: 'JP', resourceId: 'jp-local', institution: 'riken', country: 'JP', cpuSeconds: 1.25, gpuSeconds: 4, wallSeconds: 2 },
    ],
    audit: { seq: 42, head: 'f'.repeat(64) },
    ...over,
  };
}

test('a model card states purpose, institutions, jurisdictions, examples, strategy, privacy, performance gap, compute by country and the seal', () => {
  const c = modelCard(input());
  assert.equal(c.study.purpose, 'Heart-disease risk, research only');
  assert.deepEqual(c.jurisdictions, ['IN', 'JP']);
  assert.deepEqual(c.institutions.map((i) => [i.id, i.kind, i.jurisdiction]), [['aiims', 'hospital', 'IN'], ['osaka', 'hospital', 'JP'], ['keio', 'hospital', 'JP']]);
  assert.equal(c.sites[0]!.trainExamples, 199);
  assert.equal(c.sites[0]!.participation, 'approved');
  assert.deepEqual(c.sites[0]!.terms, { purpose: 'research', conditions: ['no commercial use'] });
  assert.equal(c.sites[2]!.participation, 'withdrawn from round 2: ethics review');
  assert.equal(c.training.strategy, 'FedAvg');
  assert.equal(c.training.rounds, 3);
  assert.equal(c.privacy.secagg, false);
  assert.equal(c.privacy.dp, null);
  assert.match(c.privacy.summary, /^none/);
  assert.equal(c.performance.metric, 'accuracy');
  assert.deepEqual(c.performance.best, { site: 'cleveland', value: 0.8 });
  assert.deepEqual(c.performance.worst, { site: 'switzerland', value: 0.64 });
  assert.ok(Math.abs(c.performance.gap! - 0.16) < 1e-12);
  assert.deepEqual(c.performance.perSite.find((p) => p.site === 'va'), { site: 'va', value: null });
  assert.deepEqual(c.compute.byCountry, [
    { country: 'IN', contributedCpuSeconds: 2.5, contributedGpuSeconds: 0, consumedCpuSeconds: 2.5, consumedGpuSeconds: 0 },
    { country: 'JP', contributedCpuSeconds: 1.25, contributedGpuSeconds: 4, consumedCpuSeconds: 1.25, consumedGpuSeconds: 4 },
  ]);
  assert.equal(c.compute.total.tasks, 2);
  assert.deepEqual(c.audit, { seq: 42, head: 'f'.repeat(64) });
  const md = modelCardMarkdown(c);
  for (const h of ['# Model card: heart', '## Purpose', '## Institutions and jurisdictions', '## Training', '## Privacy guarantees', '## Performance', '## Compute used', '## Seal']) assert.ok(md.includes(h), h);
  assert.match(md, /\| cleveland \| AIIMS \| hospital \| IN \| approved \| research; no commercial use \| 199 \| 104 \|/);
  assert.match(md, /gap 0\.1600/);
  assert.match(md, /Strategy FedAvg, 3 rounds; a logistic regression on 13 inputs; each round 100 local steps of batch 4, SGD at learning rate 0\.001; seed 7\./);
  assert.match(md, /\| IN \| 2\.5 s \| 0\.0 s \| 2\.5 s \| 0\.0 s \|/);
  // "Pooled" means data in one place; a federation's figure over its sites is named for what it is.
  assert.match(md, /\| \*\*all sites\*\* \| 0\.7500 \| 0\.5500 \|/);
  assert.doesNotMatch(md, /\bpooled\b(?! test set| in one place|: the rows)/i);
  assert.ok(md.includes('f'.repeat(64)));
});

test('compute time reads in seconds, minutes or hours', () => {
  assert.deepEqual([0.25, 12.4, 200, 7500].map(duration), ['0.3 s', '12 s', '3 min 20 s', '2 h 05 min']);
});

test('privacy comes from what the study recorded: SecAgg+ and (ε, δ)', () => {
  const c = modelCard(input({ spec: { ...spec, privacy: { secagg: {}, dp: { level: 'sample', epsilon: 2, delta: 1e-5, clipNorm: 1 } } } as StudySpec,
    spent: [{ siteId: 'a', epsilon: 1.8764, delta: 1e-5, mechanism: 'dp-sgd' }] }));
  assert.equal(c.privacy.secagg, true);
  assert.deepEqual(c.privacy.dp, { epsilon: 2, delta: 1e-5 });
  assert.deepEqual(c.privacy.spent, [{ site: 'cleveland', epsilon: 1.8764, delta: 1e-5, mechanism: 'dp-sgd' }]);
  const md = modelCardMarkdown(c);
  assert.match(md, /\(ε, δ\) = \(2, 0\.00001\)/);
  assert.match(md, /spent by cleveland \(privacy ledger\): ε = 1\.876 at δ = 0\.00001 \(dp-sgd\)/);
});

test('a survival study reports the gap on the C-index; with no metrics there is no gap and no seal claimed', () => {
  const base = input();
  const c = modelCard({ ...base, sites: base.sites.map((s, i) => ({ ...s, metrics: { cIndex: 0.6 + i * 0.05 } })) });
  assert.equal(c.performance.metric, 'cIndex');
  assert.ok(Math.abs(c.performance.gap! - 0.1) < 1e-12);
  const empty = modelCard({ ...base, sites: base.sites.map((s) => ({ ...s, metrics: {} })), audit: null });
  assert.equal(empty.performance.gap, null);
  assert.match(modelCardMarkdown(empty), /No audit chain was available/);
});
