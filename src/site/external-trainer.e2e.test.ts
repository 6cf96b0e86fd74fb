/**
 * Broken trainers at real site agents: one crashes, one hangs past its timeout, one writes NaN, one writes the wrong
 * tensors. Each closes its task with a task error (trainer_failed) the study lead sees at once (the study's
 * taskErrors and the event stream's task.failed), nothing is uploaded, the global model stays at version 0, and
 * once every site has failed the round does not wait for its deadline: the study fails, naming each site.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor } from '../protocol/tensors.js';
import { adminOf, runSetu, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';

const SDK = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'python', 'setu_trainer');

const TRAINERS: Record<string, string> = {
  crash: `import setu_trainer as s
class T(s.Trainer):
    def fit(self, w, c):
        raise RuntimeError("CUDA out of memory on device 0")
s.run(T())`,
  hang: `import time, setu_trainer as s
class T(s.Trainer):
    def fit(self, w, c):
        c.progress(step=1, of=100, loss=0.7)
        time.sleep(600)
s.run(T())`,
  // Bypasses the SDK's own checks, so that the agent's are the ones that refuse.
  nan: `import json, os, setu_trainer as s
t = json.load(open(os.environ["SETU_TASK"]))
w, _ = s.read_safetensors(t["paths"]["weights"])
w = {k: s.Tensor.from_list(v.dtype, v.shape, [float("nan")] * v.numel) for k, v in w.items()}
s.write_safetensors(t["paths"]["output"], w)
json.dump({"fit": {"numExamples": 3}}, open(t["paths"]["result"], "w"))`,
  wrong: `import json, os, setu_trainer as s
t = json.load(open(os.environ["SETU_TASK"]))
w, _ = s.read_safetensors(t["paths"]["weights"])
w.pop("head.bias")
s.write_safetensors(t["paths"]["output"], w)
json.dump({"fit": {"numExamples": 3}}, open(t["paths"]["result"], "w"))`,
};

// With an F16 tensor the agent takes the in-memory release; all F32, the file-to-file one (site/release-file.ts):
// either way a broken trainer's task closes with the same reason.
for (const path of ['memory', 'file'] as const)
test(`a crashing, hanging, NaN-writing or wrong-tensor trainer closes its task with the reason; the model is unchanged (${path} release path)`, { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-bad-trainers-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const admin = adminOf(c);
    const lead = await studyLeadClient(admin, c.url);
    const failures: string[] = [];
    c.bus.on((e) => void (e.type === 'task.failed' && failures.push(`${e.site} ${e.code}`)));
    for (const [name, code] of Object.entries(TRAINERS)) {
      const siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'train.py'), code);
      writeFileSync(join(siteDir, 'data.csv'), 'x\n1\n2\n3\n');
      writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({
        coordinator: c.url, pollWaitMs: 2000, datasets: { d: { format: 'csv', path: 'data.csv' } },
        trainer: { kind: 'external', command: ['python3', './train.py'], env: { PYTHONPATH: SDK }, timeoutSeconds: name === 'hang' ? 4 : 60, killGraceSeconds: 1 },
      }));
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    await waitFor('4 sites with a declared external trainer', async () =>
      (await admin.json<{ trainer?: { kind: string } | null }[]>('GET', '/v1/sites')).filter((s) => s.trainer?.kind === 'external').length === 4 ? true : undefined, 60_000);
    const s = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'bad trainers', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { epochs: 1, batchSize: 2, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 120,
    });
    const init = mapWeights(['body.weight', 'head.bias'], (k) => tensor([2], new Float32Array([1, 2]), k === 'head.bias' && path === 'memory' ? 'F16' : undefined));
    await lead.request('PUT', `/v1/studies/${s.id}/initial-weights`, { type: 'application/octet-stream', data: encodeSafetensors(init) });
    await lead.json('POST', `/v1/studies/${s.id}/start`, {});
    const detail = await waitFor('four task errors and the study failed', async () => {
      const d = await lead.json<{ status: string; error: string | null; taskErrors?: { site: string; code: string; message: string }[]; refusals: unknown[] }>('GET', `/v1/studies/${s.id}`);
      return (d.taskErrors ?? []).length >= 4 && d.status === 'failed' ? d : undefined;
    }, 120_000);
    const why = Object.fromEntries(detail.taskErrors!.map((r) => [r.site, r.message]));
    assert.deepEqual([...new Set(detail.taskErrors!.map((e) => e.code))], ['trainer_failed']);
    assert.equal(detail.refusals.length, 0, 'errors, not refusals');
    assert.match(why['crash']!, /external \(python3 .*train\.py\) failed \(exit\): .*exited with status 1[\s\S]*RuntimeError: CUDA out of memory on device 0/);
    assert.match(why['hang']!, /failed \(timeout\): .*was still running after 4000 ms and was killed \(its last progress: step 1 of 100, loss 0\.7\)/);
    assert.match(why['nan']!, /failed \(output\): external trainer output: output\.safetensors: tensor "body\.weight" has a non-finite value \(NaN\) at index 0/);
    assert.match(why['wrong']!, /failed \(output\): external trainer output: output\.safetensors does not match the model: missing tensor "head\.bias"/);
    assert.deepEqual(failures.sort(), ['crash', 'hang', 'nan', 'wrong'].map((n) => `${n} trainer_failed`), 'each error went out on the event stream as it happened');
    // Every site answered (with an error), so the round closed without waiting out its 120 s deadline.
    assert.match(detail.error!, /^round 1: 0 of 4 sites reported a result; at least 4 needed: /);
    for (const n of ['crash', 'hang', 'nan', 'wrong']) assert.match(detail.error!, new RegExp(`${n} could not run its task \\(trainer_failed\\)`));
    assert.deepEqual((await c.store.listModelVersions(s.id)).map((v) => v.round), [0], 'no new global model');
    for (const n of ['nan', 'wrong']) assert.match(readFileSync(join(dir, n, 'agent.log'), 'utf8'), new RegExp(`release path: ${path}`), `${n} took the ${path} path`);
    assert.equal(await c.store.countUpdates(s.id, 1), 0, 'nothing was uploaded');
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
