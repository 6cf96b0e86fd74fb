/**
 * The bounds on open requests, over HTTP: a site past its long-polls or uploads is answered 429, the coordinator
 * past its uploads 503, a user past its event streams 429, each with Retry-After and a message naming the limit;
 * uploads are refused before a byte of their body is read; every slot comes back on every exit path (answered,
 * timed out, client gone mid-wait or mid-body), and the refusals are counted under their limit.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { createLogger } from '../../observability/logger.js';
import { signRequest } from '../../protocol/signing.js';
import { enrolSite, enrolUser, heartStudy, inject, type Identity } from '../../testing/inject.js';
import { decodeSafetensors, encodeSafetensors } from '../../protocol/safetensors.js';
import { RESULT_META_KEY } from '../../protocol/api.js';
import { waitFor } from '../../testing/processes.js';
import { CHUNK_ROUTES, COMPLETE_ROUTES, LONG_POLL_ROUTES, Limits, UPLOAD_ROUTES, isRefusal } from './limits.js';
import { limitRefusals } from '../../observability/metrics.js';
import { REFUSAL_TRAIL, storeDigest } from '../../store/digest.js';

const refusalsOf = async (limit: string) => (await limitRefusals.get()).values.find((v) => v.labels.limit === limit)?.value ?? 0;

describe('the counters', () => {
  it('refuse past each bound, per key, and give a slot back exactly once', () => {
    const raw = new Limits({ longPollsPerSite: 1, uploads: 2, uploadBytes: 100, uploadsPerSite: 1, streamsPerIdentity: 1 });
    // Every slot taken here is given back at the end (the gauges are the process's).
    const held: (() => void)[] = [];
    const keep = <T,>(r: T): T => (typeof r === 'function' && held.push(r as () => void), r);
    const l = {
      takeLongPoll: (s: string) => keep(raw.takeLongPoll(s)),
      takeUpload: (s: string, bytes = 10) => keep(raw.takeUpload(s, bytes)),
      takeStream: (s: string) => keep(raw.takeStream(s)),
      get open() {
        return raw.open;
      },
    };
    const a = l.takeLongPoll('s1');
    assert.ok(!isRefusal(a));
    const b = l.takeLongPoll('s1');
    assert.ok(isRefusal(b) && b.status === 429 && b.limit === 'longpolls_per_site' && /longPollsPerSite 1/.test(b.message));
    assert.ok(!isRefusal(l.takeLongPoll('s2')), 'another site is not held back');
    a();
    a();
    assert.equal(l.open.longPolls, 1, 'a second release changes nothing');
    assert.ok(!isRefusal(l.takeLongPoll('s1')));

    const u1 = l.takeUpload('s1');
    assert.ok(!isRefusal(u1));
    const same = l.takeUpload('s1');
    assert.ok(isRefusal(same) && same.status === 429 && same.limit === 'uploads_per_site');
    assert.ok(!isRefusal(l.takeUpload('s2')));
    const full = l.takeUpload('s3');
    assert.ok(isRefusal(full) && full.status === 503 && full.limit === 'uploads' && full.retryAfterS > 0);
    u1();
    const big = l.takeUpload('s3', 91);
    assert.ok(isRefusal(big) && big.status === 503 && big.limit === 'upload_bytes' && /10 bytes of uploads and this one declares 91.*uploadBytes 100/.test(big.message));
    assert.ok(!isRefusal(l.takeUpload('s3', 90)), 'a slot came free, and 90 more bytes fit');
    assert.equal(raw.open.uploadBytes, 100);

    assert.ok(!isRefusal(l.takeStream('user-1')));
    assert.ok(isRefusal(l.takeStream('user-1')));
    assert.ok(!isRefusal(l.takeStream('user-2')));
    for (const release of held) release();
    assert.deepEqual(raw.open, { longPolls: 0, uploads: 0, uploadBytes: 0, streams: 0 });
    const alone = new Limits({ uploadBytes: 100 }).takeUpload('s1', 1000);
    assert.ok(!isRefusal(alone), 'one upload is admitted when none is in flight, however large');
    alone();
    assert.throws(() => new Limits({ uploads: 0 }), /uploads must be a whole number of at least 1, got 0/);
  });
});

describe('the bytes an open round holds', () => {
  it('reserves, keeps what was accepted, gives back what was not, and frees a round when it closes', () => {
    const l = new Limits({ roundBytes: 100 });
    const a = l.takeRoundBytes('st', 1, 60);
    assert.ok(!isRefusal(a));
    const b = l.takeRoundBytes('st', 1, 50);
    assert.ok(isRefusal(b) && b.status === 503 && b.limit === 'round_bytes' && /round 1 of study st already holds 60 bytes.*roundBytes 100/.test(b.message), 'reserved bytes count while the upload is received');
    a.accepted();
    a.release();
    assert.equal(l.roundHeld('st', 1), 60, 'kept once, the later release changes nothing');
    const c = l.takeRoundBytes('st', 1, 40);
    assert.ok(!isRefusal(c));
    c.release();
    assert.equal(l.roundHeld('st', 1), 60, 'a refused upload holds nothing');
    assert.ok(!isRefusal(l.takeRoundBytes('other', 1, 100)), 'another study has its own bound');
    l.roundClosed('st', 1);
    assert.equal(l.roundHeld('st', 1), 0);
    const d = l.takeRoundBytes('st', 2, 500);
    assert.ok(!isRefusal(d), 'the first update of a round is admitted, however large');
    d.accepted();
    const e = l.takeRoundBytes('st', 3, 10);
    assert.ok(!isRefusal(e), 'a later round of the study frees the earlier one this process never saw close');
    assert.equal(l.roundHeld('st', 2), 0);
    e.accepted();
    l.roundClosed('st');
    assert.equal(l.roundHeld('st', 3), 0, 'the study ended');
  });
});

describe('bounds on open requests over HTTP', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity, site: Identity, other: Identity, third: Identity, lead: Identity;
  let port: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-limits-'));
    c = await startCoordinator({ dataDir: dir, port: 0, maxWaitMs: 20_000, logger: createLogger({ level: 'silent' }), server: { limits: { longPollsPerSite: 2, uploads: 2, uploadsPerSite: 1, streamsPerIdentity: 2 } } });
    port = Number(new URL(c.url).port);
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    site = await enrolSite(c.app, admin, 'limits-a');
    other = await enrolSite(c.app, admin, 'limits-b');
    third = await enrolSite(c.app, admin, 'limits-c');
    lead = await enrolUser(c.app, admin, 'lead-limits', 'study_lead');
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A signed request over a real socket; `body` bytes are declared (and signed) but only `send` of them are written. */
  function raw(as: Identity, method: string, path: string, o: { body?: Buffer; send?: number } = {}) {
    const headers: Record<string, string> = signRequest({ method, path, body: o.body, keyId: as.keyId, privateKey: as.privateKey });
    if (o.body) Object.assign(headers, { 'content-type': 'application/octet-stream', 'content-length': String(o.body.length) });
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false });
    const answer = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      req.on('response', (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    answer.catch(() => undefined);
    req.flushHeaders();
    if (o.body && o.send) req.write(o.body.subarray(0, o.send));
    if (!o.body) req.end();
    return { req, answer };
  }

  it('declares every limited route', () => {
    const has = (method: string, url: string) => c.app.routeTable.some((r) => r.method === method && r.url === url);
    for (const url of LONG_POLL_ROUTES) assert.ok(has('GET', url), `GET ${url} exists`);
    for (const url of UPLOAD_ROUTES) assert.ok(has('POST', url), `POST ${url} exists`);
    for (const url of CHUNK_ROUTES) assert.ok(has('PUT', url), `PUT ${url} exists`);
    for (const url of COMPLETE_ROUTES) assert.ok(has('POST', url), `POST ${url} exists`);
  });

  it('answers a third concurrent long-poll of one site 429 with Retry-After, and frees its slots on timeout and on abort', async () => {
    const before = await refusalsOf('longpolls_per_site');
    const p1 = inject(c.app, 'GET', '/v1/agent/task?waitMs=1500', { as: site });
    const p2 = raw(site, 'GET', '/v1/agent/task?waitMs=20000');
    await waitFor('two long-polls open', async () => (c.app.limits.open.longPolls === 2 ? true : undefined), 10_000, 20);
    const refused = await inject(c.app, 'GET', '/v1/agent/task?waitMs=1000', { as: site });
    assert.equal(refused.status, 429, refused.body);
    assert.equal(refused.headers['retry-after'], '5');
    assert.equal(refused.json.error, 'limit_longpolls_per_site');
    assert.match(refused.json.message, /already has 2 long-polls open.*longPollsPerSite 2.*retry after 5 s/);
    assert.equal(await refusalsOf('longpolls_per_site'), before + 1);
    assert.equal((await inject(c.app, 'GET', '/v1/agent/task?waitMs=0', { as: other })).status, 204, 'another site still polls');

    assert.equal((await p1).status, 204, 'the first poll timed out');
    await waitFor('the timed-out poll gave its slot back', async () => (c.app.limits.open.longPolls === 1 ? true : undefined), 5_000, 20);
    // The client goes away mid-wait (a killed agent, a dropped connection): its slot comes back at once.
    p2.req.destroy();
    await waitFor('the aborted poll gave its slot back', async () => (c.app.limits.open.longPolls === 0 ? true : undefined), 5_000, 20);
    const again = await Promise.all([0, 1].map(() => inject(c.app, 'GET', '/v1/agent/task?waitMs=0', { as: site })));
    assert.deepEqual(again.map((r) => r.status), [204, 204]);
    assert.equal(c.app.limits.open.longPolls, 0);
  });

  it('refuses uploads past the per-site (429) and coordinator-wide (503) bounds before reading their bodies', async () => {
    const body = Buffer.alloc(4 << 20, 7);
    const path = (id: string) => `/v1/agent/tasks/${id}/result`;
    // Two sites each hold a fit task: a result for it streams its body to the blob store as it arrives, holding its
    // upload slot until the last byte.
    const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: heartStudy('limits uploads', ['limits-a', 'limits-b'], 1) });
    assert.equal(s.status, 200, s.body);
    assert.equal((await inject(c.app, 'POST', `/v1/studies/${s.json.id}/start`, { as: lead, json: {} })).status, 200);
    const taskOf = async (who: Identity) => {
      const t = await inject(c.app, 'GET', '/v1/agent/task?waitMs=10000', { as: who });
      assert.equal(t.status, 200, t.body);
      return t.json.taskId as string;
    };
    const [taskA, taskB] = [await taskOf(site), await taskOf(other)];
    // Two uploads in flight, their bodies only begun: the coordinator holds both slots.
    const a = raw(site, 'POST', path(taskA), { body, send: 1024 });
    const b = raw(other, 'POST', path(taskB), { body, send: 1024 });
    await waitFor('two uploads in flight', async () => (c.app.limits.open.uploads === 2 ? true : undefined), 10_000, 20);

    // The refused requests declare 4 MiB but send none of it: the answer comes without the body being read.
    const mine = raw(site, 'POST', path('task-a2'), { body, send: 0 });
    const r1 = await mine.answer;
    mine.req.destroy();
    assert.equal(r1.status, 429, r1.body);
    assert.equal(r1.headers['retry-after'], '2');
    assert.equal(JSON.parse(r1.body).error, 'limit_uploads_per_site');
    assert.match(JSON.parse(r1.body).message, /uploadsPerSite 1/);

    const before503 = await refusalsOf('uploads');
    const full = raw(third, 'POST', path('task-c'), { body, send: 0 });
    const r2 = await full.answer;
    full.req.destroy();
    assert.equal(r2.status, 503, r2.body);
    assert.equal(r2.headers['retry-after'], '2');
    assert.equal(JSON.parse(r2.body).error, 'limit_uploads');
    assert.match(JSON.parse(r2.body).message, /receiving 2 uploads, its limit \(uploads 2\)/);
    assert.equal(await refusalsOf('uploads'), before503 + 1);

    // One upload completes (answered: its bytes are no safetensors), the other's client goes away mid-body.
    a.req.end(body.subarray(1024));
    const ra = await a.answer;
    assert.deepEqual([ra.status, JSON.parse(ra.body).error], [400, 'malformed_update'], ra.body);
    b.req.destroy();
    await waitFor('both upload slots back', async () => (c.app.limits.open.uploads === 0 ? true : undefined), 5_000, 20);
    const small = await inject(c.app, 'POST', path('task-c'), { as: third, raw: Buffer.alloc(16) });
    assert.equal(small.status, 403, 'admitted again, and refused only for what it is');
  });

  it('refuses a user a third event stream with 429 and frees a slot when a stream closes', async () => {
    const token = async () => (await inject(c.app, 'POST', '/v1/events/token', { as: lead })).json.token as string;
    const open = async () => {
      const ctl = new AbortController();
      const r = await fetch(`${c.url}/v1/events?token=${await token()}`, { signal: ctl.signal });
      return { r, ctl };
    };
    const s1 = await open();
    const s2 = await open();
    assert.deepEqual([s1.r.status, s2.r.status], [200, 200]);
    const s3 = await open();
    assert.equal(s3.r.status, 429);
    assert.equal(s3.r.headers.get('retry-after'), '10');
    const j = (await s3.r.json()) as { error: string; message: string };
    assert.equal(j.error, 'limit_streams_per_identity');
    assert.match(j.message, new RegExp(`${lead.keyId} already has 2 event streams open.*streamsPerIdentity 2`));
    s1.ctl.abort();
    await waitFor('the closed stream gave its slot back', async () => (c.app.limits.open.streams === 1 ? true : undefined), 5_000, 20);
    const s4 = await open();
    assert.equal(s4.r.status, 200);
    s2.ctl.abort();
    s4.ctl.abort();
    await waitFor('every stream slot back', async () => (c.app.limits.open.streams === 0 ? true : undefined), 5_000, 20);
  });

  it('shows what is open and what was refused in /metrics', async () => {
    const m = await inject(c.app, 'GET', '/metrics');
    assert.match(m.body, /setu_limit_refusals_total\{limit="longpolls_per_site"\} [1-9]/);
    assert.match(m.body, /setu_limit_refusals_total\{limit="uploads"\} [1-9]/);
    assert.match(m.body, /setu_open_longpolls 0/);
    assert.match(m.body, /setu_uploads_in_flight 0/);
    assert.match(m.body, /setu_upload_bytes_in_flight 0/);
  });
});


