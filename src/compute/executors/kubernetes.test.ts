import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesExecutor } from './kubernetes.js';
import type { TrainingJob } from '../types.js';

// There is no cluster here: what can be checked without one is that the executor refuses to run unconfigured,
// and that a missing kubectl is a clear error (the manifests are tested in kubernetes-manifest.test.ts).
const job: TrainingJob = { argv: ['python3', 'train.py'], workdir: '/work/t1', cpus: 1, gpus: 0, memoryMiB: 512,
  timeLimitSeconds: 60, studyId: 'heart', taskId: 't1', siteId: 'aiims', dataJurisdiction: 'IN' };

test('a manifest is built from the resource configuration', () => {
  const ex = new KubernetesExecutor({ image: 'trainer:1', context: 'iisc', namespace: 'setu' });
  const m = ex.manifest(job) as { metadata: { namespace: string } };
  assert.equal(m.metadata.namespace, 'setu');
});

test('the executor refuses to run without a configured context, and says why kubectl cannot run', async () => {
  assert.throws(() => new KubernetesExecutor({ image: 'x' }), /needs a kube context or kubeconfig/);
  assert.throws(() => new KubernetesExecutor({ image: '', context: 'c' }), /needs a container image/);
  const ex = new KubernetesExecutor({ image: 'x', context: 'iisc', kubectl: '/nonexistent/kubectl' });
  await assert.rejects(ex.submit(job), /cannot run kubectl/);
});
