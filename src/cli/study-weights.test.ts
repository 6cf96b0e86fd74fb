/**
 * `setu study create --weights`: the file is checked as the coordinator will check it before anything is sent, so
 * a bad file is one readable line (exit 2) and no draft study is left behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { SETU_MAIN } from '../testing/processes.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor } from '../protocol/tensors.js';

test('setu study create refuses bad initial weights, and a custom model without them, in one line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-cli-weights-'));
  try {
    const study = { name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: 'FedAvg' }, rounds: 1, fit: { epochs: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: [{ match: 'bn.*', rule: 'local' }] };
    writeFileSync(join(dir, 'study.yaml'), YAML.stringify(study));
    writeFileSync(join(dir, 'bad.safetensors'), 'not a model');
    writeFileSync(join(dir, 'norules.safetensors'), encodeSafetensors(mapWeights(['w'], () => tensor([2]))));
    // No coordinator runs: the file is refused before the CLI would contact one.
    const env = { ...process.env, SETU_COORDINATOR: 'http://127.0.0.1:9', SETU_KEY_FILE: join(dir, 'none.key') };
    const run = (...args: string[]) => spawnSync(process.execPath, [SETU_MAIN, 'study', 'create', '--file', join(dir, 'study.yaml'), ...args], { encoding: 'utf8', env });
    let r = run('--weights', join(dir, 'bad.safetensors'));
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^setu: .*bad\.safetensors: the initial weights are not valid safetensors: header length \d+ runs past the end of the file/);
    r = run('--weights', join(dir, 'norules.safetensors'));
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /norules\.safetensors: \/tensorRules\/0: "bn\.\*" matches no tensor of the model \(it has 1: w\)/);
    r = run('--weights', join(dir, 'missing.safetensors'));
    assert.match(r.stderr, /cannot read the initial weights .*missing\.safetensors: ENOENT/);
    r = run();
    assert.equal(r.status, 2);
    assert.match(r.stderr, /a custom model is defined by its initial weights: add --weights init\.safetensors/);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, 'one line, no stack trace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