describe('the bytes of an open round over HTTP', () => {
  let c: RunningCoordinator;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-limits-round-'));
    // A logistic update on the heart data is about 300 bytes: the round holds two and refuses the third.
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, logger: createLogger({ level: 'silent' }), server: { limits: { roundBytes: 700 } } });
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers 503 with Retry-After to an update past the round\'s bytes, changing nothing; the round commits on what it holds and frees them', async () => {
    const admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    const names = ['round-a', 'round-b', 'round-c'];
    const sites = await Promise.all(names.map((n) => enrolSite(c.app, admin, n)));
    const lead = await enrolUser(c.app, admin, 'lead-round', 'study_lead');
    // Two sites suffice: the round closes at its 2 s deadline on the two updates it holds.
    const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...heartStudy('round bytes', names, 2), minSites: 2, roundTimeoutSeconds: 2 } });
    assert.equal(s.status, 200, s.body);
    assert.equal((await inject(c.app, 'POST', `/v1/studies/${s.json.id}/start`, { as: lead, json: {} })).status, 200);
    const upload = async (site: Identity) => {
      const t = await inject(c.app, 'GET', '/v1/agent/task?waitMs=10000', { as: site });
      assert.equal(t.status, 200, t.body);
      const path = `/v1/agent/models/${t.json.modelVersionId}`;
      const m = await c.app.inject({ method: 'GET', url: path, headers: signRequest({ method: 'GET', path, keyId: site.keyId, privateKey: site.privateKey }) });
      const w = decodeSafetensors(new Uint8Array(m.rawPayload)).weights;
      const body = Buffer.from(encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify({ taskId: t.json.taskId, numExamples: 10 }) }));
      assert.ok(body.length > 240 && body.length <= 350, `an update of ${body.length} bytes`);
      return { task: t.json.taskId as string, round: t.json.round as number, send: () => inject(c.app, 'POST', `/v1/agent/tasks/${t.json.taskId}/result`, { as: site, raw: body }) };
    };
    const [a, b, third] = [await upload(sites[0]!), await upload(sites[1]!), await upload(sites[2]!)];
    assert.equal((await a.send()).status, 200);
    assert.equal((await b.send()).status, 200);
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const r = await third.send();
    assert.equal(r.status, 503, r.body);
    assert.equal(r.headers['retry-after'], '10');
    assert.equal(r.json.error, 'limit_round_bytes');
    assert.match(r.json.message, /round 1 of study .* already holds \d+ bytes of updates.*roundBytes 700/);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before, 'the refused update changed nothing');
    assert.ok(c.app.limits.roundHeld(s.json.id, 1) > 480);
    // The round commits on the two updates it holds; its bytes are free, and the next round takes the third site.
    await waitFor('round 1 committed', async () => ((await c.store.getRound(s.json.id, 1))?.status === 'committed' ? true : undefined), 20_000, 50);
    await waitFor('its bytes freed', async () => (c.app.limits.roundHeld(s.json.id, 1) === 0 ? true : undefined), 5_000, 20);
    const next = await upload(sites[2]!);
    assert.equal(next.round, 2);
    assert.equal((await next.send()).status, 200);
  });
});
