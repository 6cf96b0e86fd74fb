// Against the REAL single-node cluster that .ci/setup-slurm.sh brings up (slurmctld, slurmd, slurmdbd, munge).
// In CI (CI set) a missing cluster is a failure, never a skip; on a developer machine without Slurm these skip,
// saying how to get one.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SlurmExecutor, slurmAvailable, slurmQueue } from './slurm.js';
import { runCommand } from './executor.js';
import type { TrainingJob } from '../types.js';

const ci = !!process.env.CI && process.env.CI !== 'false';
let skip: string | false = false;

before(async () => {
  const a = await slurmAvailable();
  if (a.ok) return;
  if (ci) throw new Error(`CI: Slurm is required and not available (${a.detail}); .ci/run must run .ci/setup-slurm.sh`);
  skip = `Slurm not available here (${a.detail}); run 'sudo bash .ci/setup-slurm.sh' to bring up a local cluster`;
  console.log(`# SKIP slurm tests: ${skip}`);
});

const node = process.execPath;
async function job(argv: string[], o: Partial<TrainingJob> = {}): Promise<TrainingJob> {
  return { argv, workdir: await mkdtemp(join(tmpdir(), 'setu-slurm-')), cpus: 1, gpus: 0, memoryMiB: 200,
    timeLimitSeconds: 120, studyId: 'heart', taskId: 'task-1', siteId: 'aiims', dataJurisdiction: 'IN', ...o };
}
const ex = new SlurmExecutor({ pollMs: 250 });

test('a job runs on Slurm and sacct accounts its CPU time', async (t) => {
  if (skip) return t.skip(skip);
  process.env.SETU_TEST_SECRET = 'do-not-leak';
  // The inner loop keeps getrusage (a syscall, dear under gVisor) from dominating: the burn stays user time.
  const j = await job(['/bin/sh', '-c',
    `echo "epochs=$EPOCHS secret=$SETU_TEST_SECRET"; ${node} -e "let x = 0; while (process.cpuUsage().user < 500000) for (let i = 0; i < 1e6; i++) x += i"`],
  { env: { EPOCHS: '3' } });
  const h = await ex.submit(j);
  delete process.env.SETU_TEST_SECRET;
  assert.match(h.id, /^\d+$/);
  assert.match(await readFile(join(j.workdir, 'setu-task-1.sbatch'), 'utf8'), /^#SBATCH --cpus-per-task=1$/m);
  const seen: string[] = [];
  const s = await ex.wait(h, { onProgress: (st) => seen.push(st.state) });
  assert.equal(s.state, 'completed');
  assert.ok(seen.length >= 1 && seen.at(-1) === 'completed');
  const r = await ex.collect(h);
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdoutTail, 'epochs=3 secret=\n'); // job env in, submitter env out (--export=NONE)
  assert.equal(r.usage.cpuBasis, 'measured');
  // The job burns 0.5 s of its own CPU time: sacct's TotalCPU must see it all, and no more than wall time allows.
  assert.ok(r.usage.cpuSeconds >= 0.49, `TotalCPU ${r.usage.cpuSeconds}`);
  // ElapsedRaw is whole seconds, so a job of about half a second may be accounted as 0 or 1 s of wall time.
  assert.ok(r.usage.wallSeconds >= 0 && r.usage.wallSeconds <= 30 && r.usage.cpuSeconds <= r.usage.wallSeconds + 1, JSON.stringify(r.usage));
  assert.equal(r.usage.gpuSeconds, 0);
});

test('a failing job reports its exit code and stderr', async (t) => {
  if (skip) return t.skip(skip);
  const h = await ex.submit(await job([node, '-e', 'console.error("bad data"); process.exit(3)'], { taskId: 'fail' }));
  const r = await ex.collect(h);
  assert.equal(r.status.state, 'failed');
  assert.equal(r.exitCode, 3);
  assert.equal(r.stderrTail, 'bad data\n');
});

