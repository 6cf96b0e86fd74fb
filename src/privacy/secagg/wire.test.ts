import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SecAggClient } from './client.js';
import { SecAggServer, makeConfig } from './server.js';
import {
  decodeKeys, decodeMaskRequest, decodeMaskedInput, decodeNeighbourKeys, decodeSetup, decodeShares, decodeUnmaskRequest,
  decodeUnmaskResponse, encodeMaskedInput,
} from './wire.js';

/** A decoder may refuse, but only with a deliberate Error, never a crash inside our code. */
function refusesCleanly(f: () => unknown): void {
  try { f(); } catch (e) {
    assert.ok(e instanceof Error && !(e instanceof TypeError) && !(e instanceof RangeError), `crash: ${String(e)}`);
  }
}

function realRound() {
  const cfg = makeConfig({ numClients: 5, vectorLength: 16, degree: 4, threshold: 3, weightScale: 10 });
  const server = new SecAggServer(cfg);
  const setup = server.setupMessages();
  const clients = setup.map((s) => new SecAggClient(s));
  const keys = clients.map((c) => c.keys());
  keys.forEach((k) => server.receiveKeys(k));
  const nk = server.neighbourKeys();
  const shares = clients.map((c, i) => c.shares(nk.get(i)!));
  shares.forEach((s) => server.receiveShares(s));
  const mr = server.maskRequests();
  const masked = clients.map((c, i) => c.maskedInput(mr.get(i)!, new Float32Array(16).fill(0.1 * i), 5));
  masked.forEach((m) => server.receiveMasked(m));
  return { cfg, server, clients, setup, keys, nk, shares, mr, masked };
}

test('decoders accept the real messages of a round (JSON round trip)', () => {
  const r = realRound();
  const j = (x: unknown) => JSON.parse(JSON.stringify(x));
  assert.deepEqual(decodeSetup(j(r.setup[0])), r.setup[0]);
  assert.deepEqual(decodeKeys(j(r.keys[1])), r.keys[1]);
  assert.deepEqual(decodeNeighbourKeys(j(r.nk.get(2))), r.nk.get(2));
  assert.deepEqual(decodeShares(j(r.shares[3])), r.shares[3]);
  assert.deepEqual(decodeMaskRequest(j(r.mr.get(4))), r.mr.get(4));
  const m = decodeMaskedInput(j(encodeMaskedInput(r.masked[0]!)), 17);
  assert.deepEqual(m.masked, r.masked[0]!.masked);
  const ur = r.server.unmaskRequest();
  assert.deepEqual(decodeUnmaskRequest(j(ur)), ur);
  const resp = r.clients[0]!.unmask(ur);
  assert.deepEqual(decodeUnmaskResponse(j(resp)), resp);
});

test('property: arbitrary JSON never crashes a decoder', () => {
  const decoders = [decodeSetup, decodeKeys, decodeNeighbourKeys, decodeShares, decodeMaskRequest, (v: unknown) => decodeMaskedInput(v, 17), decodeUnmaskRequest, decodeUnmaskResponse];
  fc.assert(fc.property(fc.jsonValue(), (v) => { for (const d of decoders) refusesCleanly(() => d(v)); }), { numRuns: 300 });
});

test('property: mutated real messages are refused cleanly and leave the server unchanged', () => {
  const r = realRound();
  const base = JSON.parse(JSON.stringify(encodeMaskedInput(r.masked[0]!)));
  const survivorsBefore = r.server.survivors().join();
  fc.assert(fc.property(
    fc.constantFrom('stage', 'clientId', 'masked'), fc.jsonValue(),
    (field, value) => {
      const m = { ...base, [field]: value };
      refusesCleanly(() => r.server.receiveMasked(decodeMaskedInput(m, 17)));
    }), { numRuns: 200 });
  // Everyone's input already arrived, so every mutated copy was refused (unknown id, duplicate, or bad shape).
  assert.equal(r.server.survivors().join(), survivorsBefore);
  const ur = r.server.unmaskRequest();
  for (const c of r.clients) r.server.receiveUnmask(c.unmask(ur));
  const out = r.server.finish();
  // Still the right answer: Σ_i (0.1·i)·w_i / Σ w_i with w_i = 5/10 for all → mean of 0, 0.1, …, 0.4.
  for (const v of out.mean) assert.ok(Math.abs(v - 0.2) < 1e-6);
});

test('decoders name the problem', () => {
  assert.throws(() => decodeKeys({ stage: 'keys', clientId: 1, cPk: 'AAAA', sPk: 'AAAA' }), /cPk must be 32 bytes/);
  assert.throws(() => decodeKeys({ stage: 'shares' }), /expected a "keys" message/);
  assert.throws(() => decodeMaskedInput({ stage: 'masked-input', clientId: 0, masked: 'AAAA' }, 2), /2 uint32 words/);
  assert.throws(() => decodeUnmaskResponse({ stage: 'unmask-response', clientId: 0, bShares: [{ owner: 1, y: 'XYZ' }], sShares: [] }), /lowercase hex/);
  assert.throws(() => decodeSetup({ stage: 'setup', clientId: 9, config: makeConfig({ numClients: 5, vectorLength: 4, degree: 4, threshold: 3 }) }), /out of range/);
});
