/**
 * The client's retries: 429 and 5xx are retried, never sooner than the Retry-After the coordinator sent (seconds
 * or an HTTP date, capped), with jitter; other 4xx answers are final.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError, HttpClient, MAX_RETRY_AFTER_MS, retryAfterOf, retryDelayMs } from './http.js';

describe('Retry-After', () => {
  it('reads seconds and HTTP dates, caps them, and ignores what it cannot read', () => {
    const h = (v?: string) => new Headers(v === undefined ? {} : { 'retry-after': v });
    assert.equal(retryAfterOf(h('5')), 5000);
    assert.equal(retryAfterOf(h('0')), 0);
    assert.equal(retryAfterOf(h('86400')), MAX_RETRY_AFTER_MS);
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(retryAfterOf(h('Thu, 01 Jan 2026 00:00:07 GMT'), now), 7000);
    assert.equal(retryAfterOf(h('Wed, 31 Dec 2025 23:00:00 GMT'), now), 0, 'a date in the past: now');
    assert.equal(retryAfterOf(h('soon')), undefined);
    assert.equal(retryAfterOf(h()), undefined);
  });

  it('waits at least the Retry-After, jittered upwards, and backs off exponentially without one', () => {
    assert.equal(retryDelayMs(0, 15_000, undefined, () => 1), 250);
    assert.equal(retryDelayMs(3, 15_000, undefined, () => 1), 2000);
    assert.equal(retryDelayMs(20, 15_000, undefined, () => 1), 15_000);
    assert.equal(retryDelayMs(0, 15_000, undefined, () => 0), 125);
    assert.equal(retryDelayMs(0, 15_000, 5000, () => 0), 5000);
    assert.equal(retryDelayMs(0, 15_000, 5000, () => 1), 7500);
    assert.equal(retryDelayMs(10, 15_000, 1000, () => 1), 15_000, 'the backoff wins when it is longer');
  });
});

describe('retries over HTTP', () => {
  /** A server answering each request with the next of `answers` (the last one repeats). */
  async function serve(answers: { status: number; headers?: Record<string, string>; body: unknown }[]) {
    const seen: number[] = [];
    const server = http.createServer((req, res) => {
      seen.push(Date.now());
      const a = answers[Math.min(seen.length - 1, answers.length - 1)]!;
      res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) });
      res.end(JSON.stringify(a.body));
      req.resume();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
  }

  it('retries a 429 after its Retry-After and says why in one line', async () => {
    const s = await serve([
      { status: 429, headers: { 'retry-after': '1' }, body: { error: 'limit_longpolls_per_site', message: 'site s already has 2 long-polls open (retry after 1 s)' } },
      { status: 200, body: { ok: true } },
    ]);
    const lines: string[] = [];
    try {
      const client = new HttpClient({ baseUrl: s.url, onRetry: (n, d, why) => lines.push(`retry ${n} in ${Math.round(d)} ms: ${why}`) });
      assert.deepEqual(await client.json('GET', '/x'), { ok: true });
      assert.equal(s.seen.length, 2);
      assert.ok(s.seen[1]! - s.seen[0]! >= 1000, `waited ${s.seen[1]! - s.seen[0]!} ms`);
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^retry 1 in \d+ ms: HTTP 429: site s already has 2 long-polls open/);
    } finally {
      await s.close();
    }
  });

  it('retries a 503 after its Retry-After, and gives up on a plain 4xx at once', async () => {
    const s = await serve([
      { status: 503, headers: { 'retry-after': '1' }, body: { error: 'limit_uploads', message: 'the coordinator is receiving 64 uploads' } },
      { status: 409, body: { error: 'conflict', message: 'task t is accepted' } },
    ]);
    try {
      const client = new HttpClient({ baseUrl: s.url });
      await assert.rejects(client.json('POST', '/x', {}), (e: unknown) => e instanceof ApiError && e.status === 409 && e.code === 'conflict');
      assert.equal(s.seen.length, 2, 'one retry, then the final answer');
      assert.ok(s.seen[1]! - s.seen[0]! >= 1000);
    } finally {
      await s.close();
    }
  });
});
