import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import fc from 'fast-check';
import {
  generateSigningKeys, importPublicKey, importPrivateKey, publicKeyToRaw, signChunkRequest, signRequest, verifyRequest,
  canonicalRequestString, bodySha256Hex, type HeaderBag, type VerifyRequestInput,
} from './signing.js';

const site = generateSigningKeys();
const other = generateSigningKeys();
const NOW = 1_760_000_000_000;

/** An in-memory stand-in for the store's nonce table: returns true on the second sighting. */
function nonceTable() {
  const seen = new Set<string>();
  return (keyId: string, nonce: string) => {
    const k = `${keyId}\0${nonce}`;
    if (seen.has(k)) return true;
    seen.add(k);
    return false;
  };
}

function input(headers: HeaderBag, over: Partial<VerifyRequestInput> = {}): VerifyRequestInput {
  return {
    method: 'POST',
    path: '/v1/updates?task=7',
    body: '{"examples":12}',
    headers,
    publicKeyFor: (id) => (id === 'site-a' ? site.publicKeyPem : null),
    now: NOW,
    nonceSeen: nonceTable(),
    ...over,
  };
}

function signed(over: Record<string, unknown> = {}) {
  return signRequest({
    method: 'POST', path: '/v1/updates?task=7', body: '{"examples":12}', keyId: 'site-a',
    privateKey: site.privateKey, now: NOW, ...over,
  });
}

async function refusedWith(p: Promise<unknown>, re: RegExp) {
  const r = (await p) as { ok: boolean; status?: number; reason?: string };
  assert.equal(r.ok, false, 'expected a refusal');
  assert.equal(r.status, 401);
  assert.match(r.reason!, re);
}

test('canonical string has the documented layout, and the signature is Ed25519 over it', () => {
  const h = signed({ nonce: 'AAAAAAAAAAAAAAAAAAAAAAAA' });
  const bodyHash = createHash('sha256').update('{"examples":12}').digest('hex');
  const msg = `SETU-ED25519\nPOST\n/v1/updates?task=7\n${bodyHash}\n${NOW}\nAAAAAAAAAAAAAAAAAAAAAAAA`;
  assert.equal(canonicalRequestString('post', '/v1/updates?task=7', bodyHash, NOW, 'AAAAAAAAAAAAAAAAAAAAAAAA'), msg);
  assert.ok(verify(null, Buffer.from(msg), site.publicKey, Buffer.from(h['x-setu-signature'], 'base64url')));
  assert.equal(bodySha256Hex(undefined), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(bodySha256Hex(new TextEncoder().encode('{"examples":12}')), bodyHash);
});

test('a correctly signed request is accepted once; its replay is refused', async () => {
  const h = signed();
  const inp = input(h);
  const r = await verifyRequest(inp);
  assert.deepEqual(r, { ok: true, keyId: 'site-a', nonce: h['x-setu-nonce'], timestampMs: NOW, bodySha256: h['x-setu-content-sha256'] });
  await refusedWith(verifyRequest(inp), /replayed nonce/);
});

test('keys export and import as PEM and raw base64url', async () => {
  assert.equal(site.publicKeyRaw.length, 43);
  assert.equal(publicKeyToRaw(importPublicKey(site.publicKeyRaw)), site.publicKeyRaw);
  assert.equal(publicKeyToRaw(importPublicKey(site.publicKeyPem)), site.publicKeyRaw);
  const h = signRequest({ method: 'GET', path: '/v1/tasks', keyId: 'site-a', privateKey: site.privateKeyPem, now: NOW });
  const r = await verifyRequest(input(h, { method: 'GET', path: '/v1/tasks', body: undefined, publicKeyFor: () => site.publicKeyRaw }));
  assert.equal(r.ok, true);
  assert.throws(() => importPublicKey('abc'), /43 characters/);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  assert.throws(() => importPrivateKey(rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()), /Ed25519/);
});

test('refuses missing, duplicated and malformed headers', async () => {
  const h = signed();
  for (const name of ['x-setu-key-id', 'x-setu-timestamp', 'x-setu-nonce', 'x-setu-signature']) {
    const copy: HeaderBag = { ...h };
    delete copy[name];
    await refusedWith(verifyRequest(input(copy)), new RegExp(`missing ${name}`));
  }
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-nonce': [h['x-setu-nonce'], h['x-setu-nonce']] })), /more than once/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-timestamp': '12e5' })), /malformed x-setu-timestamp/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-nonce': 'short' })), /malformed x-setu-nonce/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-signature': 'abc' })), /malformed x-setu-signature/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-key-id': 'a b' })), /malformed x-setu-key-id/);
});

