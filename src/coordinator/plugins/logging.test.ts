/**
 * The coordinator's log: structured (one JSON object per line), every line of a request carries its request
 * id, which the answer names in X-Request-Id and every 5xx body; no secret reaches any line, even at trace
 * level, for real requests that carry secrets in every place they can travel: signature headers, invite
 * tokens in enrolment bodies (well-formed, wrong and malformed JSON), private-key PEMs in bodies, stream
 * tokens in query strings and paths. The level comes from --log-level or SETU_LOG_LEVEL (real processes).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { createLogger } from '../../observability/logger.js';
import { generateSigningKeys, signRequest } from '../../protocol/signing.js';
import { enrolUser, inject, type Identity } from '../../testing/inject.js';
import { SETU_MAIN, freePort, waitFor } from '../../testing/processes.js';

describe('coordinator log: request ids, no secrets', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity;
  const lines: string[] = [];
  const secrets = new Map<string, string>();
  const keep = (what: string, s: string) => {
    secrets.set(s, what);
    return s;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-log-'));
    const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void lines.push(s) } });
    c = await startCoordinator({ dataDir: dir, port: 0, logger });
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
  });

  after(async () => {
    await c?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  /** A signed request whose signature headers are remembered as secrets. */
  const signed = (as: Identity, method: string, path: string, json?: unknown) => {
    const body = json === undefined ? undefined : JSON.stringify(json);
    const h = signRequest({ method, path, body, keyId: as.keyId, privateKey: as.privateKey });
    keep('x-setu-signature', h['x-setu-signature']);
    return inject(c.app, method, path, { headers: { ...h, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { raw: body, type: 'application/json' } : {}) });
  };

  it('drives requests that carry secrets everywhere', async () => {
    const pemBody = (pem: string) => pem.replace(/-----[^-]+-----|\s/g, '');
    keep('admin key', pemBody(admin.privateKey).slice(0, 48));
    const lead = await enrolUser(c.app, admin, 'lead-log', 'study_lead');
    keep('user invite token', lead.inviteToken);
    keep('user key', pemBody(lead.privateKey).slice(0, 48));

    // Invite tokens in enrolment bodies: accepted, unknown, and inside JSON that does not parse.
    const inv = await signed(admin, 'POST', '/v1/invites', { siteName: 'site-log' });
    assert.equal(inv.status, 200);
    const siteToken = keep('site invite token', inv.json.token);
    const unknown = keep('unknown invite token', `inv_${'Q'.repeat(20)}x${Date.now()}`);
    assert.equal((await inject(c.app, 'POST', '/v1/enrol', { json: { token: unknown, publicKey: generateSigningKeys().publicKeyRaw } })).status, 401);
    const broken = await inject(c.app, 'POST', '/v1/enrol', { raw: `{"token":"${siteToken}","publicKey":`, type: 'application/json' });
    assert.equal(broken.status, 400);
    assert.equal((await inject(c.app, 'POST', '/v1/enrol', { json: { token: siteToken, publicKey: generateSigningKeys().publicKeyRaw } })).status, 200);

    // A private key PEM where none belongs: as an extra field, and cut off inside JSON that does not parse.
    const stray = generateSigningKeys().privateKeyPem;
    keep('stray PEM', pemBody(stray).slice(0, 48));
    assert.equal((await signed(lead, 'POST', '/v1/keys/rotate', { publicKey: generateSigningKeys().publicKeyRaw, privateKey: stray })).status, 400);
    assert.equal((await inject(c.app, 'POST', '/v1/users/enrol', { raw: `{"privateKey":${JSON.stringify(stray).slice(0, 80)}`, type: 'application/json' })).status, 400);

    // Stream tokens in query strings and paths.
    const tok = await signed(lead, 'POST', '/v1/events/token', {});
    assert.equal(tok.status, 200);
    const streamToken = keep('stream token', tok.json.token);
    assert.equal((await inject(c.app, 'GET', `/v1/events?token=${encodeURIComponent(streamToken)}&study=no-such-study`)).status, 404);
    assert.equal((await inject(c.app, 'GET', `/v1/events?token=${encodeURIComponent(streamToken.slice(0, -3))}abc`)).status, 401);
    assert.equal((await inject(c.app, 'GET', `/v1/nothing/${streamToken}`)).status, 404);
    assert.equal((await signed(admin, 'GET', '/v1/sites')).status, 200);
  });

  it('answers a 5xx with the request id that finds its log line', async () => {
    await c.store.close();
    const r = await signed(admin, 'GET', '/v1/sites');
    assert.equal(r.status, 500, r.body);
    assert.equal(r.json.error, 'internal');
    assert.match(r.json.requestId, /^[0-9a-f-]{36}$/);
    assert.equal(r.headers['x-request-id'], r.json.requestId);
    assert.match(r.json.message, new RegExp(r.json.requestId));
    const logged = lines.map((l) => JSON.parse(l) as Record<string, any>).filter((l) => l['reqId'] === r.json.requestId);
    const err = logged.find((l) => l['level'] === 50);
    assert.ok(err, `an error line with reqId ${r.json.requestId}`);
    assert.ok(err['err']?.stack, 'with the error and its stack');
    assert.ok(logged.some((l) => l['msg'] === 'request' && l['status'] === 500), 'and the request line');
  });

  it('wrote structured lines, each request line with its id and route, and no secret anywhere', () => {
    assert.ok(lines.length > 20, `${lines.length} lines`);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, any>);
    const requests = parsed.filter((l) => l['msg'] === 'request');
    assert.ok(requests.length >= 12);
    for (const l of requests) {
      assert.equal(typeof l['reqId'], 'string', JSON.stringify(l));
      assert.equal(typeof l['route'], 'string');
      assert.equal(typeof l['status'], 'number');
    }
    assert.ok(secrets.size >= 10, `${secrets.size} secrets sent`);
    for (const [secret, what] of secrets) {
      const hit = lines.find((l) => l.includes(secret));
      assert.equal(hit, undefined, `the ${what} appears in the log: ${hit}`);
    }
    // The URLs were logged, their secret parts redacted: the test looked where the secrets would be.
    assert.ok(requests.some((l) => l['req']?.url === '/v1/events?token=[redacted]&study=no-such-study'), 'the stream URL is logged, its token redacted');
    assert.ok(requests.some((l) => l['req']?.url === '/v1/nothing/sst_[redacted]'));
    assert.ok(parsed.some((l) => l['status'] === 400 && /not valid JSON/.test(l['msg'])), 'the malformed bodies were logged as 4xx');
  });
});