test('scancel stops a running job', async (t) => {
  if (skip) return t.skip(skip);
  const h = await ex.submit(await job(['/bin/sleep', '60'], { taskId: 'cancel' }));
  for (let i = 0; (await ex.status(h)).state !== 'running'; i++) {
    assert.ok(i < 100, 'job started within 20 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  const listed = (await slurmQueue()).find((e) => e.id === h.id);
  assert.deepEqual([listed?.name, listed?.state, listed?.cpus], ['setu-cancel', 'RUNNING', 1]);
  await ex.cancel(h);
  const r = await ex.collect(h);
  assert.equal(r.status.state, 'cancelled');
});

test('a request the cluster cannot satisfy is refused by sbatch with its reason', async (t) => {
  if (skip) return t.skip(skip);
  // The CI node has no GPUs configured.
  await assert.rejects(ex.submit(await job(['/bin/true'], { taskId: 'gpu', gpus: 1 })), /sbatch refused task gpu: .+/);
});

/** Whether the cluster has the device-less `testslot` GRES of .ci/setup-slurm.sh (older setups lack it). */
async function hasTestSlot(): Promise<boolean> {
  const r = await runCommand('sinfo', ['-h', '-o', '%G']);
  return /(^|,)testslot:\d/m.test(r.stdout);
}

test('--gres reaches Slurm and comes back from sacct as GPU-seconds (through a device-less test GRES, not a GPU)', async (t) => {
  if (skip) return t.skip(skip);
  if (!(await hasTestSlot())) {
    if (ci) throw new Error('CI: the cluster lacks the testslot GRES; .ci/setup-slurm.sh declares it');
    return t.skip("the cluster has no 'testslot' GRES; run 'sudo bash .ci/setup-slurm.sh' again");
  }
  // A resource whose "GPUs" are allocated under the name testslot: the plumbing of a GPU job end to end (script,
  // sbatch, the allocation, AllocTRES, the arithmetic), on a machine that has no GPU to give.
  const gx = new SlurmExecutor({ pollMs: 250, gpuGres: 'testslot' });
  // The job lasts past a whole second so ElapsedRaw (whole seconds) is at least 1.
  const j = await job([node, '-e', 'console.log(`gpus=${process.env.SETU_GPUS} cvd=${process.env.CUDA_VISIBLE_DEVICES ?? "unset"}`); setTimeout(() => {}, 1500)'], { taskId: 'gres', gpus: 1 });
  const h = await gx.submit(j);
  assert.match(await readFile(join(j.workdir, 'setu-gres.sbatch'), 'utf8'), /^#SBATCH --gres=testslot:1$/m);
  const r = await gx.collect(h);
  assert.equal(r.exitCode, 0, r.stderrTail);
  // Slurm sets CUDA_VISIBLE_DEVICES only for a gres with device files; the script leaves it alone for a GPU job.
  assert.equal(r.stdoutTail, 'gpus=1 cvd=unset\n');
  const acct = await runCommand('sacct', ['-j', h.id, '-X', '-n', '-P', '--format=AllocTRES']);
  assert.match(acct.stdout, /gres\/testslot=1/);
  assert.ok(r.usage.wallSeconds >= 1, JSON.stringify(r.usage));
  assert.equal(r.usage.gpuSeconds, r.usage.wallSeconds); // 1 allocated × ElapsedRaw
  // The default executor reads gres/gpu only: the same allocation is no GPU time.
  const plain = await ex.collect(h);
  assert.equal(plain.usage.gpuSeconds, 0);
});

test('a job without GPUs is told it has none', async (t) => {
  if (skip) return t.skip(skip);
  const h = await ex.submit(await job(['/bin/sh', '-c', 'echo "gpus=$SETU_GPUS cvd=[${CUDA_VISIBLE_DEVICES-unset}]"'], { taskId: 'nogpu' }));
  const r = await ex.collect(h);
  assert.equal(r.stdoutTail, 'gpus=0 cvd=[]\n');
});
