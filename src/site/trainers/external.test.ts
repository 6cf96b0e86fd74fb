import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeSafetensors } from '../../protocol/safetensors.js';
import { tensor, zerosLike, type Weights } from '../../protocol/tensors.js';
import { LogisticRegression } from '../../learning/models/logistic.js';
import { createRng } from '../../learning/rng.js';
import type { FitConfig } from '../../learning/types.js';
import { parseCsv } from '../data/csv.js';
import { parseDataSchema } from '../data/schema.js';
import { loadTabular, normaliseTabular } from '../data/tabular.js';
import { ExternalTrainerError, runExternalTrainer, type ExternalTask } from './external.js';

const here = dirname(fileURLToPath(import.meta.url));
const PY_TRAINER = resolve(here, '..', '..', '..', 'examples', 'trainers', 'logistic_trainer.py');
const tmp = (): string => mkdtempSync(join(tmpdir(), 'setu-ext-test-'));

const schema = parseDataSchema({
  features: [
    { name: 'a', type: 'numeric' },
    { name: 'b', type: 'numeric' },
    { name: 'grp', type: 'categorical', levels: ['x', 'y', 'z'], dropFirst: true },
  ],
  task: { kind: 'binary', label: 'outcome', positive: { equals: ['yes'] } },
  preprocessing: { normalise: 'site' },
  split: { kind: 'column', column: 'set' },
});

/** A CSV drawn from a known logistic model, with missing values and a split column. */
function writeSiteCsv(dir: string): string {
  const rng = createRng(5);
  const lines = ['a,b,grp,outcome,set'];
  for (let i = 0; i < 300; i++) {
    const a = 50 + 10 * rng.normal(), b = rng.normal(), g = ['x', 'y', 'z'][rng.nextInt(3)]!;
    const z = 0.15 * (a - 50) - 1.2 * b + (g === 'z' ? 1 : 0);
    const y = rng.next() < 1 / (1 + Math.exp(-z)) ? 'yes' : 'no';
    lines.push(`${i % 37 === 0 ? '?' : a.toFixed(3)},${b.toFixed(4)},${g},${y},${i % 4 === 0 ? 'test' : 'train'}`);
  }
  const path = join(dir, 'site.csv');
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

function task(weights: Weights, dataFile: string, fit: FitConfig): ExternalTask {
  return { round: 3, model: { kind: 'logistic', inputDim: 4 }, fit, seed: 42, dataFile, data: { schema }, weights };
}

test('the Python trainer runs for real and returns weights that lower the training loss', async () => {
  const dir = tmp();
  const csvPath = writeSiteCsv(dir);
  const model = new LogisticRegression(4);
  const w0 = model.init(createRng(1));
  const fit: FitConfig = { localSteps: 150, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } };
  const res = await runExternalTrainer({ command: ['python3', PY_TRAINER], timeoutMs: 60_000 }, task(w0, csvPath, fit));
  // Setu's own reading of the same file and schema, to judge the weights independently.
  const data = loadTabular(parseCsv(readFileSync(csvPath, 'utf8'), csvPath), schema);
  const { train } = normaliseTabular(data, schema);
  assert.equal(res.numExamples, train.n);
  assert.deepEqual(Object.keys(res.weights), ['weight', 'bias']);
  const all = Array.from({ length: train.n }, (_, i) => i);
  const before = model.lossAndGrad(w0, train, all, zerosLike(w0));
  const after = model.lossAndGrad(res.weights, train, all, zerosLike(w0));
  assert.ok(after < before - 0.05, `loss ${before} -> ${after}`);
  // The trainer's own report agrees with Setu's computation of the same quantities.
  assert.ok(Math.abs(res.metrics['lossBefore']! - before) < 1e-5);
  assert.ok(Math.abs(res.metrics['loss']! - after) < 1e-4);
  assert.match(res.stdoutTail, /done: 150 steps on \d+ rows/);
});