test('the signature is checked from the headers alone, against the declared body digest, before any body is read', async () => {
  const h = signed();
  const digest = createHash('sha256').update('{"examples":12}').digest('hex');
  assert.equal(h['x-setu-content-sha256'], digest);
  const r = await verifyRequest(input(h, { body: undefined }));
  assert.equal(r.ok, true);
  assert.equal(r.ok && r.bodySha256, digest, 'the verifier says which digest the bytes must match');
  // With the body at hand, it must be the body the header declares.
  await refusedWith(verifyRequest(input(signed(), { body: '{"examples":13}' })), /body does not match its x-setu-content-sha256/);
  await refusedWith(verifyRequest(input({ ...signed(), 'x-setu-content-sha256': digest.toUpperCase() }, { body: undefined })), /malformed x-setu-content-sha256/);
  // A request without the header declares an empty body: a signature over a real body no longer verifies.
  const noHeader: HeaderBag = { ...signed() };
  delete noHeader['x-setu-content-sha256'];
  await refusedWith(verifyRequest(input(noHeader, { body: undefined })), /bad signature/);
  const r2 = await verifyRequest(input(noHeader));
  assert.equal(r2.ok, true, 'an older client without the header still verifies when the body is given');
});

test('a signature has one spelling: spare bits in the last base64url character are refused', async () => {
  const h = signed();
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const sig = h['x-setu-signature'];
  // 86 characters carry 516 bits for 64 bytes: the low 4 bits of the last character are spare.
  const twin = sig.slice(0, -1) + abc[abc.indexOf(sig.at(-1)!) ^ 1];
  assert.deepEqual(Buffer.from(twin, 'base64url'), Buffer.from(sig, 'base64url'));
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-signature': twin })), /not canonical/);
});

test('header names are matched case-insensitively', async () => {
  const h = signed();
  const upper = Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toUpperCase(), v]));
  assert.equal((await verifyRequest(input(upper))).ok, true);
});

test('refuses an unknown or revoked key', async () => {
  await refusedWith(verifyRequest(input(signed({ keyId: 'site-z' }))), /unknown or revoked key id "site-z"/);
});

test('refuses a signature by another key, and any change to method, path, query or body', async () => {
  await refusedWith(verifyRequest(input(signed({ privateKey: other.privateKey }))), /bad signature/);
  const h = signed();
  await refusedWith(verifyRequest(input(h, { method: 'PUT' })), /bad signature/);
  await refusedWith(verifyRequest(input(h, { path: '/v1/updates?task=8' })), /bad signature/);
  await refusedWith(verifyRequest(input(h, { path: '/v1/updates' })), /bad signature/);
  await refusedWith(verifyRequest(input(h, { body: '{"examples":13}' })), /body does not match/);
  // A changed body with the digest header changed to match it: the signature no longer covers it.
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-content-sha256': createHash('sha256').update('{"examples":13}').digest('hex') }, { body: '{"examples":13}' })), /bad signature/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-timestamp': String(NOW + 1) })), /bad signature/);
  await refusedWith(verifyRequest(input({ ...h, 'x-setu-nonce': 'B'.repeat(24) })), /bad signature/);
});

test('refuses a timestamp more than 5 minutes off, either way; accepts within', async () => {
  await refusedWith(verifyRequest(input(signed({ now: NOW - 300_001 }))), /s off the server clock/);
  await refusedWith(verifyRequest(input(signed({ now: NOW + 300_001 }))), /s off the server clock/);
  assert.equal((await verifyRequest(input(signed({ now: NOW - 300_000 })))).ok, true);
  assert.equal((await verifyRequest(input(signed({ now: NOW + 299_000 })))).ok, true);
});

test('a bad signature does not consume the nonce', async () => {
  const seen = nonceTable();
  const good = signed();
  const forged = { ...good, 'x-setu-signature': signed({ privateKey: other.privateKey, nonce: good['x-setu-nonce'] })['x-setu-signature'] };
  await refusedWith(verifyRequest(input(forged, { nonceSeen: seen })), /bad signature/);
  assert.equal((await verifyRequest(input(good, { nonceSeen: seen }))).ok, true);
});

test('a stored key that is not Ed25519 refuses instead of throwing', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  await refusedWith(verifyRequest(input(signed(), { publicKeyFor: () => rsa.publicKey })), /bad signature/);
  await refusedWith(verifyRequest(input(signed(), { publicKeyFor: () => 'not a key' })), /bad signature/);
});

