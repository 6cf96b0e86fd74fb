/**
 * The Python SDK (python/setu_trainer) under `npm test`: its own unittest suite with real PyTorch, an offline
 * `pip install` from the checkout with the setuptools already installed, and byte-for-byte agreement of its
 * safetensors writer with Setu's codec for every dtype.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeSafetensors } from '../../protocol/safetensors.js';
import { mapWeights, tensor, type DType } from '../../protocol/tensors.js';
import { python, skipWithoutTorch } from '../../testing/python.js';

export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'python', 'setu_trainer');
const skip = skipWithoutTorch();

test('the SDK\'s own test suite passes with real PyTorch', { skip, timeout: 300_000 }, () => {
  const r = spawnSync(python(), ['-m', 'unittest', 'discover', '-s', join(SDK_DIR, 'tests'), '-t', join(SDK_DIR, 'tests')], {
    encoding: 'utf8', env: { ...process.env, PYTHONPATH: SDK_DIR }, cwd: tmpdir(),
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const ran = /Ran (\d+) tests?/.exec(r.stderr);
  assert.ok(ran && Number(ran[1]) >= 20, r.stderr);
  assert.doesNotMatch(r.stderr, /skipped/, 'no test may be skipped where PyTorch is installed');
});

test('the SDK installs offline from the checkout with the installed setuptools, and imports from the install', { skip, timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-sdk-pip-'));
  try {
    // The command docs/python-sdk.md shows, verbatim, run where ./python/setu_trainer is a copy of the checkout's
    // (so the build leaves nothing behind in the repository), with the pip of a venv that sees Debian's packages.
    const line = readFileSync(join(SDK_DIR, '..', '..', 'docs', 'python-sdk.md'), 'utf8').split('\n').find((l) => l.startsWith('pip install '));
    assert.equal(line, 'pip install --no-build-isolation --no-index ./python/setu_trainer');
    cpSync(SDK_DIR, join(dir, 'python', 'setu_trainer'), { recursive: true });
    const venv = join(dir, 'venv');
    let r = spawnSync(python(), ['-m', 'venv', '--system-site-packages', venv], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const env = { ...process.env, PATH: `${join(venv, 'bin')}:${process.env.PATH}`, PIP_DISABLE_PIP_VERSION_CHECK: '1' };
    r = spawnSync('sh', ['-c', line!], { encoding: 'utf8', env, cwd: dir });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    r = spawnSync(join(venv, 'bin', 'python'), ['-c', 'import setu_trainer, setu_trainer.torch, setu_trainer.numpy; print(setu_trainer.__file__, setu_trainer.__version__)'], { encoding: 'utf8', cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${join(venv, 'lib')}.*site-packages/setu_trainer/__init__\\.py 0\\.2\\.0`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the SDK reads and rewrites Setu\'s safetensors byte for byte, every dtype', { skip, timeout: 60_000 }, () => {
  const dtypes: DType[] = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];
  const w = mapWeights([...dtypes.map((d) => `t.${d.toLowerCase()}`), '__proto__', 'constructor'], (k) => {
    const d = (dtypes.find((x) => k === `t.${x.toLowerCase()}`) ?? 'F32') as DType;
    const top: Partial<Record<DType, number>> = { I64: 16777216, I32: -16777216, I16: 32767, I8: -128 };
    const v = d === 'BOOL' ? [1, 0, 1] : d === 'U8' ? [0, 7, 255] : d.startsWith('F') || d === 'BF16' ? [0.1, -2.5, 65504] : [-3, 0, top[d]!];
    return tensor([3], new Float32Array(v), d);
  });
  const dir = mkdtempSync(join(tmpdir(), 'setu-sdk-codec-'));
  try {
    const file = join(dir, 'in.safetensors');
    const bytes = encodeSafetensors(w);
    writeFileSync(file, bytes);
    const code = 'import sys, setu_trainer as s\nt, m = s.read_safetensors(sys.argv[1])\nprint({k: v.tolist() for k, v in t.items()})\ns.write_safetensors(sys.argv[2], t)';
    const r = spawnSync(python(), ['-c', code, file, join(dir, 'out.safetensors')], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: SDK_DIR } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'out.safetensors'))), bytes);
    assert.match(r.stdout, /'t\.bf16': \[0\.10009765625, -2\.5, 65536\.0\]/, 'BF16 values as torch would round them');
    assert.match(r.stdout, /'t\.bool': \[True, False, True\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
