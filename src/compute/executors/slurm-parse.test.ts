import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchScript, formatSlurmTime, gpuCount, gresDirective, mapSlurmState, parseExitCode, parseSacct, parseSlurmDuration,
  parseTres, usageFromSacct } from './slurm-parse.js';
import type { TrainingJob } from '../types.js';

test('sacct durations in every shape sacct prints', () => {
  assert.equal(parseSlurmDuration('00:00.400'), 0.4);
  assert.equal(parseSlurmDuration('00:00:01.234'), 1.234);
  assert.equal(parseSlurmDuration('01:02:03'), 3723);
  assert.equal(parseSlurmDuration('1-02:03:04'), 93784);
  assert.equal(parseSlurmDuration('2-03'), 2 * 86400 + 3 * 3600);
  assert.equal(parseSlurmDuration('12:30.5'), 750.5);
  for (const bad of ['', 'abc', '1:2:3:4', '1.5', '-01:00']) assert.throws(() => parseSlurmDuration(bad), /not a Slurm duration/);
});

test('time limits are written as D-HH:MM:SS', () => {
  assert.equal(formatSlurmTime(59), '0-00:00:59');
  assert.equal(formatSlurmTime(93784), '1-02:03:04');
  assert.equal(formatSlurmTime(0.2), '0-00:00:01');
});

test('states, exit codes and TRES', () => {
  assert.equal(mapSlurmState('CANCELLED by 0'), 'cancelled');
  assert.equal(mapSlurmState('OUT_OF_MEMORY'), 'failed');
  assert.equal(mapSlurmState('TIMEOUT'), 'timeout');
  assert.equal(mapSlurmState('COMPLETING'), 'running');
  assert.throws(() => mapSlurmState('WHATEVER'), /unknown Slurm job state/);
  assert.equal(parseExitCode('0:0'), 0);
  assert.equal(parseExitCode('3:0'), 3);
  assert.equal(parseExitCode('0:9'), 137);
  assert.equal(gpuCount(parseTres('billing=1,cpu=2,gres/gpu=2,mem=512M,node=1')), 2);
  assert.equal(gpuCount(parseTres('cpu=2,gres/gpu:a100=1,gres/gpu:h100=2')), 3);
  assert.equal(gpuCount(parseTres('cpu=1,mem=256M,node=1')), 0);
});

test('usage from sacct rows: allocation row, TotalCPU, GPUs × elapsed', () => {
  const rows = parseSacct([
    '42|COMPLETED|0:0|10|00:07.500|billing=4,cpu=4,gres/gpu=2,mem=1G,node=1',
    '42.batch|COMPLETED|0:0|10|00:07.500|cpu=4,gres/gpu=2,mem=1G,node=1',
    '42.extern|COMPLETED|0:0|10|00:00:00|billing=4,cpu=4,gres/gpu=2,mem=1G,node=1',
    '',
  ].join('\n'));
  const u = usageFromSacct('42', rows)!;
  assert.equal(u.cpuSeconds, 7.5);
  assert.equal(u.wallSeconds, 10);
  assert.equal(u.gpuSeconds, 20);
  assert.equal(usageFromSacct('43', rows), undefined);
  // An older job 42 listed first (ids restarted): the newer record and only its steps count.
  const older = parseSacct('42|FAILED|1:0|99|10:00.000|cpu=1,node=1\n42.batch|FAILED|1:0|99|10:00.000|cpu=1,node=1');
  const both = usageFromSacct('42', [...older, ...rows])!;
  assert.deepEqual([both.row.state, both.cpuSeconds], ['COMPLETED', 7.5]);
  assert.throws(() => parseSacct('42|COMPLETED'), /unexpected sacct line/);
});

