/** The walkthrough in docs/analytics.md, run verbatim (with `setu` on PATH, in a scratch copy of the repo's examples). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SETU_MAIN } from '../testing/processes.js';
import { rSkipReason } from '../testing/oracles.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('docs/analytics.md: the walkthrough runs as written', { skip: rSkipReason() }, (t) => {
  const doc = readFileSync(join(ROOT, 'docs', 'analytics.md'), 'utf8');
  const blocks = [...doc.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.equal(blocks.length, 1, 'one shell block');
  const dir = mkdtempSync(join(tmpdir(), 'setu-doc-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'setu'), `#!/bin/sh\nexec "${process.execPath}" "${SETU_MAIN}" "$@"\n`);
  chmodSync(join(dir, 'bin', 'setu'), 0o755);
  symlinkSync(join(ROOT, 'examples'), join(dir, 'examples'));
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', blocks[0]!], { cwd: dir, encoding: 'utf8', env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` }, timeout: 180_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /survival-by-sex \(kaplan-meier, 18 sites\)/);
  assert.match(r.stdout, /sites below their minimum, not in the fit: 10, 33, 4/);
  for (const f of ['cohort-by-sex.csv', 'age.csv', 'missing.csv', 'weight-loss.svg', 'survival-by-sex.svg', 'logrank-sex.csv', 'cox.svg']) assert.ok(existsSync(join(dir, 'lung-out', f)), f);
  const cox = JSON.parse(readFileSync(join(dir, 'cox.json'), 'utf8')) as { cox: { result: { strata: string; names: string[] } } };
  assert.equal(cox.cox.result.strata, 'none');
  assert.deepEqual(cox.cox.result.names, ['age', 'sex=2', 'ph.ecog']);
});
