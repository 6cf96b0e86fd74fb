import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fitStep, loadLocalPolicy, localPolicyRefusal, runPlacedFit } from './placed.js';
import { parseSiteConfig } from './config.js';
import { parseSiteLocalPolicy } from '../governance/policy.js';
import type { TaskMessage } from '../protocol/api.js';
import { initialWeights } from '../coordinator/engine.js';
import type { ComputeResource } from '../compute/types.js';

const task = (over: Partial<TaskMessage> = {}): TaskMessage => ({
  taskId: 'st.r1.site-1', studyId: 'st', round: 1, kind: 'fit', modelVersionId: 'st.v0', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 },
  fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, strategy: 'FedAvg', seed: 3, deadlineAt: Date.now() + 120_000, ...over,
} as TaskMessage);

const policy = parseSiteLocalPolicy(`
site: cleveland
notice: our ethics board's conditions
rules:
  minExamplesPerUpdate: 50
  computeJurisdictions: [same]
  updateProtection: { crossBorder: secagg, maxEpsilon: 1.0 }
`);

test('the site-local policy refuses a task that breaks it, naming each rule; it allows one that meets it', () => {
  // 5 steps × batch 4 = 20 examples behind the update; the site asks for 50. Training placed in JP; the site allows only IN.
  const r = localPolicyRefusal(policy, task({ fit: { localSteps: 5, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } } }), { trainExamples: 199, siteJurisdiction: 'IN', computeJurisdiction: 'JP' });
  assert.match(r!, /min-examples: the update would rest on 20 examples; this site's policy requires at least 50/);
  assert.match(r!, /compute-location: training would run in JP; this site's policy allows only IN/);
  assert.match(r!, /update-protection: this site's policy requires secagg/);
  const withSecagg = task({ privacy: { secagg: true } } as Partial<TaskMessage>);
  assert.equal(localPolicyRefusal(policy, withSecagg, { trainExamples: 199, siteJurisdiction: 'IN', computeJurisdiction: 'IN' }), null);
  // Without a policy file nothing is refused; evaluation tasks are never refused.
  assert.equal(localPolicyRefusal(undefined, task(), { trainExamples: 1 }), null);
  assert.equal(localPolicyRefusal(policy, task({ kind: 'evaluate' }), { trainExamples: 1 }), null);
});

test('site.yaml names its policy file; a malformed one stops the agent with the file and the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-policy-'));
  writeFileSync(join(dir, 'local.yaml'), 'site: x\nrules:\n  minExamplesPerUpdate: -3\n');
  const cfg = parseSiteConfig(`coordinator: http://127.0.0.1:1\npolicy: local.yaml\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\n`, join(dir, 'site.yaml'));
  assert.throws(() => loadLocalPolicy(cfg), /local\.yaml: rules\.minExamplesPerUpdate: must be between 1/);
  assert.throws(() => parseSiteConfig(`coordinator: http://x\ncompute: { mode: elsewhere }\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\n`, 'site.yaml'), /site\.yaml: \/compute/);
});

test('a placed task run as a real job (setu site run-task under the local executor) gives the same model as in-process training', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-placed-'));
  const cfg = parseSiteConfig(`coordinator: http://127.0.0.1:1\nstateDir: state\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\n`, join(dir, 'site.yaml'));
  const t = task();
  const global = initialWeights({ name: 'x', dataset: 'heart', model: t.model, strategy: { name: 'FedAvg' }, rounds: 1, fit: t.fit!, seed: t.seed });
  const inProcess = fitStep(cfg, { task: t, siteName: 'cleveland', global, stream: undefined, clientState: undefined });
  const resource: ComputeResource = { id: 'in-local', name: 'local', institution: 'cdac', jurisdiction: 'IN', scheduler: 'local', capacity: { cpus: 1, gpus: [], ramGiB: 1 } };
  const jobs: string[] = [];
  const run = await runPlacedFit(cfg, resource, { task: t, siteName: 'cleveland', global, stream: undefined, clientState: undefined }, async (id, state) => { jobs.push(`${id}:${state}`); }, () => {});
  assert.equal(jobs.length, 1);
  assert.match(jobs[0]!, /^local-\d+-\d+:submitted$/);
  assert.equal(run.out.numExamples, inProcess.numExamples);
  assert.equal(run.out.loss, inProcess.loss);
  assert.deepEqual(run.out.stream, inProcess.stream);
  for (const k of Object.keys(inProcess.weights)) assert.deepEqual(run.out.weights[k]!.data, inProcess.weights[k]!.data, k);
  assert.equal(run.usage.scheduler, 'local');
  assert.equal(run.usage.resourceId, 'in-local');
  assert.equal(run.usage.cpuBasis, 'measured');
  assert.ok(run.usage.cpuSeconds > 0 && run.usage.wallSeconds > 0);
});

test('a placed job that cannot run is an error naming the resource and the cause, and reports no job', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-placed-k8s-'));
  const cfg = parseSiteConfig(`coordinator: http://127.0.0.1:1\nstateDir: state\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\n`, join(dir, 'site.yaml'));
  const t = task();
  const global = initialWeights({ name: 'x', dataset: 'heart', model: t.model, strategy: { name: 'FedAvg' }, rounds: 1, fit: t.fit!, seed: t.seed });
  // A Kubernetes resource whose kubectl does not exist here: the executor cannot apply the Job.
  const resource: ComputeResource = { id: 'in-k8s', name: 'k8s', institution: 'iisc', jurisdiction: 'IN', scheduler: 'kubernetes', capacity: { cpus: 4, gpus: [], ramGiB: 8 },
    schedulerConfig: { kubeContext: 'nowhere', image: 'ghcr.io/setu/trainer:1' } };
  const jobs: string[] = [];
  const prev = process.env.PATH;
  process.env.PATH = dir; // no kubectl on this PATH
  try {
    await assert.rejects(runPlacedFit(cfg, resource, { task: t, siteName: 'cleveland', global, stream: undefined, clientState: undefined }, async (id) => { jobs.push(id); }, () => {}), /kubectl/);
  } finally {
    process.env.PATH = prev;
  }
  assert.deepEqual(jobs, []);
});
