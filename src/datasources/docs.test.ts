/** docs/data-sources.md: every site.yaml it shows is a valid site config, every mapping it names loads, and its SS-MIX2 worked example holds. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSiteConfig } from '../site/config.js';
import { loadMapping } from './mapping.js';
import { fhirBlock } from './fhir/facts.js';
import { omopQueries } from './omop/sql.js';
import { Ss2Facts, ssmix2Block } from './ssmix2/facts.js';
import { encodeIso2022jp } from './ssmix2/charset.js';
import { fileName } from './ssmix2/storage.js';
import { Issues } from './facts.js';
import { convertUnit } from './units.js';

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
        else if (m.source === 'omop') omopQueries(m);
        else ssmix2Block(m);
      }
    }
  }
  assert.deepEqual([...formats].sort(), ['csv', 'fhir', 'omop', 'ss-mix2']);
});

test('docs/data-sources.md: the SS-MIX2 worked example yields the facts and the cell the page says', () => {
  const doc = readFileSync(DOC, 'utf8');
  const path = /stored at\n`([^`]+)`/.exec(doc)![1]!;
  const hl7 = /```hl7 OML-11\n([\s\S]*?)```/.exec(doc)![1]!.trim().split('\n').join('\r') + '\r';
  const want = Object.fromEntries(/```text facts\n([^\n]+)\n```/.exec(doc)![1]!.split(' ').map((kv) => kv.split('=') as [string, string]));
  const parts = path.split('/');
  const name = fileName(parts.at(-1)!);
  assert.ok(!('error' in name), JSON.stringify(name));
  assert.deepEqual([parts[0], parts[1], parts[2], parts[3], parts[4]], [name.patient.slice(0, 3), name.patient.slice(3, 6), name.patient, name.day, name.dataType]);
  const m = loadMapping('setu:heart-ssmix2', '/');
  const issues = new Issues();
  const out = new Ss2Facts(ssmix2Block(m), issues, m.file);
  out.addFile({ path, patient: name.patient, date: '2024-04-12', dataType: name.dataType }, encodeIso2022jp(hl7), 'iso-2022-jp');
  assert.deepEqual(issues.list, []);
  assert.equal(out.facts.length, 1, 'one fact: the HDL result is not final');
  const f = out.facts[0]!;
  assert.deepEqual({ kind: f.kind, system: f.system, code: f.code, value: f.value, unit: f.unit, date: f.date }, { kind: want['kind'], system: want['system'], code: want['code'], value: want['value'], unit: want['unit'], date: want['date'] });
  const col = m.columns['chol']!;
  assert.ok(!('ageAt' in col) && col.unit);
  const code = col.codes!.find((c) => c.code === f.code)!;
  const r = convertUnit(f.value!, f.unit!, col.unit, code.molecularWeight);
  assert.ok('value' in r && Math.abs(Number(r.value) - Number(want['chol'])) < 1e-9, JSON.stringify(r));
});