test('with global normalisation the Python trainer uses the federated statistics it is given', async () => {
  const dir = tmp();
  const csvPath = writeSiteCsv(dir);
  const globalSchema = { ...schema, preprocessing: { normalise: 'global' as const } };
  const data = loadTabular(parseCsv(readFileSync(csvPath, 'utf8'), csvPath), globalSchema);
  // Statistics unlike this site's own, as if other sites had shifted them.
  const stats = { mean: [45, 0.5, 0.3, 0.3], std: [12, 2, 1, 1] };
  const { train } = normaliseTabular(data, globalSchema, stats);
  const model = new LogisticRegression(4);
  const w0 = model.init(createRng(2));
  const t = { ...task(w0, csvPath, { localSteps: 20, batchSize: 16, optimizer: { kind: 'sgd', lr: 0.05 } }), data: { schema: globalSchema, stats } };
  const res = await runExternalTrainer({ command: ['python3', PY_TRAINER], timeoutMs: 60_000 }, t);
  const before = model.lossAndGrad(w0, train, Array.from({ length: train.n }, (_, i) => i), zerosLike(w0));
  assert.ok(Math.abs(res.metrics['lossBefore']! - before) < 1e-5, `${res.metrics['lossBefore']} vs ${before}`);
  // Without the statistics the trainer refuses, naming what is missing.
  await assert.rejects(runExternalTrainer({ command: ['python3', PY_TRAINER] }, { ...t, data: { schema: globalSchema } }), /exited with status 2[\s\S]*needs task\.data\.stats/);
});

/** Runs a short Python program as the trainer and returns the error it causes. */
async function failure(code: string, extra: Partial<Parameters<typeof runExternalTrainer>[0]> = {}, signal?: AbortSignal): Promise<ExternalTrainerError> {
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  try {
    await runExternalTrainer({ command: ['python3', '-c', code], timeoutMs: 20_000, ...extra }, task(w, '/data/site.csv', { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }), signal);
  } catch (e) {
    assert.ok(e instanceof ExternalTrainerError, String(e));
    return e;
  }
  assert.fail('the trainer was expected to fail');
}

test('a non-zero exit is an error carrying the stderr tail', async () => {
  const e = await failure('import sys; print("x" * 100000, file=sys.stderr); print("boom: column age is empty", file=sys.stderr); sys.exit(3)', { tailBytes: 1000 });
  assert.equal(e.kind, 'exit');
  assert.match(e.message, /exited with status 3/);
  assert.match(e.message, /boom: column age is empty/);
  assert.ok(e.stderrTail.length <= 1000);
});

test('the trainer sees task.json and its work directory, but not the agent\'s environment', async () => {
  process.env['SETU_TEST_SECRET'] = 'do-not-leak';
  const e = await failure(
    'import os, json, sys; t = json.load(open(os.environ["SETU_TASK"])); ' +
      'print(json.dumps({"secret": os.environ.get("SETU_TEST_SECRET"), "cwd": os.getcwd() == os.environ["SETU_WORKDIR"], ' +
      '"task": t, "weights": os.path.exists(t["paths"]["weights"]), "extra": os.environ.get("EXTRA")}), file=sys.stderr); sys.exit(1)',
    { env: { EXTRA: 'given' } },
  );
  delete process.env['SETU_TEST_SECRET'];
  const seen = JSON.parse(e.stderrTail);
  assert.equal(seen.secret, null);
  assert.equal(seen.cwd, true);
  assert.equal(seen.weights, true);
  assert.equal(seen.extra, 'given');
  assert.deepEqual(
    { setu: seen.task.setu, round: seen.task.round, seed: seen.task.seed, model: seen.task.model, path: seen.task.data.path, schema: seen.task.data.schema },
    { setu: 1, round: 3, seed: 42, model: { kind: 'logistic', inputDim: 4 }, path: '/data/site.csv', schema },
  );
  assert.match(seen.task.paths.output, /setu-trainer-.*\/output\.safetensors$/);
});

test('a timeout kills the whole process group, even a trainer that ignores SIGTERM', async () => {
  const dir = tmp();
  const pidFile = join(dir, 'child.pid');
  const started = Date.now();
  const e = await failure(
    `import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); ` +
      `p = subprocess.Popen(["sleep", "60"]); open(${JSON.stringify(pidFile)}, "w").write(str(p.pid)); time.sleep(60)`,
    { timeoutMs: 2000, killGraceMs: 300 },
  );
  assert.equal(e.kind, 'timeout');
  assert.match(e.message, /timed out after 2000 ms/);
  assert.ok(Date.now() - started < 10_000);
  const child = Number(readFileSync(pidFile, 'utf8'));
  // Dead means gone or a zombie (a container's PID 1 may never reap it); poll briefly.
  let state = '';
  for (let i = 0; i < 40; i++) {
    try {
      state = readFileSync(`/proc/${child}/stat`, 'utf8').split(') ')[1]![0]!;
    } catch {
      state = 'gone';
    }
    if (state === 'gone' || state === 'Z') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(state === 'gone' || state === 'Z', `the trainer's child process is still running (state ${state})`);
});

test('an abort signal stops the trainer', async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 300);
  const e = await failure('import time; time.sleep(30)', {}, ac.signal);
  assert.equal(e.kind, 'aborted');
});

