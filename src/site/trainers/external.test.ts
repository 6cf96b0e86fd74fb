import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeSafetensors, encodeSafetensors } from '../../protocol/safetensors.js';
import { layoutOf, mapWeights, tensor, zerosLike, type Weights } from '../../protocol/tensors.js';
import { writeReleaseFile } from '../release-file.js';
import type { TaskMessage } from '../../protocol/api.js';
import { LOCAL_TENSORS_FILE, startingWeights } from '../tensor-rules.js';
import type { TrainerProgress } from './trainer.js';
import { LogisticRegression } from '../../learning/models/logistic.js';
import { createRng } from '../../learning/rng.js';
import type { FitConfig } from '../../learning/types.js';
import { parseCsv } from '../data/csv.js';
import { parseDataSchema } from '../data/schema.js';
import { loadTabular, normaliseTabular } from '../data/tabular.js';
import { ExternalTrainer, ExternalTrainerError, runExternalTrainer, type ExternalTask } from './external.js';

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

function task(weights: Weights, dataFile: string, fit: FitConfig, extra: Partial<ExternalTask> = {}): ExternalTask {
  return { kind: 'fit', taskId: 's.r3.a', studyId: 's', round: 3, site: 'alpha', model: { kind: 'logistic', inputDim: 4 }, fit, seed: 42, dataFile, data: { schema }, weights, ...extra };
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
  assert.equal(res.fit!.numExamples, train.n);
  assert.deepEqual(Object.keys(res.weights!), ['weight', 'bias']);
  const all = Array.from({ length: train.n }, (_, i) => i);
  const before = model.lossAndGrad(w0, train, all, zerosLike(w0));
  const after = model.lossAndGrad(res.weights!, train, all, zerosLike(w0));
  assert.ok(after < before - 0.05, `loss ${before} -> ${after}`);
  // The trainer's own report agrees with Setu's computation of the same quantities.
  assert.ok(Math.abs(res.fit!.metrics['lossBefore']! - before) < 1e-5);
  assert.ok(Math.abs(res.fit!.metrics['loss']! - after) < 1e-4);
  assert.match(res.stdoutTail, /done: 150 steps on \d+ rows/);
  // It evaluated the incoming weights on the test rows, as Setu's own model does.
  const { test: testSet } = normaliseTabular(data, schema);
  const ev = model.evaluate(w0, testSet);
  assert.equal(res.evaluate!.numExamples, testSet.n);
  assert.ok(Math.abs(res.evaluate!.metrics['loss']! - ev.loss) < 1e-5, `${res.evaluate!.metrics['loss']} vs ${ev.loss}`);
  assert.equal(res.evaluate!.metrics['accuracy'], ev.accuracy);
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
  assert.ok(Math.abs(res.fit!.metrics['lossBefore']! - before) < 1e-5, `${res.fit!.metrics['lossBefore']} vs ${before}`);
  // Without the statistics the trainer refuses, naming what is missing.
  await assert.rejects(runExternalTrainer({ command: ['python3', PY_TRAINER] }, { ...t, data: { schema: globalSchema } }), /exited with status 2[\s\S]*needs task\.data\.stats/);
});

