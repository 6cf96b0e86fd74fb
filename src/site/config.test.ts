import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSiteConfig, ConfigError, loadSiteConfig } from './config.js';

test('a valid site config resolves its state directory beside the file', () => {
  const c = parseSiteConfig('coordinator: http://127.0.0.1:7070\ndatasets:\n  heart: { format: fed-heart-disease, center: 2 }\n', '/etc/setu/site.yaml');
  assert.equal(c.stateDirAbs, '/etc/setu/state');
  assert.equal(c.datasets['heart']!.format, 'fed-heart-disease');
});

test('a malformed site config is refused with the file and the field named', () => {
  const cases: [string, RegExp][] = [
    ['coordinator: ftp://x\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }', /site\.yaml: \/coordinator/],
    ['coordinator: http://x\ndatasets: { heart: { format: fed-heart-disease, center: 9 } }', /\/datasets\/heart/],
    ['coordinator: http://x\ndatasets: {}', /\/datasets/],
    ['coordinator: http://x\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\npollWaitMs: fast', /\/pollWaitMs/],
    ['coordinator: http://x\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\ncolour: blue', /colour|\//],
    ['coordinator: [unclosed', /not valid YAML/],
    ['coordinator: http://x\ndatasets: { heart: { format: fhir, source: { kind: ftp, dir: x }, mapping: m.yaml } }', /\/datasets\/heart/],
    ['coordinator: http://x\ndatasets: { heart: { format: omop, database: { sqlite: a.db }, mapping: m.yaml, licences: [icd-11] } }', /\/datasets\/heart/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseSiteConfig(text, 'site.yaml'), (e: unknown) => e instanceof ConfigError && re.test((e as Error).message) && (e as Error).message.startsWith('site.yaml'), text);
  }
});

test('a missing config file is a clear error', () => {
  assert.throws(() => loadSiteConfig('/nonexistent/site.yaml'), /cannot read site config \/nonexistent\/site\.yaml: ENOENT/);
});
