/**
 * The message catalogues: Japanese and Hindi cover every English key (English is the fallback, so a missing key
 * would silently show English), placeholders match, and every key the
 * dashboard's code passes to t() exists.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/web/i18n.test.js → src/web (the catalogues are bundled by Vite, not copied to dist).
const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'web');
const load = (lang: string) => JSON.parse(readFileSync(join(WEB, 'i18n', `${lang}.json`), 'utf8')) as Record<string, string>;
const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test('catalogues: ja and hi have exactly the English keys, with the same placeholders', () => {
  const en = load('en');
  for (const lang of ['ja', 'hi']) {
    const other = load(lang);
    assert.deepEqual(Object.keys(other).sort(), Object.keys(en).sort(), `${lang}.json has every English key and no other`);
    for (const [k, v] of Object.entries(other)) {
      assert.ok(k in en, `${lang}.json has ${k}, which en.json lacks`);
      assert.deepEqual(placeholders(v), placeholders(en[k]!), `${lang}.json ${k}: placeholders differ from English`);
      assert.ok(v.trim().length > 0, `${lang}.json ${k} is empty`);
    }
  }
});

test('catalogues: every literal key the dashboard uses exists in English', () => {
  const en = load('en');
  const dir = join(WEB, 'app');
  const used = new Set<string>();
  for (const f of readdirSync(dir).filter((f) => /\.tsx?$/.test(f))) {
    const src = readFileSync(join(dir, f), 'utf8');
    for (const m of src.matchAll(/\bt\('([a-zA-Z0-9_.]+)'/g)) used.add(m[1]!);
    for (const m of src.matchAll(/\b(?:key|title|what|intro)[:=] ?['"]([a-z]+\.[a-zA-Z0-9_.]+)['"]/g)) used.add(m[1]!);
  }
  assert.ok(used.size > 50, `found only ${used.size} keys in the dashboard's code`);
  const missing = [...used].filter((k) => !(k in en));
  assert.deepEqual(missing, [], 'keys used in src/web/app but missing from en.json');
});
