import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { INSTALL_HINT, main } from './peer.js';

async function capture(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const w = process.stdout.write.bind(process.stdout), e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string) => ((out += c), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string) => ((err += c), true)) as typeof process.stderr.write;
  try {
    return { code: await main(argv), out, err };
  } finally {
    process.stdout.write = w;
    process.stderr.write = e;
  }
}

test('without torch it prints the install command and skips', async () => {
  // Any existing file stands in for the peer script: the torch probe comes first and fails with /bin/false.
  const r = await capture(['--python', '/bin/false', '--peer', fileURLToPath(import.meta.url)]);
  assert.equal(r.code, 0);
  assert.ok(r.out.includes(INSTALL_HINT));
  assert.match(r.out, /Skipped/);
});

test('a missing peer script is reported and skipped; bad options exit 2', async () => {
  const r = await capture(['--peer', '/nonexistent/run_peer.py']);
  assert.equal(r.code, 0);
  assert.match(r.err, /peer script not found/);
  assert.equal((await capture(['--fast'])).code, 2);
});
