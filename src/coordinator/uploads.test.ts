/**
 * Chunked, resumable uploads of fit results over real HTTP (routes/uploads.ts, site/upload.ts): an update sent in
 * chunks is checked like a single-body result and accepted once; a wrong offset is 409 with the received count; an
 * announced or sent update over the study's maxUpdateBytes is 413 naming the limit; a chunk over the chunk size is
 * 413; a digest mismatch is refused and changes nothing (tables and blobs); a connection cut mid-chunk and a
 * coordinator restarted mid-upload both resume from the received offset, never from the start.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { REFUSAL_TRAIL, storeDigest } from '../store/digest.js';
import { generateSigningKeys, signChunkRequest, signRequest } from '../protocol/signing.js';
import { ApiError, HttpClient, type Signer } from '../site/http.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, type TaskMessage, type TrainerDeclaration } from '../protocol/api.js';
import { tensor, type Weights } from '../protocol/tensors.js';
import { uploadInChunks } from '../site/upload.js';
import { SETU_MAIN, waitFor } from '../testing/processes.js';
import { SQL_BACKENDS } from '../testing/backends.js';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const UPLOAD_CHILD = join(dirname(fileURLToPath(import.meta.url)), '..', 'testing', 'upload-child.js');

const EXTERNAL: TrainerDeclaration = { kind: 'external', description: 'external (python3 train.py)', models: ['custom'], features: ['evaluate'] };
const N = 100_000; // float32 values: a 400 kB update
const CHUNK = 32 * 1024;
const MAX_UPDATE = 1_000_000;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A TCP proxy to `port` that cuts the first connection carrying a chunk after `cutAfter` bytes of it; counts bytes sent up. */
async function cuttingProxy(port: number, cutAfter: number): Promise<{ port: number; upBytes: () => number; downBytes: () => number; cuts: () => number; close: () => Promise<void> }> {
  let up = 0, down = 0, cuts = 0, cutDone = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let seen = 0;
    let isChunk = false;
    client.on('data', (d: Buffer) => {
      up += d.length;
      if (!isChunk && d.subarray(0, 4).toString() === 'PUT ') isChunk = true;
      seen += d.length;
      if (isChunk && !cutDone && seen > cutAfter) {
        cutDone = true;
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      down += d.length;
      client.write(d);
    });
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on('close', () => b.destroy());
      a.on('error', () => b.destroy());
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    upBytes: () => up,
    downBytes: () => down,
    cuts: () => cuts,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

for (const backend of SQL_BACKENDS) describe(`chunked uploads of fit results (${backend.name}: ${backend.name === 'sqlite' ? 'file' : 'chunk-table'} blobs)`, async () => {
  const skip = await backend.skip();
  let db: { url: string; cleanup: () => Promise<void> };
  let c: RunningCoordinator;
  let dir: string;
  let port: number;
  const sites: { id: string; key: Signer; task?: TaskMessage }[] = [];
  let leadKey: Signer;
  let studyId: string;
  /** An upload started and never completed: discarded once its task's round is over. */
  let abandoned: string;
  /** Another, left after its refused chunks (sites[0]'s task too). */
  let abandonedToo: string;
  const client = (key?: Signer, base = c.url) => new HttpClient({ baseUrl: base, ...(key ? { signer: key } : {}), giveUpAfterMs: 30_000, maxDelayMs: 200 });
  const call = async (method: string, path: string, key: Signer | undefined, opts: { json?: unknown; body?: Uint8Array } = {}) => {
    const body = opts.json !== undefined ? { type: 'application/json', data: JSON.stringify(opts.json) } : opts.body ? { type: 'application/octet-stream', data: opts.body } : undefined;
    try {
      const r = await client(key).request(method, path, body);
      return { status: r.status, json: r.body.length ? (r.json() as any) : undefined };
    } catch (e) {
      if (e instanceof ApiError) return { status: e.status, json: { error: e.code, message: e.message, ...e.body } as any };
      throw e;
    }
  };
  /** A signed GET with a Range header, as a download that resumes sends it. */
  const fetchRange = async (key: Signer, path: string, range: string) => {
    const r = await fetch(c.url + path, { headers: { range, ...signRequest({ method: 'GET', path, keyId: key.keyId, privateKey: key.privateKey }) } });
    return { status: r.status, headers: r.headers, body: new Uint8Array(await r.arrayBuffer()) };
  };
  const admin = (method: string, path: string, json?: unknown) => call(method, path, { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey }, json === undefined ? {} : { json });
  const lead = (method: string, path: string, json?: unknown) => call(method, path, leadKey, json === undefined ? {} : { json });
  // SQLite keeps its blobs as files beside setu.db; PostgreSQL in its chunk table, shared by every coordinator on it.
  const start = () => startCoordinator({ dataDir: dir, ...(backend.name === 'postgres' ? { db: db.url } : {}), port, tickMs: 50, server: { uploadChunkBytes: CHUNK } });

  /** An update of the study's one tensor, with the metadata a fit result carries. */
  function update(taskId: string, fill: number): Uint8Array {
    const w: Weights = Object.create(null);
    w['w'] = tensor([N], new Float32Array(N).fill(fill));
    return encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify({ taskId, numExamples: 10, trainMetrics: { loss: 0.5 } }) });
  }
  async function refused(status: number, pattern: RegExp, fn: () => Promise<{ status: number; json: any }>) {
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const r = await fn();
    assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${JSON.stringify(r.json)}`);
    assert.match(r.json?.message ?? '', pattern);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before, 'a refused request must not change the store (tables and blobs)');
    return r.json;
  }

  before(async () => {
    if (skip) return;
    db = await backend.open();
    dir = mkdtempSync(join(tmpdir(), 'setu-uploads-'));
    port = 0;
    c = await start();
    port = Number(new URL(c.url).port);
    for (const name of ['site-a', 'site-b', 'site-c']) {
      const inv = await admin('POST', '/v1/invites', { siteName: name });
      const k = generateSigningKeys();
      const e = await call('POST', '/v1/enrol', undefined, { json: { token: inv.json.token, publicKey: k.publicKeyRaw, cohorts: { images: 100 } } });
      const key = { keyId: e.json.siteId, privateKey: k.privateKey };
      assert.equal((await call('PUT', '/v1/agent/trainer', key, { json: EXTERNAL })).status, 200);
      sites.push({ id: e.json.siteId, key });
    }
    const inv = await admin('POST', '/v1/users', { name: 'lead', role: 'study_lead' });
    const k = generateSigningKeys();
    assert.equal((await call('POST', '/v1/users/enrol', undefined, { json: { token: inv.json.token, publicKey: k.publicKeyRaw } })).status, 200);
    leadKey = { keyId: inv.json.userId, privateKey: k.privateKey };
    const s = await lead('POST', '/v1/studies', {
      name: 'big', dataset: 'images', model: { kind: 'custom', name: 'wide' }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 300, maxUpdateBytes: MAX_UPDATE,
    });
    assert.equal(s.status, 200, JSON.stringify(s.json));
    studyId = s.json.id;
    const w: Weights = Object.create(null);
    w['w'] = tensor([N], new Float32Array(N));
    assert.equal((await call('PUT', `/v1/studies/${studyId}/initial-weights`, leadKey, { body: encodeSafetensors(w) })).status, 200);
    assert.equal((await lead('POST', `/v1/studies/${studyId}/start`, {})).status, 200);
    for (const site of sites) {
      const t = await call('GET', '/v1/agent/task?waitMs=5000', site.key);
      assert.equal(t.status, 200);
      site.task = t.json;
    }
  });

  after(async () => {
    if (skip) return;
    await c.close();
    rmSync(dir, { recursive: true, force: true });
    await db.cleanup();
  });

  it('refuses an update over the study\'s maxUpdateBytes with 413 naming the limit, announced or sent, changing nothing', { skip }, async () => {
    const a = sites[0]!;
    await refused(413, new RegExp(`maxUpdateBytes limit of ${MAX_UPDATE} bytes`), () => call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: MAX_UPDATE + 1, digest: 'a'.repeat(64) } }));
    await refused(413, new RegExp(`maxUpdateBytes limit of ${MAX_UPDATE} bytes`), () => call('POST', `/v1/agent/tasks/${a.task!.taskId}/result`, a.key, { body: new Uint8Array(MAX_UPDATE + 10) }));
  });

  it('announces idempotently, refuses a wrong offset with 409 and the received count, an oversized chunk with 413, and another site\'s upload with 404', { skip }, async () => {
    const a = sites[0]!, b = sites[1]!;
    const bytes = update(a.task!.taskId, 0.5);
    const announce = () => call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: bytes.length, digest: sha(bytes) } });
    const up = (await announce()).json;
    assert.deepEqual([up.received, up.chunkBytes, up.size], [0, CHUNK, bytes.length]);
    const put = (offset: number, body: Uint8Array, key = a.key) => call('PUT', `/v1/agent/uploads/${up.uploadId}?offset=${offset}`, key, { body });
    assert.equal((await put(0, bytes.subarray(0, CHUNK))).json.received, CHUNK);
    const wrong = await put(0, bytes.subarray(0, CHUNK));
    assert.deepEqual([wrong.status, wrong.json.error, wrong.json.received], [409, 'offset_conflict', CHUNK]);
    assert.equal((await announce()).json.uploadId, up.uploadId, 'the same task and digest: the same upload');
    assert.equal((await announce()).json.received, CHUNK, '… and where to resume');
    await refused(413, new RegExp(`exceeds the limit of ${CHUNK} bytes`), () => put(CHUNK, bytes.subarray(CHUNK, 3 * CHUNK)));
    await refused(404, /no upload/, () => put(CHUNK, bytes.subarray(CHUNK, 2 * CHUNK), b.key));
    await refused(404, /no upload/, () => call('GET', `/v1/agent/uploads/${up.uploadId}`, b.key));
    const early = await call('POST', `/v1/agent/uploads/${up.uploadId}/complete`, a.key);
    assert.deepEqual([early.status, early.json.error, early.json.received], [409, 'upload_incomplete', CHUNK]);
    // An upload of other bytes for the same task is another upload; this one will never complete (see the last test).
    const other = update(a.task!.taskId, 0.75);
    abandoned = (await call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: other.length, digest: sha(other) } })).json.uploadId;
    assert.notEqual(abandoned, up.uploadId);
    assert.equal((await call('PUT', `/v1/agent/uploads/${abandoned}?offset=0`, a.key, { body: other.subarray(0, CHUNK) })).status, 200);
  });

  it('refuses a whole upload whose bytes do not hash to the announced digest, and keeps nothing of it', { skip }, async () => {
    const a = sites[0]!;
    const bytes = update(a.task!.taskId, 0.25);
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const up = (await call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: bytes.length, digest: sha(new Uint8Array(bytes.length)) } })).json;
    for (let at = 0; at < bytes.length; at += CHUNK) assert.equal((await call('PUT', `/v1/agent/uploads/${up.uploadId}?offset=${at}`, a.key, { body: bytes.subarray(at, at + CHUNK) })).status, 200);
    const r = await call('POST', `/v1/agent/uploads/${up.uploadId}/complete`, a.key);
    assert.deepEqual([r.status, r.json.error], [400, 'digest_mismatch']);
    assert.match(r.json.message, /hash to sha256/);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before, 'no upload row, no blob, no update');
    assert.equal((await c.store.getTask(a.task!.taskId))?.status, 'delivered', 'the task stays open');
  });

  it('refuses a chunk whose bytes do not match its signed digest (x-setu-chunk-sha256 with 400 naming it, x-setu-content-sha256 with 401), keeping nothing of it', { skip }, async () => {
    const a = sites[0]!;
    const bytes = update(a.task!.taskId, 0.125);
    const up = (await call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: bytes.length, digest: sha(bytes) } })).json;
    const path = (at: number) => `/v1/agent/uploads/${up.uploadId}?offset=${at}`;
    // The agent's way: the first chunk signed over its declared digest.
    const first = await client(a.key).request('PUT', path(0), { type: 'application/octet-stream', data: bytes.subarray(0, CHUNK) }, undefined, { unsignedPayload: true });
    assert.equal(first.json<{ received: number }>().received, CHUNK);
    const chunk = bytes.subarray(CHUNK, 2 * CHUNK);
    const tampered = Buffer.from(chunk);
    tampered[100] ^= 0xff;
    const raw = async (headers: Record<string, string>, body: Uint8Array) => {
      const r = await fetch(c.url + path(CHUNK), { method: 'PUT', headers: { 'content-type': 'application/octet-stream', ...headers }, body });
      return { status: r.status, json: (await r.json()) as any };
    };
    const signing = { method: 'PUT', path: path(CHUNK), keyId: a.key.keyId, privateKey: a.key.privateKey };
    const held = () => (backend.name === 'sqlite' ? readFileSync(join(dir, 'blobs', 'partial', up.uploadId)) : undefined);
    const heldBefore = held();
    const r1 = await refused(400, /x-setu-chunk-sha256: the chunk received .* hashes to sha256 .*nothing of it was kept/, () => raw(signChunkRequest({ ...signing, chunkSha256: sha(chunk) }), tampered));
    assert.equal(r1.error, 'chunk_digest_mismatch');
    await refused(401, /not the body the signature covers/, () => raw(signRequest({ ...signing, body: chunk }), tampered));
    // A declared chunk digest is for chunks only: elsewhere it is refused before the body is read.
    const json = new TextEncoder().encode(JSON.stringify({ size: bytes.length, digest: sha(bytes) }));
    const elsewhere = `/v1/agent/tasks/${a.task!.taskId}/uploads`;
    const r3 = await fetch(c.url + elsewhere, { method: 'POST', headers: { 'content-type': 'application/json', ...signChunkRequest({ ...signing, method: 'POST', path: elsewhere, chunkSha256: sha(json) }) }, body: json });
    assert.deepEqual([r3.status, ((await r3.json()) as any).error], [400, 'unsigned_payload_not_allowed']);
    assert.equal((await call('GET', `/v1/agent/uploads/${up.uploadId}`, a.key)).json.received, CHUNK, 'the upload still holds its first chunk only');
    if (heldBefore) assert.ok(held()!.equals(heldBefore) && heldBefore.equals(bytes.subarray(0, CHUNK)), 'the partial file holds exactly the first chunk: no byte of the refused ones');
    // The same chunk, untampered, lands; the upload is left for the round's end to discard (the last test).
    assert.equal((await raw(signChunkRequest({ ...signing, chunkSha256: sha(chunk) }), chunk)).status, 200);
    if (heldBefore) {
      assert.ok(held()!.equals(bytes.subarray(0, 2 * CHUNK)));
      // A power failure before the upload's one fsync (at completion) tore the second chunk's pages: the restarted
      // coordinator keeps the intact prefix of whole chunks (its journal, store/blobs/file-blobs.ts) and says so.
      await c.close();
      const file = join(dir, 'blobs', 'partial', up.uploadId);
      const torn = readFileSync(file);
      torn.fill(0, CHUNK + 1000);
      writeFileSync(file, torn);
      c = await start();
      const again = (await call('POST', `/v1/agent/tasks/${a.task!.taskId}/uploads`, a.key, { json: { size: bytes.length, digest: sha(bytes) } })).json;
      assert.deepEqual([again.uploadId, again.received], [up.uploadId, CHUNK], 'the agent is told to resume after the first chunk, the one that survived');
      assert.ok(held()!.equals(bytes.subarray(0, CHUNK)), 'and the partial holds exactly it');
      const late = await call('PUT', path(2 * CHUNK), a.key, { body: bytes.subarray(2 * CHUNK, 3 * CHUNK) });
      assert.deepEqual([late.status, late.json.received], [409, CHUNK], 'a chunk past what survived is told where to resume');
      assert.equal((await client(a.key).request('PUT', path(CHUNK), { type: 'application/octet-stream', data: chunk }, undefined, { unsignedPayload: true })).json<{ received: number }>().received, 2 * CHUNK);
      assert.ok(held()!.equals(bytes.subarray(0, 2 * CHUNK)));
    }
    abandonedToo = up.uploadId;
  });

  it('refuses an uploaded update with a NaN like a single-body result, and keeps no blob of it', { skip }, async () => {
    const a = sites[0]!;
    const w: Weights = Object.create(null);
    w['w'] = tensor([N], new Float32Array(N).fill(0.1));
    w['w'].data[N - 3] = NaN;
    const bytes = encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify({ taskId: a.task!.taskId, numExamples: 10 }) });
    const file = join(dir, 'nan.safetensors');
    writeFileSync(file, bytes);
    await refused(400, new RegExp(`non-finite value \\(NaN\\) at index ${N - 3}`), async () => {
      try {
        return { status: 200, json: await uploadInChunks(client(a.key), a.task!.taskId, file) };
      } catch (e) {
        if (e instanceof ApiError) return { status: e.status, json: { message: e.message } };
        throw e;
      }
    });
  });

  it('resumes after a connection cut mid-chunk, sending each byte about once, and the update is accepted', { skip }, async () => {
    const a = sites[0]!;
    const bytes = update(a.task!.taskId, 0.5);
    const file = join(dir, 'a.safetensors');
    writeFileSync(file, bytes);
    const proxy = await cuttingProxy(port, 5 * CHUNK + 1000);
    try {
      const offsets: number[] = [];
      const r = await uploadInChunks(client(a.key, `http://127.0.0.1:${proxy.port}`), a.task!.taskId, file, { onChunk: (o) => void offsets.push(o) }) as { accepted: boolean };
      assert.equal(r.accepted, true);
      assert.equal(proxy.cuts(), 1, 'the connection was cut once');
      // The chunk in flight at the cut (and at most the one before it, if its answer was lost) goes again; nothing else.
      assert.ok(offsets.length <= Math.ceil(bytes.length / CHUNK) + 2, `${offsets.length} chunks sent: ${offsets}`);
      assert.ok(proxy.upBytes() < bytes.length + 3 * CHUNK + 200 * offsets.length, `${proxy.upBytes()} bytes went up for a ${bytes.length}-byte update`);
      assert.ok(offsets.every((o, i) => i === 0 || o >= offsets[i - 1]!), `never back to an earlier offset: ${offsets}`);
    } finally {
      await proxy.close();
    }
    const row = (await c.store.listUpdates(studyId, 1)).find((u) => u.task_id === a.task!.taskId)!;
    assert.deepEqual([row.digest, row.size], [sha(bytes), bytes.length]);
    assert.ok(Buffer.from(await c.store.blobs.readAll(row.digest!)).equals(bytes), 'the stored update is the bytes sent');
  });

  it('resumes an upload across a coordinator restart from the offset the restarted coordinator holds', { skip }, async () => {
    const b = sites[1]!;
    const bytes = update(b.task!.taskId, 1.5);
    const file = join(dir, 'b.safetensors');
    writeFileSync(file, bytes);
    const offsets: number[] = [];
    let restarted: Promise<void> | undefined;
    let heldAtStop = -1;
    const r = await uploadInChunks(client(b.key), b.task!.taskId, file, {
      onChunk: (o) => void offsets.push(o),
      onProgress: (received) => {
        if (restarted || received < 4 * CHUNK) return;
        heldAtStop = received;
        restarted = (async () => {
          await c.close();
          c = await start();
        })();
      },
    }) as { accepted: boolean };
    await restarted;
    assert.equal(r.accepted, true);
    assert.ok(heldAtStop > 0);
    const afterStop = offsets.slice(offsets.indexOf(heldAtStop));
    assert.ok(afterStop.length > 0 && afterStop.every((o) => o >= heldAtStop), `resumed at or after ${heldAtStop}, never from 0: ${offsets}`);
    assert.equal(offsets.filter((o) => o === 0).length, 1, 'the first chunk went once');
    const row = (await c.store.listUpdates(studyId, 1)).find((u) => u.task_id === b.task!.taskId)!;
    assert.ok(Buffer.from(await c.store.blobs.readAll(row.digest!)).equals(bytes));
  });

  it('an agent process SIGKILLed mid-upload resumes, in its next life, from the offset the coordinator holds', { skip }, async () => {
    const s = sites[2]!;
    const bytes = update(s.task!.taskId, 1);
    const file = join(dir, 'c.safetensors');
    writeFileSync(file, bytes);
    const argsFile = join(dir, 'child.json');
    const pem = typeof s.key.privateKey === 'string' ? s.key.privateKey : s.key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const run = (pace: boolean) => {
      writeFileSync(argsFile, JSON.stringify({ baseUrl: c.url, keyId: s.key.keyId, privateKeyPem: pem, taskId: s.task!.taskId, file, pace }));
      const child = spawn(process.execPath, [UPLOAD_CHILD, argsFile], { stdio: ['pipe', 'pipe', 'inherit'] });
      const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
      return { child, next: async () => JSON.parse(String((await lines.next()).value)) as { offset?: number; done?: { accepted: boolean } } };
    };
    const first = run(true);
    const upload = async () => (await c.store.findUpload(s.task!.taskId, sha(bytes)))!;
    for (let i = 0; i < 4; i++) {
      assert.equal((await first.next()).offset, i * CHUNK);
      first.child.stdin!.write('go\n');
    }
    assert.equal((await first.next()).offset, 4 * CHUNK, 'about to send the fifth chunk');
    const held = await (await c.store.blobs.partial((await upload()).id)).received();
    assert.equal(held, 4 * CHUNK, 'four chunks landed');
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    const second = run(false);
    const offsets: number[] = [];
    for (;;) {
      const m = await second.next();
      if (m.done) {
        assert.equal(m.done.accepted, true);
        break;
      }
      offsets.push(m.offset!);
    }
    await once(second.child, 'exit');
    assert.equal(offsets[0], held, `the new process resumed at ${held}, not 0: ${offsets}`);
    assert.equal(offsets.length, Math.ceil((bytes.length - held) / CHUNK), 'and sent each remaining chunk once');
    const row = (await c.store.listUpdates(studyId, 1)).find((u) => u.task_id === s.task!.taskId)!;
    assert.ok(Buffer.from(await c.store.blobs.readAll(row.digest!)).equals(bytes));
  });

  it('serves a model version with Range, and the agent\'s download resumes a cut file and checks its digest', { skip }, async () => {
    const a = sites[0]!;
    const mv = (await c.store.getModelVersion(a.task!.modelVersionId))!;
    const whole = await c.store.blobs.readAll(mv.digest);
    const r = await client(a.key).request('GET', `/v1/agent/models/${mv.id}`);
    assert.ok(Buffer.from(r.body).equals(whole));
    assert.equal(r.headers.get('x-setu-digest'), mv.digest);
    const target = join(dir, 'model.safetensors');
    writeFileSync(`${target}.part`, whole.subarray(0, 1000)); // what a cut download left
    const proxy = await cuttingProxy(port, Number.MAX_SAFE_INTEGER);
    try {
      assert.equal((await client(a.key, `http://127.0.0.1:${proxy.port}`).download(`/v1/agent/models/${mv.id}`, target)).digest, mv.digest);
      assert.ok(proxy.downBytes() < whole.length - 1000 + 4096, `only the missing bytes came down (${proxy.downBytes()} of ${whole.length})`);
    } finally {
      await proxy.close();
    }
    assert.ok(readFileSync(target).equals(whole));
    writeFileSync(`${target}.part`, Buffer.from(whole.subarray(0, 1000)).fill(7)); // a corrupt prefix: refused, removed
    await assert.rejects(client(a.key).download(`/v1/agent/models/${mv.id}`, target), /hashes to sha256/);
    assert.ok(!existsSync(`${target}.part`), 'the corrupt part is gone: the next try starts afresh');
    const ranged = await fetchRange(a.key, `/v1/agent/models/${mv.id}`, 'bytes=10-19');
    assert.deepEqual([ranged.status, ranged.headers.get('content-range')], [206, `bytes 10-19/${whole.length}`]);
    assert.ok(Buffer.from(ranged.body).equals(whole.subarray(10, 20)));
    assert.equal((await fetchRange(a.key, `/v1/agent/models/${mv.id}`, `bytes=${whole.length}-`)).status, 416);
  });

  it('commits the round from the uploaded blobs', { skip }, async () => {
    // Every update in, the round commits from the blob store: FedAvg of 0.5, 1.5 and 1 with equal weights.
    await waitFor('round 1 committed', async () => ((await c.store.getRound(studyId, 1))?.status === 'committed' ? true : undefined), 30_000);
    const model = await c.store.latestModelVersion(studyId);
    const f32 = new Float32Array((await c.store.blobs.readAll(model!.digest)).slice(-N * 4).buffer);
    assert.ok(Math.abs(f32[0]! - 1) < 1e-6 && Math.abs(f32[N - 1]! - 1) < 1e-6, `the aggregate is the mean: ${f32[0]}`);
    // `setu model download` streams it to a file, verified by digest, and names its tensors from the header alone.
    const out = join(dir, 'final.safetensors');
    // (execFile, not execFileSync: the coordinator answering it runs in this process.)
    const printed = JSON.parse((await promisify(execFile)(process.execPath, [SETU_MAIN, 'model', 'download', studyId, '--out', out, '--coordinator', c.url, '--data-dir', dir, '--json'], { encoding: 'utf8' })).stdout) as { sha256: string; bytes: number; tensors: Record<string, number[]> };
    assert.deepEqual([printed.sha256, printed.bytes, printed.tensors], [model!.digest, model!.size, { w: [N] }]);
    assert.ok(readFileSync(out).equals(await c.store.blobs.readAll(model!.digest)));
    // The upload that never completed is gone with its bytes, the row and the partial (a file, or chunk rows).
    await waitFor('the abandoned upload discarded', async () => ((await c.store.getUpload(abandoned)) === undefined ? true : undefined), 10_000);
    const tables = await c.store.dumpTables();
    if (backend.name === 'postgres') assert.deepEqual(tables['blob_partials']!.filter((r) => r['id'] === abandoned || r['id'] === abandonedToo), []);
    else for (const id of [abandoned, abandonedToo]) for (const f of [id, `${id}.chunks`]) assert.ok(!existsSync(join(dir, 'blobs', 'partial', f)), `${f} is gone`);
    assert.deepEqual(await c.store.staleUploads(), []);
  });
});
