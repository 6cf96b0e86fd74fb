/**
 * Every command answers --help: the test walks each command the top-level help lists, runs `setu <command>
 * --help` as a real process, and checks that it exits 0, prints its usage, describes every flag it declares, and
 * that each flag its usage line shows is one it accepts. Usage mistakes are one line naming the flag and what it takes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { SETU_MAIN } from '../testing/processes.js';
import { COMMANDS, UNDOCUMENTED } from './help.js';
import { BENCHES } from './bench/index.js';

const exec = promisify(execFile);

async function setu(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [SETU_MAIN, ...args], { timeout: 30_000, env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** Runs `fn` over `items`, `n` at a time (each spawns a process; the machine is shared). */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x);
  }));
}

test('setu --help lists every command, and every listed command answers --help with its flags', { timeout: 300_000 }, async () => {
  const top = await setu(['--help']);
  assert.equal(top.code, 0);
  const listed = [...top.stdout.matchAll(/^ {2}setu (\S+(?: [a-z][\w-]*)?) {2,}/gm)].map((m) => m[1]!);
  assert.deepEqual(listed.sort(), COMMANDS.map((c) => c.path).sort(), 'the top-level help lists exactly the commands main.ts dispatches');
  for (const b of Object.keys(BENCHES)) assert.ok(listed.includes(`bench ${b}`), `setu bench ${b} is listed`);
  await pool(listed, 4, async (path) => {
    const r = await setu([...path.split(' '), '--help']);
    assert.equal(r.code, 0, `setu ${path} --help exits 0: ${r.stderr}`);
    assert.equal(r.stderr, '', `setu ${path} --help writes nothing to stderr`);
    assert.match(r.stdout, new RegExp(`^Usage: setu ${path}\\b`), `setu ${path} --help starts with its usage`);
    assert.ok(!r.stdout.includes(UNDOCUMENTED), `setu ${path} --help describes every flag:\n${r.stdout}`);
    const options = new Set([...r.stdout.matchAll(/^ {2}(--[\w-]+)/gm)].map((m) => m[1]!));
    const usage = r.stdout.split('\n')[0]!;
    for (const f of usage.matchAll(/(--[a-z][\w-]*)/g)) assert.ok(options.has(f[1]!), `setu ${path}: the usage shows ${f[1]}, which is among its options (${[...options].join(' ')})`);
  });
});

test('setu <group> --help lists its commands; --version prints the version', async () => {
  const g = await setu(['study', '--help']);
  assert.equal(g.code, 0);
  for (const sub of ['create', 'propose', 'approve', 'policy-check', 'start', 'status', 'export']) assert.match(g.stdout, new RegExp(`setu study ${sub}\\b`));
  const bare = await setu(['model']);
  assert.equal(bare.code, 2, 'a group without a command is a usage error');
  assert.match(bare.stderr, /setu model download/);
  const v = await setu(['--version']);
  assert.equal(v.code, 0);
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(v.stdout.trim(), `setu ${pkg.version}`);
});

test('usage mistakes are one line naming the flag, never node parser internals', async () => {
  const neg = await setu(['demo', '--seed', '-1']);
  assert.equal(neg.code, 2);
  assert.equal(neg.stderr.trim().split('\n').length, 1, neg.stderr);
  assert.match(neg.stderr, /^setu: --seed must be an integer from 0 to 2147483647, got -1$/m);
  const missing = await setu(['demo', '--seed']);
  assert.match(missing.stderr, /^setu: --seed needs a value$/m);
  const unknown = await setu(['study', 'list', '--jsn']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^setu: unknown option "--jsn" \(this command takes .*--json/m);
  const flagValue = await setu(['study', 'list', '--json=yes']);
  assert.match(flagValue.stderr, /^setu: --json takes no value$/m);
  const cmd = await setu(['study', 'frobnicate']);
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /unknown command "setu study frobnicate" \(setu study: create, list, /);
  for (const r of [neg, missing, unknown, flagValue, cmd]) assert.doesNotMatch(r.stderr, /ERR_PARSE_ARGS|XYZ|at .*\.js:\d+|ambiguous/, r.stderr);
});