test('a command that cannot start is a spawn error', async () => {
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  await assert.rejects(
    runExternalTrainer({ command: ['/nonexistent/setu-trainer'] }, task(w, 'x.csv', { localSteps: 1, batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } })),
    (e: unknown) => e instanceof ExternalTrainerError && e.kind === 'spawn' && /could not be started/.test(e.message),
  );
  await assert.rejects(runExternalTrainer({ command: [] }, task(w, 'x.csv', { localSteps: 1, batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } })), /non-empty array/);
});

/** Fixture outputs copied into the work directory by a trivial trainer. */
async function badOutput(output: Uint8Array | null, result: string | null): Promise<ExternalTrainerError> {
  const dir = tmp();
  const files: string[] = [];
  if (output) writeFileSync(join(dir, 'out'), output), files.push(`import shutil; shutil.copy(${JSON.stringify(join(dir, 'out'))}, "output.safetensors")`);
  if (result !== null) writeFileSync(join(dir, 'res'), result), files.push(`import shutil; shutil.copy(${JSON.stringify(join(dir, 'res'))}, "result.json")`);
  return failure(files.join('\n') || 'pass');
}

test('missing or invalid outputs are refused with a message that says what is wrong', async () => {
  const good = encodeSafetensors({ weight: tensor([1, 4], new Float32Array([1, 2, 3, 4])), bias: tensor([1]) });
  const okResult = '{"numExamples": 10, "metrics": {"loss": 0.5}}';
  const cases: Array<[Uint8Array | null, string | null, RegExp]> = [
    [null, okResult, /output\.safetensors was not written/],
    [new Uint8Array([1, 2, 3]), okResult, /not valid safetensors/],
    [encodeSafetensors({ weight: tensor([4, 1]), bias: tensor([1]) }), okResult, /tensor "weight" has shape \[4,1\], expected \[1,4\]/],
    [encodeSafetensors({ weight: tensor([1, 4]) }), okResult, /missing tensor "bias"/],
    [encodeSafetensors({ weight: tensor([1, 4]), bias: tensor([1]), extra: tensor([1]) }), okResult, /unexpected tensor "extra"/],
    [encodeSafetensors({ weight: tensor([1, 4], new Float32Array([0, NaN, 0, 0])), bias: tensor([1]) }), okResult, /non-finite value \(NaN\) at index 1/],
    [good, null, /result\.json is missing/],
    [good, '{"numExamples": 10,', /result\.json is missing or not JSON/],
    [good, '{"numExamples": 0, "metrics": {}}', /numExamples must be a positive integer, got 0/],
    [good, '{"numExamples": 2.5, "metrics": {}}', /numExamples must be a positive integer, got 2\.5/],
    [good, '{"numExamples": 3, "metrics": {"auc": "high"}}', /metric "auc" must be a finite number/],
  ];
  for (const [out, res, want] of cases) {
    const e = await badOutput(out, res);
    assert.equal(e.kind, 'output', e.message);
    assert.match(e.message, want);
  }
});

test('valid fixture outputs pass and come back in the model\'s tensor order', async () => {
  const dir = tmp();
  writeFileSync(join(dir, 'out'), encodeSafetensors({ bias: tensor([1], new Float32Array([0.5])), weight: tensor([1, 4], new Float32Array([1, 2, 3, 4])) }));
  writeFileSync(join(dir, 'res'), '{"numExamples": 7, "metrics": {"loss": 0.25}}');
  const code = `import shutil; shutil.copy(${JSON.stringify(join(dir, 'out'))}, "output.safetensors"); shutil.copy(${JSON.stringify(join(dir, 'res'))}, "result.json"); print("ok")`;
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  const res = await runExternalTrainer({ command: ['python3', '-c', code] }, task(w, 'x.csv', { localSteps: 1, batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } }));
  assert.deepEqual(Object.keys(res.weights), ['weight', 'bias']);
  assert.deepEqual(Array.from(res.weights['weight']!.data), [1, 2, 3, 4]);
  assert.equal(res.numExamples, 7);
  assert.deepEqual(res.metrics, { loss: 0.25 });
  assert.equal(res.stdoutTail, 'ok\n');
});
