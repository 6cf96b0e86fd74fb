import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildJobManifest, jobName, labelValue, statusFromK8sJob, wallSecondsOfK8sJob } from './kubernetes-manifest.js';
import type { TrainingJob } from '../types.js';

const job: TrainingJob = { argv: ['python3', 'train.py', '--epochs', '3'], env: { LR: '0.1' }, workdir: '/work/t1',
  cpus: 4, gpus: 2, memoryMiB: 8192, timeLimitSeconds: 1800, studyId: 'heart-2026', taskId: 'Round 3/AIIMS',
  siteId: 'aiims-delhi', dataJurisdiction: 'IN' };

// Structural view of the manifest, typed for the assertions below.
type M = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels: Record<string, string>;
  annotations: Record<string, string> }; spec: { backoffLimit: number; activeDeadlineSeconds: number;
  ttlSecondsAfterFinished: number; template: { metadata: { labels: Record<string, string> }; spec: {
  restartPolicy: string; nodeSelector: Record<string, string>; containers: { name: string; image: string;
  command: string[]; workingDir: string; env: { name: string; value: string }[];
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  volumeMounts: { name: string; mountPath: string }[] }[]; volumes: Record<string, unknown>[] } } } };

test('the Job manifest carries resources, jurisdiction, labels and the workdir volume', () => {
  const m = buildJobManifest(job, { image: 'registry.example/setu-trainer:1', namespace: 'setu',
    workdirClaim: 'setu-scratch' }) as unknown as M;
  assert.equal(m.apiVersion, 'batch/v1');
  assert.equal(m.kind, 'Job');
  assert.equal(m.metadata.namespace, 'setu');
  assert.match(m.metadata.name, /^setu-round-3-aiims-[0-9a-f]{10}$/);
  assert.equal(m.spec.backoffLimit, 0);
  assert.equal(m.spec.activeDeadlineSeconds, 1800);
  assert.equal(m.spec.ttlSecondsAfterFinished, 3600);
  assert.deepEqual(m.metadata.labels, { 'app.kubernetes.io/managed-by': 'setu', 'setu.dev/study': 'heart-2026',
    'setu.dev/task': 'Round_3_AIIMS', 'setu.dev/site': 'aiims-delhi', 'setu.dev/data-jurisdiction': 'IN' });
  assert.equal(m.metadata.annotations['setu.dev/task-id'], 'Round 3/AIIMS');
  const pod = m.spec.template.spec;
  assert.deepEqual(m.spec.template.metadata.labels, m.metadata.labels);
  assert.equal(pod.restartPolicy, 'Never');
  assert.deepEqual(pod.nodeSelector, { 'setu.dev/jurisdiction': 'IN' });
  const c = pod.containers[0]!;
  assert.deepEqual(c.command, job.argv);
  assert.equal(c.image, 'registry.example/setu-trainer:1');
  assert.equal(c.workingDir, '/work/t1');
  assert.deepEqual(c.resources.requests, { cpu: '4', memory: '8192Mi', 'nvidia.com/gpu': '2' });
  assert.deepEqual(c.resources.limits, c.resources.requests);
  assert.deepEqual(c.env.find((e) => e.name === 'LR'), { name: 'LR', value: '0.1' });
  assert.deepEqual(c.volumeMounts, [{ name: 'workdir', mountPath: '/work/t1' }]);
  assert.deepEqual(pod.volumes, [{ name: 'workdir', persistentVolumeClaim: { claimName: 'setu-scratch' } }]);
});

test('CPU-only jobs ask for no GPU; no claim means an emptyDir', () => {
  const m = buildJobManifest({ ...job, gpus: 0, dataJurisdiction: 'JP' }, { image: 'x' }) as unknown as M;
  const pod = m.spec.template.spec;
  assert.equal('nvidia.com/gpu' in pod.containers[0]!.resources.limits, false);
  assert.deepEqual(pod.nodeSelector, { 'setu.dev/jurisdiction': 'JP' });
  assert.deepEqual(pod.volumes, [{ name: 'workdir', emptyDir: {} }]);
  assert.equal(m.metadata.namespace, undefined);
});

test('a GPU type selects nodes by GPU feature discovery\'s product label; an unknown type is refused', () => {
  const gpus = [{ model: 'NVIDIA A100-SXM4-80GB', memoryGiB: 80, count: 4, gresType: 'a100' }, { model: 'Tesla T4', memoryGiB: 16, count: 2 }];
  const m = buildJobManifest({ ...job, gpus: 1, gpuType: 'a100' }, { image: 'x', gpus }) as unknown as M;
  assert.deepEqual(m.spec.template.spec.nodeSelector, { 'setu.dev/jurisdiction': job.dataJurisdiction, 'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB' });
  const t4 = buildJobManifest({ ...job, gpus: 1, gpuType: 'tesla t4' }, { image: 'x', gpus }) as unknown as M;
  assert.equal(t4.spec.template.spec.nodeSelector['nvidia.com/gpu.product'], 'Tesla-T4');
  assert.throws(() => buildJobManifest({ ...job, gpus: 1, gpuType: 'h100' }, { image: 'x', gpus }), /gpuType 'h100': the resource lists no GPU of that type \(it offers 4 × NVIDIA A100-SXM4-80GB/);
});

test('names are DNS-1123 and differ per study; label values are legal', () => {
  const a = jobName({ studyId: 's1', taskId: 'T'.repeat(200) });
  assert.ok(a.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(a), a);
  assert.notEqual(jobName({ studyId: 's1', taskId: 't' }), jobName({ studyId: 's2', taskId: 't' }));
  assert.equal(labelValue('--a b/c--'), 'a_b_c');
  assert.equal(labelValue('x'.repeat(100)).length, 63);
});

test('Job status: running, complete, failed, deadline exceeded', () => {
  assert.equal(statusFromK8sJob({}).state, 'pending');
  assert.equal(statusFromK8sJob({ status: { active: 1 } }).state, 'running');
  assert.equal(statusFromK8sJob({ status: { conditions: [{ type: 'Complete', status: 'True' }] } }).state, 'completed');
  const f = statusFromK8sJob({ status: { conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] } });
  assert.deepEqual([f.state, f.detail], ['failed', 'BackoffLimitExceeded']);
  assert.equal(statusFromK8sJob({ status: { conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' }] } })
    .state, 'timeout');
  assert.equal(wallSecondsOfK8sJob({ status: { startTime: '2026-01-01T00:00:00Z', completionTime: '2026-01-01T00:01:30Z' } }), 90);
  assert.equal(wallSecondsOfK8sJob({ status: { startTime: '2026-01-01T00:00:00Z', conditions: [{ type: 'Failed',
    status: 'True', lastTransitionTime: '2026-01-01T00:00:10Z' }] } }), 10);
});