/** Runs a short Python program as the trainer and returns the error it causes. */
async function failure(code: string, extra: Partial<Parameters<typeof runExternalTrainer>[0]> = {}, signal?: AbortSignal, taskExtra: Partial<ExternalTask> = {}): Promise<ExternalTrainerError> {
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  try {
    await runExternalTrainer({ command: ['python3', '-c', code], timeoutMs: 20_000, ...extra }, task(w, '/data/site.csv', { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, taskExtra), signal);
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
    { setu: seen.task.setu, kind: seen.task.kind, round: seen.task.round, site: seen.task.site, seed: seen.task.seed, model: seen.task.model, path: seen.task.data.path, schema: seen.task.data.schema, tensors: seen.task.tensors },
    { setu: 2, kind: 'fit', round: 3, site: 'alpha', seed: 42, model: { kind: 'logistic', inputDim: 4 }, path: '/data/site.csv', schema,
      tensors: [{ name: 'weight', dtype: 'F32', shape: [1, 4], rule: 'aggregate' }, { name: 'bias', dtype: 'F32', shape: [1], rule: 'aggregate' }] },
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
  assert.match(e.message, /was still running after 2000 ms and was killed \(it reported no progress\)/);
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
  const okResult = '{"fit": {"numExamples": 10, "metrics": {"loss": 0.5}}}';
  const cases: Array<[Uint8Array | null, string | null, RegExp]> = [
    [null, okResult, /output\.safetensors was not written/],
    [new Uint8Array([1, 2, 3]), okResult, /not valid safetensors/],
    [encodeSafetensors({ weight: tensor([4, 1]), bias: tensor([1]) }), okResult, /tensor "weight" has shape \[4,1\], expected \[1,4\]/],
    [encodeSafetensors({ weight: tensor([1, 4]) }), okResult, /missing tensor "bias"/],
    [encodeSafetensors({ weight: tensor([1, 4]), bias: tensor([1]), extra: tensor([1]) }), okResult, /unexpected tensor "extra"/],
    [encodeSafetensors({ weight: tensor([1, 4], new Float32Array([0, NaN, 0, 0])), bias: tensor([1]) }), okResult, /non-finite value \(NaN\) at index 1/],
    [good, null, /result\.json is missing/],
    [encodeSafetensors({ weight: tensor([1, 4], undefined, 'F16'), bias: tensor([1]) }), okResult, /tensor "weight" is F16, expected F32/],
    [good, '{"fit": {"numExamples": 10,', /result\.json is missing or not JSON/],
    [good, '{"numExamples": 10, "metrics": {}}', /unexpected field "numExamples" \(contract version 2/],
    [good, '{"evaluate": {"numExamples": 3}}', /a fit task must report "fit"/],
    [good, '{"fit": {"numExamples": 0, "metrics": {}}}', /fit\.numExamples must be a positive integer, got 0/],
    [good, '{"fit": {"numExamples": 2.5, "metrics": {}}}', /fit\.numExamples must be a positive integer, got 2\.5/],
    [good, '{"fit": {"numExamples": 3, "metrics": {"auc": "high"}}}', /fit\.metrics\.auc must be a finite number/],
    [good, '{"fit": {"numExamples": 3, "metrics": {"__proto__": 1}}}', /name "__proto__" must start with a letter/],
    [good, '{"fit": {"numExamples": 3}, "evaluate": {"numExamples": 3, "metrics": {"loss": null}}}', /evaluate\.metrics\.loss must be a finite number/],
    [good, '{"fit": {"numExamples": 3}, "dpSgd": {"noiseMultiplier": 1, "sampleRate": 0.1, "steps": 1}}', /"dpSgd" is reported but the task asked for no DP-SGD/],
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
  writeFileSync(join(dir, 'res'), '{"fit": {"numExamples": 7, "metrics": {"loss": 0.25}}, "evaluate": {"numExamples": 3, "metrics": {"auroc": 0.9}}}');
  const code = `import shutil; shutil.copy(${JSON.stringify(join(dir, 'out'))}, "output.safetensors"); shutil.copy(${JSON.stringify(join(dir, 'res'))}, "result.json"); print("ok")`;
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  const res = await runExternalTrainer({ command: ['python3', '-c', code] }, task(w, 'x.csv', { localSteps: 1, batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } }));
  assert.deepEqual(Object.keys(res.weights!), ['weight', 'bias']);
  assert.deepEqual(Array.from(res.weights!['weight']!.data), [1, 2, 3, 4]);
  assert.deepEqual(res.fit, { numExamples: 7, metrics: { loss: 0.25 } });
  assert.deepEqual(res.evaluate, { numExamples: 3, metrics: { auroc: 0.9 } });
  assert.equal(res.stdoutTail, 'ok\n');
});

test('progress lines are parsed and reported as they come; a hang is killed naming the last progress', async () => {
  const seen: TrainerProgress[] = [];
  const code = 'import json, time, sys\n' +
    'print("setu:progress " + json.dumps({"step": 1, "of": 3, "metrics": {"loss": 0.9}}), flush=True)\n' +
    'print("setu:progress not json", flush=True)\n' +
    'print("setu:progress " + json.dumps({"step": -1}), flush=True)\n' +
    'print("setu:progress " + json.dumps({"step": 2, "of": 3, "message": "epoch 2"}), flush=True)\n' +
    'time.sleep(60)';
  const w = { weight: tensor([1, 4]), bias: tensor([1]) };
  const e = await runExternalTrainer({ command: ['python3', '-c', code], timeoutMs: 3000, killGraceMs: 200 }, task(w, 'x.csv', { localSteps: 1, batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } }), undefined, (p) => seen.push(p)).catch((x: unknown) => x);
  assert.ok(e instanceof ExternalTrainerError && e.kind === 'timeout', String(e));
  assert.deepEqual(seen, [{ step: 1, of: 3, metrics: { loss: 0.9 } }, { step: 2, of: 3, message: 'epoch 2' }]);
  assert.match(e.message, /its last progress: step 2 of 3, epoch 2/);
});

const dpPlan = { clipNorm: 1, noiseMultiplier: 1.1, sampleRate: 0.05, steps: 20, seed: 'c2VjcmV0' };

test('DP-SGD: the plan reaches the trainer; a report less private than the plan, or none, is refused', async () => {
  const dir = tmp();
  writeFileSync(join(dir, 'out'), encodeSafetensors({ weight: tensor([1, 4]), bias: tensor([1]) }));
  const run = (dp: string) => {
    const code = 'import json, os, shutil, sys\n' +
      't = json.load(open(os.environ["SETU_TASK"]))\n' +
      `shutil.copy(${JSON.stringify(join(dir, 'out'))}, "output.safetensors")\n` +
      `dp = ${dp}\n` +
      'r = {"fit": {"numExamples": 40, "metrics": {}}}\n' +
      'if dp is not None: r["dpSgd"] = dp\n' +
      'json.dump(r, open("result.json", "w"))\n' +
      'print(json.dumps(t["dpSgd"]))';
    const w = { weight: tensor([1, 4]), bias: tensor([1]) };
    return runExternalTrainer({ command: ['python3', '-c', code] }, task(w, 'x.csv', { localSteps: 20, batchSize: 2, optimizer: { kind: 'sgd', lr: 1 } }, { dpSgd: dpPlan }));
  };
  const ok = await run('{"noiseMultiplier": 1.1, "sampleRate": 0.05, "steps": 12}');
  assert.deepEqual(JSON.parse(ok.stdoutTail), dpPlan);
  assert.deepEqual(ok.dpSgd, { noiseMultiplier: 1.1, sampleRate: 0.05, steps: 12 }, 'fewer steps than planned: charged as done');
  for (const [dp, want] of [
    ['None', /reports no "dpSgd"/],
    ['{"noiseMultiplier": 0.9, "sampleRate": 0.05, "steps": 20}', /noise multiplier 0\.9 is below the plan's 1\.1/],
    ['{"noiseMultiplier": 1.1, "sampleRate": 0.2, "steps": 20}', /sampling rate 0\.2 is above the plan's 0\.05/],
    ['{"noiseMultiplier": 1.1, "sampleRate": 0.05, "steps": 21}', /21 steps exceed the plan's 20/],
    ['{"noiseMultiplier": "1", "sampleRate": 0.05, "steps": 1}', /dpSgd\.noiseMultiplier must be a finite number/],
  ] as const) {
    const e = await run(dp).catch((x: unknown) => x);
    assert.ok(e instanceof ExternalTrainerError && e.kind === 'dp', `${dp}: ${String(e)}`);
    assert.match(e.message, want);
  }
});

test('ExternalTrainer: any tensor set in its dtypes; local tensors are kept at the site, skipped ones never uploaded', async () => {
  // A trainer that adds 1 to every float tensor and 5 to the integer counter, keeping names and dtypes exactly.
  const code = 'import json, os, struct\n' +
    't = json.load(open(os.environ["SETU_TASK"]))\n' +
    'raw = open(t["paths"]["weights"], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8+n]); buf = bytearray(raw[8+n:])\n' +
    'fmt = {"F32": "f", "F16": "e", "I64": "q"}\n' +
    'for k, v in h.items():\n' +
    '  if k == "__metadata__": continue\n' +
    '  b, e = v["data_offsets"]; f = fmt[v["dtype"]]; c = (e - b) // struct.calcsize(f)\n' +
    '  vals = [x + (5 if f == "q" else 1) for x in struct.unpack("<%d%s" % (c, f), bytes(buf[b:e]))]\n' +
    '  buf[b:e] = struct.pack("<%d%s" % (c, f), *vals)\n' +
    'open("output.safetensors", "wb").write(raw[:8+n] + bytes(buf))\n' +
    'json.dump({"fit": {"numExamples": 9, "metrics": {"loss": 1.5}}, "evaluate": {"numExamples": 4, "metrics": {"auroc": 0.75}}}, open("result.json", "w"))\n' +
    'print("setu:progress " + json.dumps({"step": 1, "of": 1}), flush=True)';
  const global = mapWeights(['__proto__', 'constructor', 'bn.weight', 'bn.num_batches_tracked', 'head.bias'], (k) =>
    k === 'bn.num_batches_tracked' ? tensor([], new Float32Array([3]), 'I64') : k === 'constructor' ? tensor([2], new Float32Array([0.5, -1]), 'F16') : tensor([2], new Float32Array([1, 2])));
  const msg: TaskMessage = {
    taskId: 'st.r1.a', studyId: 'st', round: 1, kind: 'fit', modelVersionId: 'st.v0', dataset: 'images', model: { kind: 'custom', name: 'net' },
    fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: { local: ['bn.weight', 'bn.num_batches_tracked'], skip: ['head.bias'] },
    strategy: 'FedAvg', seed: 7, deadlineAt: 0,
  };
  const progress: TrainerProgress[] = [];
  const trainer = new ExternalTrainer({ command: ['python3', '-c', code] }, () => ({ file: '/data/images.csv' }));
  const out = await trainer.fit({ task: msg, global, siteName: 'alpha', progress: (p) => progress.push(p) });
  assert.deepEqual(Object.keys(out.weights), ['__proto__', 'constructor'], 'only the aggregated tensors are uploaded');
  assert.equal(Object.getPrototypeOf(out.weights), null);
  assert.deepEqual([...out.weights['__proto__']!.data], [2, 3]);
  assert.equal(out.weights['constructor']!.dtype, 'F16');
  assert.deepEqual([...out.weights['constructor']!.data], [1.5, 0]);
  assert.deepEqual({ n: out.numExamples, train: out.trainMetrics, ev: out.evalMetrics, evn: out.evalExamples }, { n: 9, train: { loss: 1.5 }, ev: { auroc: 0.75 }, evn: 4 });
  assert.deepEqual(progress, [{ step: 1, of: 1 }]);
  // The local tensors are committed once the coordinator has the result, in their dtypes.
  assert.equal(out.commit.length, 1);
  assert.equal(out.commit[0]!.name, LOCAL_TENSORS_FILE);
  const kept = decodeSafetensors(new Uint8Array(Buffer.from(out.commit[0]!.data, 'base64'))).weights;
  assert.deepEqual({ bn: [...kept['bn.weight']!.data], n: [...kept['bn.num_batches_tracked']!.data], dtype: kept['bn.num_batches_tracked']!.dtype }, { bn: [2, 3], n: [8], dtype: 'I64' });
  // The next round starts from the site's own copy of its local tensors.
  const start = startingWeights(global, msg.tensorRules, new Uint8Array(Buffer.from(out.commit[0]!.data, 'base64')));
  assert.deepEqual([...start['bn.weight']!.data], [2, 3]);
  assert.deepEqual([...start['head.bias']!.data], [1, 2], 'skipped tensors stay frozen at the global value');
  assert.throws(() => startingWeights(global, { local: ['head.bias'], skip: [] }, new Uint8Array(Buffer.from(out.commit[0]!.data, 'base64'))), /saved local tensors .* do not fit the study's model/);
  // An evaluate task reports the trainer's metrics of the given weights.
  const evalCode = 'import json; json.dump({"evaluate": {"numExamples": 12, "metrics": {"accuracy": 0.5}}}, open("result.json", "w"))';
  const ev = await new ExternalTrainer({ command: ['python3', '-c', evalCode] }, () => ({ file: '/x' })).evaluate({ task: { ...msg, kind: 'evaluate' }, global, siteName: 'alpha' });
  assert.deepEqual(ev, { metrics: { accuracy: 0.5 }, examples: 12 });
  const noEval = await new ExternalTrainer({ command: ['python3', '-c', 'import json; json.dump({"fit": {"numExamples": 1}}, open("result.json", "w"))'] }, () => ({ file: '/x' }))
    .evaluate({ task: { ...msg, kind: 'evaluate' }, global, siteName: 'alpha' }).catch((x: unknown) => x);
  assert.match(String(noEval), /an evaluate task must report "evaluate"/);
});

test('file to file: the trainer reads the given file as its weights; its output goes to onOutput, or its error names the tensor', async () => {
  const dir = tmp();
  const w = { weight: tensor([1, 4], new Float32Array([1, 2, 3, 4])), bias: tensor([1], new Float32Array([0.5])) };
  const input = join(dir, 'model.safetensors');
  writeFileSync(input, encodeSafetensors(w));
  const layout = layoutOf(w);
  // A trainer that doubles every value (or writes NaN into the weight when told to), in plain Python.
  const code = (nan: boolean) => 'import json, os, struct; t = json.load(open(os.environ["SETU_TASK"])); b = open(t["paths"]["weights"], "rb").read(); ' +
    'n = struct.unpack("<Q", b[:8])[0]; v = [x * 2 for x in struct.unpack("<%df" % ((len(b) - 8 - n) // 4), b[8 + n:])]; ' +
    (nan ? 'v[3] = float("nan"); ' : '') + 'open(t["paths"]["output"], "wb").write(b[:8 + n] + struct.pack("<%df" % len(v), *v)); ' +
    'json.dump({"fit": {"numExamples": 3, "metrics": {"loss": 0.5}}}, open(t["paths"]["result"], "w"))';
  const release = join(dir, 'release.body');
  const r = await runExternalTrainer({ command: ['python3', '-c', code(false)], timeoutMs: 20_000 }, task({}, '/data/site.csv', { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, {
    files: { input, layout, onOutput: (out, m) => void (assert.equal(m.fit.numExamples, 3), writeReleaseFile(out, layout, { k: 'v' }, release)) },
  }));
  assert.equal(r.weights, undefined, 'no tensor read into memory');
  assert.deepEqual(Array.from(decodeSafetensors(readFileSync(release)).weights['weight']!.data), [2, 4, 6, 8]);
  assert.ok(readFileSync(input).equals(encodeSafetensors(w)), 'the input file is left as it was');
  await assert.rejects(runExternalTrainer({ command: ['python3', '-c', code(true)], timeoutMs: 20_000 }, task({}, '/data/site.csv', { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, {
    files: { input, layout, onOutput: (out) => void writeReleaseFile(out, layout, {}, join(dir, 'bad.body')) },
  })), (e: unknown) => e instanceof ExternalTrainerError && e.kind === 'output' && /^external trainer output: output\.safetensors: tensor "weight" has a non-finite value \(NaN\) at index 2/.test(e.message));
});
