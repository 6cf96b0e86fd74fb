import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseResource, parseTrainingJob, ComputeValidationError } from './validate.js';
import { resources } from './fixtures.js';

test('the demo resources are valid', () => {
  for (const r of resources) assert.deepEqual(parseResource(structuredClone(r)), r);
});

test('a bad resource lists every problem with its path', () => {
  const bad = { ...resources[0]!, jurisdiction: 'India', capacity: { cpus: 0, gpus: [], ramGiB: 1 }, extra: 1 };
  assert.throws(() => parseResource(bad), (e: unknown) => {
    assert.ok(e instanceof ComputeValidationError);
    const text = e.problems.join('\n');
    assert.match(text, /\/jurisdiction/);
    assert.match(text, /\/capacity\/cpus/);
    return true;
  });
});

test('free capacity above capacity, inverted windows and an image-less Kubernetes resource are refused', () => {
  const r = {
    ...resources[1]!, schedulerConfig: { namespace: 'x' },
    availability: { now: { cpus: 999, gpus: 5, ramGiB: 1 },
      windows: [{ from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z', free: { cpus: 1, gpus: 0, ramGiB: 1 } }] },
  };
  assert.throws(() => parseResource(r), (e: unknown) => {
    assert.ok(e instanceof ComputeValidationError);
    assert.equal(e.problems.length, 4, e.message);
    assert.match(e.message, /999 free exceeds capacity 64/);
    assert.match(e.message, /'from' must be before 'to'/);
    assert.match(e.message, /needs a container image/);
    return true;
  });
});

test('a malformed window instant is refused', () => {
  const r = { ...resources[3]!, availability: { windows: [{ from: 'tomorrow', to: '2026-01-01T00:00:00Z', free: { cpus: 1, gpus: 0, ramGiB: 1 } }] } };
  assert.throws(() => parseResource(r), /windows\/0\/from/);
});

test('training jobs: relative workdirs and empty argv are refused', () => {
  const job = { argv: ['python3'], workdir: '/tmp/x', cpus: 1, gpus: 0, memoryMiB: 100, timeLimitSeconds: 60,
    studyId: 's', taskId: 't', siteId: 'x', dataJurisdiction: 'IN' };
  assert.deepEqual(parseTrainingJob(job), job);
  assert.throws(() => parseTrainingJob({ ...job, workdir: 'rel', argv: [] }), (e: unknown) =>
    e instanceof ComputeValidationError && /\/workdir/.test(e.message) && /\/argv/.test(e.message));
});

test('GPU settings: gpuGres only on Slurm, a GRES type listed once, a type name without spaces', () => {
  const r = { ...resources[0]!, capacity: { ...resources[0]!.capacity, gpus: [{ model: 'A100', memoryGiB: 40, count: 4, gresType: 'a100' }, { model: 'A100 80G', memoryGiB: 80, count: 4, gresType: 'a100' }] } };
  assert.throws(() => parseResource(r), /\/capacity\/gpus: gresType a100 is listed more than once/);
  assert.throws(() => parseResource({ ...resources[3]!, schedulerConfig: { gpuGres: 'gpu' } }), /\/schedulerConfig\/gpuGres: a Slurm setting .*scheduler is local/);
  assert.throws(() => parseResource({ ...resources[0]!, capacity: { ...resources[0]!.capacity, gpus: [{ model: 'A100', memoryGiB: 40, count: 1, gresType: 'a 100' }] } }), /\/capacity\/gpus\/0\/gresType/);
  assert.equal(parseResource({ ...resources[0]!, schedulerConfig: { gpuGres: 'shard' } }).schedulerConfig?.gpuGres, 'shard');
});
