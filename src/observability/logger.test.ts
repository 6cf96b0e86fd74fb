/**
 * The logger factory on its own: levels, and each redaction layer (named fields, URLs, free text) on the
 * shapes secrets take in Setu. The coordinator's own log test (coordinator/plugins/logging.test.ts) drives
 * real requests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateSigningKeys } from '../protocol/signing.js';
import { createLogger, parseLogLevel, scrubText, scrubUrl } from './logger.js';

function capture(level: 'trace' | 'info' | 'warn' = 'trace') {
  const lines: string[] = [];
  const log = createLogger({ level, destination: { write: (s: string) => void lines.push(s) } });
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, any>) };
}

test('levels: the option, then SETU_LOG_LEVEL, then info; a bad one names the allowed values', () => {
  assert.equal(parseLogLevel(' DEBUG ', 'x'), 'debug');
  assert.throws(() => parseLogLevel('verbose', '--log-level'), /--log-level must be one of fatal, error, warn, info, debug, trace, silent; got "verbose"/);
  const saved = process.env['SETU_LOG_LEVEL'];
  try {
    process.env['SETU_LOG_LEVEL'] = 'warn';
    assert.equal(createLogger({ destination: { write: () => {} } }).level, 'warn');
    assert.equal(createLogger({ level: 'debug', destination: { write: () => {} } }).level, 'debug');
    delete process.env['SETU_LOG_LEVEL'];
    assert.equal(createLogger({ destination: { write: () => {} } }).level, 'info');
    process.env['SETU_LOG_LEVEL'] = 'nope';
    assert.throws(() => createLogger({ destination: { write: () => {} } }), /SETU_LOG_LEVEL must be one of/);
  } finally {
    if (saved === undefined) delete process.env['SETU_LOG_LEVEL'];
    else process.env['SETU_LOG_LEVEL'] = saved;
  }
  const c = capture('warn');
  c.log.info('quiet');
  c.log.warn('loud');
  assert.deepEqual(c.parsed().map((l) => l['msg']), ['loud']);
});

test('named secret fields are redacted at any of the first three levels, headers included', () => {
  const c = capture();
  const pem = generateSigningKeys().privateKeyPem;
  c.log.info({ token: 'inv_abc', body: { token: 'uinv_def', privateKey: pem }, a: { b: { secret: 's3' } }, headers: { 'x-setu-signature': 'SIG', authorization: 'Bearer x', 'x-setu-key-id': 'user-1' } }, 'fields');
  const [l] = c.parsed();
  assert.equal(l!['token'], '[redacted]');
  assert.equal(l!['body'].token, '[redacted]');
  assert.equal(l!['body'].privateKey, '[redacted]');
  assert.equal(l!['a'].b.secret, '[redacted]');
  assert.equal(l!['headers']['x-setu-signature'], '[redacted]');
  assert.equal(l!['headers'].authorization, '[redacted]');
  assert.equal(l!['headers']['x-setu-key-id'], 'user-1', 'a key id is not a secret');
});

test('URLs lose the values of secret query parameters, and tokens in their paths', () => {
  assert.equal(scrubUrl('/v1/events?token=sst_abc.def&study=s1'), '/v1/events?token=[redacted]&study=s1');
  assert.equal(scrubUrl('/v1/events?study=s1&Token=x&%74oken=y'), '/v1/events?study=s1&Token=[redacted]&%74oken=[redacted]');
  assert.equal(scrubUrl('/v1/x/inv_abcdef/y'), '/v1/x/inv_[redacted]/y');
  assert.equal(scrubUrl('/v1/studies/s-1?entries=1'), '/v1/studies/s-1?entries=1');
});

test('free text loses tokens, PEM private keys (whole, cut or JSON-escaped) and long mixed-case base64url runs, keeps digests and ids', () => {
  const pem = generateSigningKeys().privateKeyPem;
  const body = pem.replace(/-----[^-]+-----|\s/g, '');
  for (const text of [`key: ${pem}`, `Unexpected end of JSON input in {"privateKey":${JSON.stringify(pem).slice(0, 70)}`, JSON.stringify({ k: pem })]) {
    const out = scrubText(text);
    assert.ok(!out.includes(body.slice(0, 24)), out);
    assert.match(out, /PRIVATE KEY----- \[redacted\]/);
  }
  assert.equal(scrubText('unknown invite inv_AbC-123_x, stream sst_e30.x_y'), 'unknown invite inv_[redacted], stream sst_[redacted]');
  const sig = 'Ab'.repeat(43);
  assert.equal(scrubText(`signature ${sig}`), 'signature [redacted]');
  const digest = 'ab12'.repeat(16);
  assert.equal(scrubText(`digest ${digest} of site-0a1b2c`), `digest ${digest} of site-0a1b2c`);
  // The message argument and error messages and stacks are scrubbed when logged.
  const c = capture();
  c.log.info(`enrol with inv_secret123 failed`);
  c.log.error({ err: new Error(`bad token sst_abc.def`) }, 'failed');
  const [m, e] = c.parsed();
  assert.equal(m!['msg'], 'enrol with inv_[redacted] failed');
  assert.equal(e!['err'].message, 'bad token sst_[redacted]');
  assert.ok(!String(e!['err'].stack).includes('sst_abc'));
});
