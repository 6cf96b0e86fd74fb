/**
 * Signatures before bodies: the signature is checked from the headers before the body is read; an
 * unauthenticated request may carry 64 KiB at most; the bytes received must be the bytes signed, whatever
 * the content type. Every refusal here changes nothing (every table's contents compared). Then, in a real
 * coordinator process: six unsigned 60 MiB bodies, and six more under a bad signature, leave its memory as
 * it was (it used to buffer and parse them: 231 → 722 MiB).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { createLogger } from '../../observability/logger.js';
import { bodySha256Hex, generateSigningKeys, signRequest } from '../../protocol/signing.js';
import { enrolSite, enrolUser, heartStudy, inject, type Identity } from '../../testing/inject.js';
import { SETU_MAIN, freePort, waitFor } from '../../testing/processes.js';
import type { Store } from '../../store/store.js';
import { storeDigest } from '../../store/digest.js';
import { decodeSafetensors, encodeSafetensors } from '../../protocol/safetensors.js';
import { RESULT_META_KEY } from '../../protocol/api.js';
import { SMALL_RESULT_BYTES } from '../routes/agent.js';

/**
 * Every row of every table: what "changes nothing" is checked against. Except the nonce table: a request
 * whose signature verified has spent its nonce (that is the replay protection) even when its body is then
 * refused, so its exact copy cannot be replayed either.
 */
function tableContents(store: Store): Promise<Record<string, string>> {
  return storeDigest(store, { except: ['request_nonces'] });
}

