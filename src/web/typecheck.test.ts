/**
 * The dashboard's TypeScript is type-checked here rather than in `npm run build`: Vite only strips types, and
 * keeping the check out of the build keeps the README's first command (install, build, demo) fast.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('the dashboard type-checks (tsc -p src/web/tsconfig.json, strict)', { timeout: 120_000 }, () => {
  const tsc = createRequire(join(ROOT, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'src', 'web', 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc found errors in src/web:\n${r.stdout}${r.stderr}`);
});
