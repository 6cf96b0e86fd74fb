/**
 * Helpers for the tests of the worked examples under examples/: run an example's run.sh as its README says, and
 * check that the README's walkthrough is what the script runs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { python } from './python.js';

/** Runs the example's run.sh in a fresh WORK directory; resolves with its exit status and output. */
export function runExample(script: string, work: string, env: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    const child = spawn('bash', [script], { env: { ...process.env, WORK: work, SETU_PYTHON: python(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('close', (code) => done({ code, out }));
  });
}

/** Every command line in the README's sh blocks appears in the script it documents (with the library it sources). */
export function walkthroughIsScript(readme: string, script: string): void {
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length > 0, 'the README shows its walkthrough');
  for (const line of blocks.join('\n').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
    assert.ok(script.includes(line) || line.endsWith('run.sh') || line.startsWith('npm '), `README line not in the script it documents: ${line}`);
  }
}
