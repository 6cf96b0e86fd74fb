/**
 * `npm run chaos` itself: --help lists every scenario and flag, bad flags are refused with exit 2 before anything
 * starts (no federation is run here; chaos.test.ts runs one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { SCENARIOS } from './scenarios.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const run = (args: string[]) =>
  promisify(execFile)(process.execPath, [MAIN, ...args], { timeout: 20_000 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

test('chaos --help names every scenario and flag', async () => {
  const r = await run(['--help']);
  assert.equal(r.code, 0);
  for (const s of SCENARIOS) assert.match(r.stdout, new RegExp(`^  ${s} `, 'm'));
  for (const f of ['--seed', '--quick', '--scenario', '--store', '--keep', '--json']) assert.ok(r.stdout.includes(f), f);
});

test('chaos refuses bad flags before starting anything', async () => {
  for (const [args, msg] of [
    [['--scenario', 'coordinator-kills,meteor'], /--scenario meteor is not a scenario \(scenarios: coordinator-kills, /],
    [['--seed', 'x'], /--seed must be an integer/],
    [['--store', 'mysql://x'], /--store must be a postgres:\/\/ URL/],
    [['--rounds', '3'], /Unknown option '--rounds'/],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /baseline/, 'nothing started');
  }
});
