/** docs/data-sources.md: every site.yaml it shows is a valid site config, and every mapping it names loads. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSiteConfig } from '../site/config.js';
import { loadMapping } from './mapping.js';
import { fhirBlock } from './fhir/facts.js';
import { omopQueries } from './omop/sql.js';

const DOC = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), 'docs', 'data-sources.md');

test('docs/data-sources.md: its site configs parse and the mappings they name load and compile', () => {
  const blocks = [...readFileSync(DOC, 'utf8').matchAll(/```yaml site\.yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 5, `found ${blocks.length} site.yaml blocks`);
  const formats = new Set<string>();
  for (const b of blocks) {
    const cfg = parseSiteConfig(b, '/etc/setu/site.yaml');
    for (const ds of Object.values(cfg.datasets)) {
      formats.add(ds.format);
      if ('mapping' in ds) {
        const m = loadMapping(ds.mapping, cfg.configDir);
        if (m.source === 'fhir') fhirBlock(m);
        else omopQueries(m);
      }
    }
  }
  assert.deepEqual([...formats].sort(), ['csv', 'fhir', 'omop']);
});
