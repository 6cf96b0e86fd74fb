import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalExecutor, parseTimes } from './local.js';
import type { TrainingJob } from '../types.js';

const node = process.execPath;
async function job(argv: string[], o: Partial<TrainingJob> = {}): Promise<TrainingJob> {
  return { argv, workdir: await mkdtemp(join(tmpdir(), 'setu-local-')), cpus: 1, gpus: 0, memoryMiB: 128,
    timeLimitSeconds: 30, studyId: 'study-1', taskId: 'task-1', siteId: 'aiims', dataJurisdiction: 'IN', ...o };
}

test('parseTimes takes the children line of `times`', () => {
  assert.equal(parseTimes('0m0.010000s 0m0.000000s\n1m2.500000s 0m0.250000s\n'), 62.75);
  assert.equal(parseTimes(''), undefined);
});

test('argv reaches the program untouched by any shell', async () => {
  const ex = new LocalExecutor();
  const h = await ex.submit(await job(['/bin/echo', 'a;b', '$HOME', '"q"', '*']));
  const r = await ex.collect(h);
  assert.equal(r.exitCode, 0);
  assert.equal(r.status.state, 'completed');
  assert.equal(r.stdoutTail, 'a;b $HOME "q" *\n');
  assert.equal(await readFile(join(h.job.workdir, `setu-${h.id}.out`), 'utf8'), r.stdoutTail);
});

test('CPU seconds are measured from the kernel, GPU seconds are allocation × wall', async () => {
  const ex = new LocalExecutor();
  // Burns 0.3 s of its own CPU (not wall) time in a grandchild, so load elsewhere cannot shrink it; the wrapper's
  // `times` still counts the grandchild.
  const h = await ex.submit(await job(['/bin/sh', '-c', `${node} -e "let x = 0; while (process.cpuUsage().user < 300000) for (let i = 0; i < 1e6; i++) x += i"`],
    { gpus: 2 }));
  const r = await ex.collect(h);
  assert.equal(r.usage.cpuBasis, 'measured');
  assert.ok(r.usage.cpuSeconds >= 0.29 && r.usage.cpuSeconds <= r.usage.wallSeconds + 0.1, JSON.stringify(r.usage));
  assert.ok(r.usage.wallSeconds >= 0.29);
  assert.equal(r.usage.gpuSeconds, 2 * r.usage.wallSeconds);
});

test('a failing job reports its exit code and stderr', async () => {
  const ex = new LocalExecutor();
  const h = await ex.submit(await job([node, '-e', 'console.error("bad data"); process.exit(3)']));
  const progress: string[] = [];
  const s = await ex.wait(h, { onProgress: (st) => progress.push(st.state), pollMs: 20 });
  assert.equal(s.state, 'failed');
  assert.equal(s.exitCode, 3);
  assert.deepEqual([progress[0], progress.at(-1)], ['running', 'failed']);
  assert.equal((await ex.collect(h)).stderrTail, 'bad data\n');
});

test('a missing program exits 127, like a shell would say', async () => {
  const ex = new LocalExecutor();
  const r = await ex.collect(await ex.submit(await job(['/nonexistent/trainer'])));
  assert.equal(r.exitCode, 127);
  assert.match(r.stderrTail, /not found/);
});

test('only PATH/HOME/LANG/TZ and the job env reach the job', async () => {
  process.env.SETU_TEST_SECRET = 'do-not-leak';
  try {
    const ex = new LocalExecutor();
    const r = await ex.collect(await ex.submit(await job(['/usr/bin/env'], { env: { EPOCHS: '3' } })));
    assert.match(r.stdoutTail, /^EPOCHS=3$/m);
    assert.match(r.stdoutTail, /^SETU_TASK_ID=task-1$/m);
    assert.doesNotMatch(r.stdoutTail, /do-not-leak/);
  } finally { delete process.env.SETU_TEST_SECRET; }
});

test('timeout kills the whole process group', async () => {
  const ex = new LocalExecutor();
  const j = await job(['/bin/sh', '-c', 'sleep 30 & echo $! > grandchild.pid; wait'], { timeLimitSeconds: 1 });
  const t0 = Date.now();
  const r = await ex.collect(await ex.submit(j));
  assert.equal(r.status.state, 'timeout');
  assert.ok(Date.now() - t0 < 5000, 'stopped soon after the limit');
  assert.equal(r.usage.cpuBasis, 'measured'); // the wrapper traps SIGTERM, reaps the job and still reports `times`
  const pid = (await readFile(join(j.workdir, 'grandchild.pid'), 'utf8')).trim();
  // Dead means gone, or a zombie (Z) left for a container init that does not reap orphans.
  const state = existsSync(`/proc/${pid}`) ? (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]![0] : 'gone';
  assert.ok(state === 'gone' || state === 'Z', `the backgrounded sleep was killed too (state ${state})`);
});

test('a job that ignores SIGTERM is SIGKILLed after the grace period; its CPU time is then allocation-based', async () => {
  const ex = new LocalExecutor({ killGraceSeconds: 0.3 });
  const h = await ex.submit(await job([node, '-e', 'process.on("SIGTERM",()=>{}); console.log("up"); setInterval(()=>{},1000)']));
  await new Promise((r) => setTimeout(r, 300));
  await ex.cancel(h);
  const r = await ex.collect(h);
  assert.equal(r.status.state, 'cancelled');
  assert.equal(r.exitCode, 137);
  assert.equal(r.usage.cpuBasis, 'allocated');
  assert.equal(r.usage.cpuSeconds, r.usage.wallSeconds);
});

test('a bad workdir is refused before anything runs', async () => {
  await assert.rejects(new LocalExecutor().submit(await job(['/bin/true'], { workdir: '/nonexistent/dir' })),
    /workdir \/nonexistent\/dir is not a directory/);
});