describe('log level: --log-level and SETU_LOG_LEVEL (real processes)', () => {
  const run = (args: string[], env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, [SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    return { child, out: () => out, err: () => err, exited };
  };

  it('refuses an unknown level, naming the allowed ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-loglevel-'));
    try {
      const p = run(['coordinator', 'start', '--data-dir', dir, '--port', '0', '--log-level', 'loud']);
      assert.equal(await p.exited, 2);
      assert.match(p.err(), /--log-level must be one of fatal, error, warn, info, debug, trace, silent; got "loud"/);
      const q = run(['coordinator', 'start', '--data-dir', dir, '--port', '0'], { SETU_LOG_LEVEL: 'chatty' });
      assert.equal(await q.exited, 2);
      assert.match(q.err(), /SETU_LOG_LEVEL must be one of/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const [how, args, env] of [
    ['--log-level debug', ['--log-level', 'debug'], {}],
    ['SETU_LOG_LEVEL=debug', [], { SETU_LOG_LEVEL: 'debug' }],
  ] as const) {
    it(`${how} logs the probes, which info does not`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'setu-loglevel-'));
      const port = await freePort();
      const p = run(['coordinator', 'start', '--data-dir', dir, '--port', String(port), ...args], env);
      const q = run(['coordinator', 'start', '--data-dir', `${dir}-info`, '--port', String(await freePort())]);
      try {
        for (const out of [p.out, q.out]) {
          const url = await waitFor('listening', async () => /"url":"([^"]+)"/.exec(out())?.[1], 20_000, 50);
          assert.equal((await fetch(`${url}/healthz`)).status, 200);
          assert.equal((await fetch(`${url}/v1/sites`)).status, 401);
          // Lines are written in order: once the (info) line of the second request is out, the probe's would be too.
          await waitFor('the request line', async () => (out().includes('"route":"/v1/sites"') ? true : undefined), 10_000, 20);
        }
        const probe = (out: string) => out.split('\n').filter((l) => l.includes('"route":"/healthz"'));
        assert.equal(probe(p.out()).length, 1, 'debug shows the probe');
        assert.equal(JSON.parse(probe(p.out())[0]!).level, 20);
        assert.equal(probe(q.out()).length, 0, 'info does not');
      } finally {
        p.child.kill('SIGTERM');
        q.child.kill('SIGTERM');
        await Promise.all([p.exited, q.exited]);
        rmSync(dir, { recursive: true, force: true });
        rmSync(`${dir}-info`, { recursive: true, force: true });
      }
    });
  }
});
