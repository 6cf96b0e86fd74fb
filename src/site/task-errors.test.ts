/** How the agent classifies what went wrong with a task, and how its loop backs off when failures repeat. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Backoff, MAX_REFUSED_RESULTS, RefusedResults, TaskFailure, checkModelFits, classifyTaskError, pause } from './task-errors.js';
import { readCsv } from './data/csv.js';
import { ApiError, CoordinatorUnavailable } from './http.js';
import { ExternalTrainerError } from './trainers/external.js';

test('a broken file is bad_data, named by its file name only; trainer crashes, model mismatches and budgets have their codes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-task-errors-'));
  try {
    const file = join(dir, 'cohort.csv');
    writeFileSync(file, 'age,bp\n40,120\n"41,130\n');
    let csv: unknown;
    try {
      readCsv(file);
    } catch (e) {
      csv = e;
    }
    const c = classifyTaskError(csv)!;
    assert.equal(c.code, 'bad_data');
    assert.match(c.message, /cohort\.csv/);
    assert.ok(!c.message.includes(dir), `the site's directories stay at the site: ${c.message}`);
    let missing: unknown;
    try {
      readCsv(join(dir, 'gone.csv'));
    } catch (e) {
      missing = e;
    }
    const m = classifyTaskError(missing)!;
    assert.equal(m.code, 'bad_data');
    assert.ok(!m.message.includes(dir), m.message);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(classifyTaskError(new ExternalTrainerError('exit', 'exited with status 1'))!.code, 'trainer_failed');
  assert.equal(classifyTaskError(new TaskFailure('budget_exhausted', 'over budget'))!.code, 'budget_exhausted');
  assert.equal(classifyTaskError(new Error('something odd'))!.code, 'other');
  assert.throws(() => checkModelFits({ kind: 'logistic', inputDim: 13 }, 3), (e: unknown) => e instanceof TaskFailure && e.code === 'model_mismatch' && /takes 13 inputs; this site's data encodes to 3 columns/.test(e.message));
  assert.doesNotThrow(() => checkModelFits({ kind: 'logistic', inputDim: 3 }, 3));
  assert.equal(classifyTaskError(new Error('x'.repeat(5000)))!.message.length, 2000, 'bounded');
});

test('what is not the task\'s fault is not a task error: the coordinator refusing or unreachable, an abort', () => {
  assert.equal(classifyTaskError(new ApiError(409, 'conflict', 'task closed')), undefined);
  assert.equal(classifyTaskError(new CoordinatorUnavailable('http://x', 'connection refused')), undefined);
  assert.equal(classifyTaskError(new ExternalTrainerError('aborted', 'stopping')), undefined);
  assert.equal(classifyTaskError(Object.assign(new Error('aborted'), { name: 'AbortError' })), undefined);
});

test('backoff doubles from 1 s to a 60 s cap and starts over after a success; a pause ends on abort', async () => {
  const b = new Backoff();
  assert.deepEqual(Array.from({ length: 9 }, () => b.failed()), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  assert.equal(b.streak, 9);
  b.reset();
  assert.equal(b.failed(), 1000);
  const ac = new AbortController();
  const t0 = Date.now();
  setTimeout(() => ac.abort(), 20);
  await pause(60_000, ac.signal);
  assert.ok(Date.now() - t0 < 5000, 'the pause ended with the abort');
});

test('a task whose result the coordinator refused three times is given up with the last reason', () => {
  const r = new RefusedResults();
  for (let k = 1; k < MAX_REFUSED_RESULTS; k++) {
    r.note('t1', `refusal ${k}`);
    assert.equal(r.giveUp('t1'), undefined, `after ${k} refusal(s) the task is redone`);
  }
  r.note('t1', 'numExamples 200 exceeds the 30 examples site gamma declared');
  r.note('t2', 'other task');
  const f = r.giveUp('t1')!;
  assert.equal(f.code, 'result_refused');
  assert.equal(f.message, "the coordinator refused this site's result 3 times; the last time: numExamples 200 exceeds the 30 examples site gamma declared");
  assert.equal(r.giveUp('t1'), undefined, 'reported once');
  assert.equal(r.giveUp('t2'), undefined);
});
