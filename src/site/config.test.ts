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

test('placed compute: GPU needs in site.yaml, and GPU settings without GPUs refused naming both fields', () => {
  const head = 'coordinator: http://x\ndatasets: { heart: { format: fed-heart-disease, center: 0 } }\n';
  const c = parseSiteConfig(`${head}compute: { mode: placed, cpus: 4, gpus: 2, gpuType: a100, minGpuMemoryGiB: 40 }\n`, 'site.yaml');
  assert.deepEqual(c.compute, { mode: 'placed', cpus: 4, gpus: 2, gpuType: 'a100', minGpuMemoryGiB: 40 });
  assert.throws(() => parseSiteConfig(`${head}compute: { mode: placed, gpuType: a100 }\n`, 'site.yaml'),
    /site\.yaml: \/compute\/gpuType: applies to GPUs, but \/compute\/gpus is not set \(0\); set \/compute\/gpus to 1 or more, or remove gpuType/);
  assert.throws(() => parseSiteConfig(`${head}compute: { mode: placed, gpus: 0, minGpuMemoryGiB: 8 }\n`, 'site.yaml'), /\/compute\/minGpuMemoryGiB: applies to GPUs, but \/compute\/gpus is 0/);
  assert.throws(() => parseSiteConfig(`${head}compute: { mode: placed, gpus: 1, gpuType: 'a 100' }\n`, 'site.yaml'), /\/compute\/gpuType/);
});
