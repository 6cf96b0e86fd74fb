/**
 * The chaos proxy does what the network scenario says it does: forwards bytes both ways, resets open connections,
 * refuses new ones while dropping, and holds every byte while stalled until it resumes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { ChaosProxy } from './proxy.js';

async function echoServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const s = createServer((c) => {
    sockets.add(c);
    c.on('error', () => {}).on('close', () => sockets.delete(c));
    c.pipe(c);
  });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const a = s.address();
  return { port: typeof a === 'object' && a ? a.port : 0, close: () => new Promise((r) => { for (const c of sockets) c.destroy(); s.close(() => r()); }) };
}

function client(port: number): Promise<Socket> {
  const c = connect(port, '127.0.0.1');
  return once(c, 'connect').then(() => c);
}

/** The next chunk the socket reads, or 'closed: CODE' when it ends with an error (or 'closed' without one). */
function nextEvent(c: Socket): Promise<string> {
  return new Promise((res) => {
    let err = '';
    c.once('data', (d) => res(d.toString()));
    c.once('error', (e: NodeJS.ErrnoException) => (err = e.code ?? e.message));
    c.once('close', () => res(err ? `closed: ${err}` : 'closed'));
  });
}

test('the chaos proxy forwards, resets, refuses and stalls', async () => {
  const echo = await echoServer();
  const proxy = new ChaosProxy(echo.port);
  const port = await proxy.listen();
  try {
    const a = await client(port);
    a.write('hello');
    assert.equal(await nextEvent(a), 'hello', 'bytes go through both ways');

    const cut = nextEvent(a);
    assert.equal(proxy.reset(), 1);
    assert.equal(await cut, 'closed: ECONNRESET', 'an open connection is reset');

    proxy.drop(60_000);
    const b = connect(port, '127.0.0.1');
    assert.match(await nextEvent(b), /^closed/, 'a new connection is refused while dropping');
    assert.equal(proxy.counters.refused, 1);
    proxy.heal();

    const c = await client(port);
    c.write('one');
    assert.equal(await nextEvent(c), 'one');
    proxy.stall();
    let got = '';
    c.on('data', (d) => (got += d.toString()));
    c.write('held');
    // The echo round trip through a healthy proxy takes well under this; a stalled one must deliver nothing.
    // (A bound on "nothing happened" needs a wait; it orders nothing.)
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(got, '', 'nothing passes while stalled');
    const released = once(c, 'data');
    proxy.resume();
    await released;
    assert.equal(got, 'held', 'the held bytes arrive once the stall ends');
    c.destroy();
  } finally {
    await proxy.close();
    await echo.close();
  }
});
