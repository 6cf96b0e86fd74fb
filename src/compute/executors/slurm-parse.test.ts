import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchScript, formatSlurmTime, gpuCount, mapSlurmState, parseExitCode, parseSacct, parseSlurmDuration,
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