test('signRequest refuses inputs the verifier would refuse', () => {
  assert.throws(() => signed({ keyId: '' }), /keyId/);
  assert.throws(() => signed({ nonce: 'x' }), /nonce/);
  assert.throws(() => signed({ path: '/a\nb' }), /line breaks/);
  assert.throws(() => signed({ now: -1 }), /timestamp/);
});

// ---- properties: whatever the headers, verification refuses (or accepts a genuine request) without throwing ----

const headerValue = fc.oneof(
  fc.string({ maxLength: 100 }),
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
  fc.constant(undefined),
);

test('property: random headers never throw and are refused', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({ 'x-setu-key-id': headerValue, 'x-setu-timestamp': headerValue, 'x-setu-nonce': headerValue, 'x-setu-signature': headerValue }),
      async (h) => {
        const r = await verifyRequest(input(h as HeaderBag));
        assert.equal(r.ok, false);
      },
    ),
    { numRuns: 1000 },
  );
});

test('property: mutating any one header or the body of a signed request is refused, never thrown', async () => {
  const h = signed();
  const names = Object.keys(h) as (keyof typeof h)[];
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...names, 'body' as const),
      fc.nat(),
      fc.integer({ min: 0, max: 127 }),
      async (field, pos, code) => {
        const orig = field === 'body' ? '{"examples":12}' : h[field];
        const at = pos % orig.length;
        const ch = String.fromCharCode(code);
        fc.pre(orig[at] !== ch);
        const mutated = orig.slice(0, at) + ch + orig.slice(at + 1);
        const headers: HeaderBag = field === 'body' ? { ...h } : { ...h, [field]: mutated };
        const r = await verifyRequest(input(headers, field === 'body' ? { body: mutated } : {}));
        // A key id that still names no key, a timestamp that changes the message, or any other edit: refused.
        assert.equal(r.ok, false, `mutation of ${field} at ${at} to ${JSON.stringify(ch)} was accepted`);
      },
    ),
    { numRuns: 1000 },
  );
});

test('a chunk signed over its declared digest (x-setu-chunk-sha256) verifies from the headers, binds the digest, and is no body-signed request', async () => {
  const chunk = new Uint8Array(1000).fill(7);
  const digest = bodySha256Hex(chunk);
  const h = signChunkRequest({ method: 'PUT', path: '/v1/agent/uploads/u1?offset=0', chunkSha256: digest, keyId: 'site-a', privateKey: site.privateKey, now: NOW });
  assert.equal(h['x-setu-chunk-sha256'], digest);
  assert.equal((h as Record<string, string>)['x-setu-content-sha256'], undefined);
  const msg = canonicalRequestString('PUT', '/v1/agent/uploads/u1?offset=0', `UNSIGNED-PAYLOAD:${digest}`, NOW, h['x-setu-nonce']);
  assert.ok(verify(null, Buffer.from(msg), site.publicKey, Buffer.from(h['x-setu-signature'], 'base64url')));
  const chunkInput = (headers: HeaderBag, body?: Uint8Array) => input(headers, { method: 'PUT', path: '/v1/agent/uploads/u1?offset=0', body });
  assert.deepEqual(await verifyRequest(chunkInput(h)), { ok: true, keyId: 'site-a', nonce: h['x-setu-nonce'], timestampMs: NOW, bodySha256: digest, unsignedPayload: true });
  // Another digest in the header: the signature no longer covers it.
  const other = bodySha256Hex(new Uint8Array(1000));
  await refusedWith(verifyRequest(chunkInput({ ...h, 'x-setu-chunk-sha256': other })), /bad signature/);
  // The same digest moved to x-setu-content-sha256: not the string that was signed.
  const { 'x-setu-chunk-sha256': moved, ...rest } = h;
  await refusedWith(verifyRequest(chunkInput({ ...rest, 'x-setu-content-sha256': moved })), /bad signature/);
  await refusedWith(verifyRequest(chunkInput({ ...h, 'x-setu-content-sha256': digest })), /not both/);
  await refusedWith(verifyRequest(chunkInput({ ...h, 'x-setu-chunk-sha256': 'ABC' })), /malformed x-setu-chunk-sha256/);
  // Given the body, the verifier checks it too.
  const h2 = signChunkRequest({ method: 'PUT', path: '/v1/agent/uploads/u1?offset=0', chunkSha256: digest, keyId: 'site-a', privateKey: site.privateKey, now: NOW });
  await refusedWith(verifyRequest(chunkInput(h2, new Uint8Array(1000))), /does not match its x-setu-chunk-sha256/);
  assert.throws(() => signChunkRequest({ method: 'PUT', path: '/x', chunkSha256: 'nope', keyId: 'site-a', privateKey: site.privateKey }), /chunkSha256/);
});