test('batch script: directives from the job, env quoted, argv exec-ed without word splitting', () => {
  const job: TrainingJob = { argv: ['/usr/bin/python3', 'train.py', "it's; rm -rf /"], env: { LR: '0.1 $x' },
    workdir: '/scratch/setu/t1', cpus: 4, gpus: 2, memoryMiB: 2048, timeLimitSeconds: 3600, studyId: 'heart',
    taskId: 'r3/aiims', siteId: 'aiims', dataJurisdiction: 'IN' };
  const s = batchScript(job, { partition: 'gpu', account: 'setu', path: '/usr/bin:/bin' });
  const directives = s.split('\n').filter((l) => l.startsWith('#SBATCH ')).map((l) => l.slice(8));
  assert.deepEqual(directives, ['--job-name=setu-r3_aiims', '--ntasks=1', '--cpus-per-task=4', '--mem=2048M',
    '--time=0-01:00:00', '--chdir=/scratch/setu/t1', '--output=/scratch/setu/t1/setu-%j.out',
    '--error=/scratch/setu/t1/setu-%j.err', '--export=NONE', '--gres=gpu:2', '--partition=gpu', '--account=setu']);
  assert.match(s, /^export LR='0\.1 \$x'$/m);
  assert.match(s, /^export PATH='\/usr\/bin:\/bin'$/m);
  assert.ok(s.endsWith(`exec '/usr/bin/python3' 'train.py' 'it'\\''s; rm -rf /'\n`));
  assert.doesNotMatch(batchScript({ ...job, gpus: 0 }), /--gres/);
  assert.throws(() => batchScript({ ...job, workdir: '/a b' }), /directive with whitespace/);
});

test('GPU TRES as sacct prints them: untyped, typed, both (counted once), another GRES name', () => {
  // From Slurm's accounting docs: with AccountingStorageTRES=gres/gpu,gres/gpu:a100 a job carries both keys.
  assert.equal(gpuCount(parseTres('billing=8,cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1')), 2);
  assert.equal(gpuCount(parseTres('cpu=4,gres/gpu:v100=1,mem=8G,node=1')), 1);
  // Real output of the test cluster (.ci/setup-slurm.sh) for `sbatch --gres=testslot:1`: not a GPU unless the
  // resource says its GPUs are allocated under that name.
  const real = parseSacct('9|COMPLETED|0:0|3|00:00.002|billing=1,cpu=1,gres/testslot=1,mem=256M,node=1\n9.batch|COMPLETED|0:0|3|00:00.002|cpu=1,gres/testslot=1,mem=256M,node=1');
  assert.equal(usageFromSacct('9', real)!.gpuSeconds, 0);
  assert.equal(usageFromSacct('9', real, 'testslot')!.gpuSeconds, 3);
  const gpu = parseSacct('77|COMPLETED|0:0|120|03:50.000|billing=8,cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1');
  assert.equal(usageFromSacct('77', gpu)!.gpuSeconds, 240);
});

test('--gres: gpu:N, gpu:<type>:N through the resource\'s gresType, another GRES name; unknown types refused', () => {
  const gpus = [{ model: 'NVIDIA A100-SXM4-80GB', memoryGiB: 80, count: 4, gresType: 'a100' }, { model: 'T4', memoryGiB: 16, count: 2 }];
  assert.equal(gresDirective({ gpus: 0 }), undefined);
  assert.equal(gresDirective({ gpus: 2 }), '--gres=gpu:2');
  assert.equal(gresDirective({ gpus: 2, gpuType: 'a100' }, { gpus }), '--gres=gpu:a100:2');
  assert.equal(gresDirective({ gpus: 1, gpuType: 'nvidia a100-sxm4-80gb' }, { gpus }), '--gres=gpu:a100:1');
  assert.equal(gresDirective({ gpus: 1 }, { gpuGres: 'testslot' }), '--gres=testslot:1');
  assert.throws(() => gresDirective({ gpus: 1, gpuType: 'T4' }, { gpus }), /gpuType 'T4': the resource lists no GPU of that type with a gresType \(it offers 4 × NVIDIA A100-SXM4-80GB \(gres type a100, 80 GiB\), 2 × T4 \(16 GiB\)\)/);
});

test('batch script: a job without GPUs sees none; a job with GPUs keeps the CUDA_VISIBLE_DEVICES Slurm gives it', () => {
  const job: TrainingJob = { argv: ['/usr/bin/python3', 'train.py'], workdir: '/scratch/setu/t2', cpus: 2, gpus: 0, memoryMiB: 1024,
    timeLimitSeconds: 600, studyId: 'cxr', taskId: 't2', siteId: 'aiims', dataJurisdiction: 'IN' };
  const cpu = batchScript(job);
  assert.match(cpu, /^export CUDA_VISIBLE_DEVICES=''$/m);
  assert.match(cpu, /^export SETU_GPUS='0'$/m);
  const gpu = batchScript({ ...job, gpus: 2, gpuType: 'a100' }, { gpus: [{ model: 'A100', memoryGiB: 80, count: 8, gresType: 'a100' }] });
  assert.match(gpu, /^#SBATCH --gres=gpu:a100:2$/m);
  assert.doesNotMatch(gpu, /CUDA_VISIBLE_DEVICES/);
  assert.match(gpu, /^export SETU_GPUS='2'$/m);
});