describe('signatures before bodies (inject)', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity, lead: Identity, site: Identity;
  let studyId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-sig-'));
    c = await startCoordinator({ dataDir: dir, port: 0, logger: createLogger({ level: 'silent' }) });
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    lead = await enrolUser(c.app, admin, 'lead-sig', 'study_lead');
    site = await enrolSite(c.app, admin, 'site-sig');
    const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: heartStudy('sig', ['site-sig']) });
    assert.equal(s.status, 200, s.body);
    studyId = s.json.id;
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The request must be refused with `status` and leave every table as it was. */
  async function refusedUnchanged(status: number, message: RegExp, send: () => Promise<{ status: number; json: any; body: string }>) {
    const before = await tableContents(c.store);
    const r = await send();
    assert.equal(r.status, status, r.body);
    assert.deepEqual(Object.keys(r.json).sort(), ['error', 'message']);
    assert.match(r.json.message, message);
    assert.deepEqual(await tableContents(c.store), before, 'a refused request changes nothing');
  }

  it('refuses a text/plain body under a signature over an empty body, on a route that ignores its body', async () => {
    const path = `/v1/studies/${studyId}/propose`;
    const h = signRequest({ method: 'POST', path, keyId: lead.keyId, privateKey: lead.privateKey });
    await refusedUnchanged(415, /content-type must be application\/json or application\/octet-stream/, () => inject(c.app, 'POST', path, { headers: { ...h, 'content-type': 'text/plain' }, raw: 'not what was signed', type: 'text/plain' }));
    // The same body as JSON or bytes: hashed as received and refused because the signature does not cover it.
    for (const [type, raw] of [['application/json', '{"reason":"smuggled"}'], ['application/octet-stream', 'smuggled bytes']]) {
      const hh = signRequest({ method: 'POST', path, keyId: lead.keyId, privateKey: lead.privateKey });
      await refusedUnchanged(401, /is not the body the signature covers/, () => inject(c.app, 'POST', path, { headers: { ...hh, 'content-type': type! }, raw: raw!, type: type! }));
    }
    // A body swapped for another, with the digest header swapped to match: the signature is over the first.
    const signedBody = '{"reason":"a"}';
    const h2 = signRequest({ method: 'POST', path, body: signedBody, keyId: lead.keyId, privateKey: lead.privateKey });
    await refusedUnchanged(401, /bad signature/, () => inject(c.app, 'POST', path, { headers: { ...h2, 'x-setu-content-sha256': bodySha256Hex('{"reason":"b"}') }, raw: '{"reason":"b"}', type: 'application/json' }));
    // The signed request itself goes through.
    const ok = await inject(c.app, 'POST', path, { as: lead });
    assert.equal(ok.status, 200, ok.body);
  });

  it('refuses a signature over a body when none is sent, a body on GET, and a signed body without its digest header', async () => {
    const path = `/v1/studies/${studyId}/decline`;
    const h = signRequest({ method: 'POST', path, body: '{"site":"x","reason":"r"}', keyId: lead.keyId, privateKey: lead.privateKey });
    await refusedUnchanged(401, /the signature covers a body .* but none was received/, () => inject(c.app, 'POST', path, { headers: h }));
    await refusedUnchanged(400, /a GET request carries no body/, () => inject(c.app, 'GET', '/v1/sites', { as: admin, headers: { 'content-length': '5' }, raw: 'hello' }));
    const noDigest: Record<string, string> = { ...signRequest({ method: 'POST', path, body: '{}', keyId: lead.keyId, privateKey: lead.privateKey }) };
    delete noDigest['x-setu-content-sha256'];
    await refusedUnchanged(401, /must declare the body's SHA-256 \(hex\) in x-setu-content-sha256/, () => inject(c.app, 'POST', path, { headers: noDigest, raw: '{}', type: 'application/json' }));
  });

  it('limits an unauthenticated body to 64 KiB, and refuses an unsigned request to a signed route before reading its body', async () => {
    const big = JSON.stringify({ token: 'inv_' + 'a'.repeat(70_000), publicKey: generateSigningKeys().publicKeyRaw });
    await refusedUnchanged(413, /an unauthenticated request body may hold at most 65536 bytes; sign the request/, () => inject(c.app, 'POST', '/v1/enrol', { raw: big, type: 'application/json' }));
    await refusedUnchanged(401, /missing request signature/, () => inject(c.app, 'POST', `/v1/agent/tasks/t-1/result`, { raw: Buffer.alloc(1 << 20), type: 'application/octet-stream' }));
    await refusedUnchanged(401, /bad signature/, () =>
      inject(c.app, 'POST', '/v1/agent/tasks/t-1/result', { headers: { ...signRequest({ method: 'POST', path: '/v1/agent/tasks/t-1/result', body: 'other', keyId: site.keyId, privateKey: generateSigningKeys().privateKey }), 'x-setu-content-sha256': bodySha256Hex(Buffer.alloc(1 << 20)) }, raw: Buffer.alloc(1 << 20) }),
    );
    // Authenticated, the full limit applies: a 1 MiB body is read (and refused for what it is, not its size).
    const r = await inject(c.app, 'POST', '/v1/agent/tasks/t-1/result', { as: site, raw: Buffer.alloc(1 << 20) });
    assert.notEqual(r.status, 413, r.body);
    assert.ok(r.status >= 400 && r.status < 500, r.body);
  });

  it('counts the bytes of a chunked body without content-length against the same limit', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${c.url}/v1/enrol`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write('{"token":"');
      req.end('a'.repeat(100_000) + '"}');
    });
    assert.equal(status, 413);
  });
});

/** VmRSS of a process, bytes. */
const rss = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** Sends a 60 MiB body (from a 1 MiB buffer, so this process does not hold it) and returns the status, or the error code if the coordinator cut it off. */
function send60MiB(url: string, headers: Record<string, string>, chunked: boolean): Promise<string> {
  const MiB = Buffer.alloc(1 << 20, 0x41);
  return new Promise((resolve) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', ...headers, ...(chunked ? {} : { 'content-length': String(60 << 20) }) } }, (res) => {
      res.resume();
      resolve(String(res.statusCode));
      req.destroy();
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    let sent = 0;
    const pump = () => {
      while (sent < 60 && !req.destroyed) {
        sent++;
        if (!req.write(MiB)) return void req.once('drain', pump);
      }
      if (!req.destroyed) req.end();
    };
    pump();
  });
}

describe('unsigned and badly signed 60 MiB bodies do not grow the coordinator (real process)', () => {
  it('six unsigned ones and six under a bad signature leave its memory within less than one body of where it was', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-sig-rss-'));
    const port = await freePort();
    const child = spawn(process.execPath, [SETU_MAIN, 'coordinator', 'start', '--data-dir', dir, '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('the coordinator', async () => (await fetch(`${url}/healthz`).then((r) => r.ok).catch(() => false)) || undefined, 20_000, 50);
      for (let i = 0; i < 20; i++) await fetch(`${url}/v1/health`);
      const before = rss(child.pid!);
      const target = `${url}/v1/agent/tasks/t-1/result`;
      const k = generateSigningKeys();
      const forged = { ...signRequest({ method: 'POST', path: '/v1/agent/tasks/t-1/result', body: 'x', keyId: 'site-000000000000', privateKey: k.privateKey }), 'x-setu-content-sha256': 'a'.repeat(64) };
      // Unsigned: to enrolment (413 past 64 KiB) and to a signed route (401 at once); then under a bad signature.
      // With and without content-length each time: a chunked body is cut off by counting.
      const outcomes = await Promise.all([
        ...[false, true, false].map((chunked) => send60MiB(`${url}/v1/enrol`, {}, chunked)),
        ...[true, false, true].map((chunked) => send60MiB(target, {}, chunked)),
        ...[false, true, false, true, false, true].map((chunked) => send60MiB(target, forged, chunked)),
      ]);
      const after = rss(child.pid!);
      const grew = (after - before) / (1 << 20);
      console.log(`coordinator RSS ${Math.round(before / (1 << 20))} MiB → ${Math.round(after / (1 << 20))} MiB after 12 × 60 MiB refused bodies (${outcomes.join(', ')})`);
      for (const o of outcomes) assert.ok(['401', '413', 'EPIPE', 'ECONNRESET'].includes(o), `refused before the body: ${o}`);
      // Buffering even one of them would add 60 MiB (it used to buffer all six: +491 MiB); discarding the
      // rest of a refused body unread costs a few MiB of garbage each at most.
      assert.ok(grew < 45, `RSS grew by ${grew.toFixed(1)} MiB`);
      assert.equal((await fetch(`${url}/v1/health`)).status, 200, 'and it still serves');
    } finally {
      child.kill('SIGTERM');
      await new Promise((res) => (child.exitCode !== null ? res(null) : child.once('exit', res)));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a fit result read small or streamed to the blob store (real sockets)', () => {
  let c: RunningCoordinator;
  let dir: string;
  let site: Identity;
  let taskId: string;
  let update: Buffer, small: Buffer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-sig-stream-'));
    c = await startCoordinator({ dataDir: dir, port: 0, logger: createLogger({ level: 'silent' }) });
    const admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    const lead = await enrolUser(c.app, admin, 'lead-stream', 'study_lead');
    site = await enrolSite(c.app, admin, 'site-stream');
    const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...heartStudy('stream', ['site-stream']), maxUpdateBytes: 256 * 1024 } });
    assert.equal(s.status, 200, s.body);
    assert.equal((await inject(c.app, 'POST', `/v1/studies/${s.json.id}/start`, { as: lead, json: {} })).status, 200);
    const t = await inject(c.app, 'GET', '/v1/agent/task?waitMs=10000', { as: site });
    assert.equal(t.status, 200, t.body);
    taskId = t.json.taskId;
    const path = `/v1/agent/models/${t.json.modelVersionId}`;
    const m = await c.app.inject({ method: 'GET', url: path, headers: signRequest({ method: 'GET', path, keyId: site.keyId, privateKey: site.privateKey }) });
    // Past SMALL_RESULT_BYTES (a note in its metadata), so that it streams; its tampered copy is tried small too.
    update = Buffer.from(encodeSafetensors(decodeSafetensors(new Uint8Array(m.rawPayload)).weights, { [RESULT_META_KEY]: JSON.stringify({ taskId, numExamples: 10 }), note: 'n'.repeat(SMALL_RESULT_BYTES) }));
    small = Buffer.from(encodeSafetensors(decodeSafetensors(new Uint8Array(m.rawPayload)).weights, { [RESULT_META_KEY]: JSON.stringify({ taskId, numExamples: 10 }) }));
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** POSTs `sent` signed as `signed`, over a socket: with its content-length, or chunked (none declared). */
  function post(signed: Buffer, sent: Buffer, chunked = false): Promise<{ status: number; json: any; body: string }> {
    const path = `/v1/agent/tasks/${taskId}/result`;
    const headers = { ...signRequest({ method: 'POST', path, body: signed, keyId: site.keyId, privateKey: site.privateKey }), 'content-type': 'application/octet-stream', ...(chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(sent.length) }) };
    return new Promise((resolve, reject) => {
      const req = http.request(`${c.url}${path}`, { method: 'POST', headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text), body: text }));
      });
      req.on('error', reject);
      // In pieces, so the coordinator reads it as a stream.
      for (let at = 0; at < sent.length; at += 1000) req.write(sent.subarray(at, at + 1000));
      req.end();
    });
  }

  /**
   * Refused with `status`, every table and every blob as before. Except the studies table: the running study's driver
   * renews its lease in its row on its own clock (claimStudy), whatever the requests do.
   */
  const contents = () => storeDigest(c.store, { except: ['request_nonces', 'studies'] });
  async function refusedUnchanged(status: number, error: string, message: RegExp, send: () => Promise<{ status: number; json: any; body: string }>) {
    const before = [await contents(), await c.store.blobs.list()];
    const r = await send();
    assert.deepEqual([r.status, r.json.error], [status, error], r.body);
    assert.match(r.json.message, message);
    assert.deepEqual([await contents(), await c.store.blobs.list()], before, 'a refused body changes nothing and keeps no bytes');
  }

  it('refuses a body that is not the one signed, and one past maxUpdateBytes sent without a length, keeping none of it; takes the signed one', async () => {
    assert.ok(update.length > SMALL_RESULT_BYTES && small.length < SMALL_RESULT_BYTES);
    for (const body of [update, small]) {
      const tampered = Buffer.from(body);
      tampered[tampered.length - 1] ^= 1;
      await refusedUnchanged(401, 'unauthenticated', /is not the body the signature covers/, () => post(body, tampered));
    }
    const big = Buffer.concat([update, Buffer.alloc(256 * 1024)]);
    await refusedUnchanged(413, 'update_too_large', /runs past study stream's maxUpdateBytes limit of 262144 bytes/, () => post(big, big, true));
    const ok = await post(update, update, true);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(ok.json.accepted, true);
    assert.ok((await c.store.blobs.list()).some((b) => b.digest === bodySha256Hex(update) && b.size === update.length), 'the update is stored under its digest');
  });
});
