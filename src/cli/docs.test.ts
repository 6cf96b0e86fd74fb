/**
 * Docs that match the code: every configuration example in docs/, examples/ and the README (YAML blocks in Markdown,
 * and YAML files) is loaded by the code that reads it in production (the agent's site config, the study checks the
 * CLI and the coordinator make, the compute registry, the policy loader) and must be accepted. A block that is none of
 * these is an error too, so a new kind of example gets a loader here. The tabular-data guide's worked example is
 * checked to encode as it says.
 */
import { Ss2ViewSchema } from '../datasources/ssmix2/facts.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { StudySpecSchema, checkValue, type StudySpec } from '../protocol/api.js';
import { encodedFeatureNames } from '../protocol/data-schema.js';
import { parseSiteConfig } from '../site/config.js';
import { parseResource } from '../compute/validate.js';
import { checkStudy, defaultPolicyDir, loadPolicies, parsePolicy, parseSiteLocalPolicy } from '../governance/policy.js';
import { privacyProblems } from '../coordinator/privacy.js';
import { createProblems } from '../coordinator/study-checks.js';
import { asyncSpecProblems } from '../coordinator/async-rounds.js';
import { parseCsv } from '../site/data/csv.js';
import { checkSchema, parseDataSchema } from '../site/data/schema.js';
import { loadTabular } from '../site/data/tabular.js';
import { readFederation } from './bench/csv-federation.js';
import { parseAnalyticsSpec } from '../analytics/spec.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function filesUnder(dir: string, match: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p, match));
    else if (match(p)) out.push(p);
  }
  return out;
}

interface Example { where: string; text: string; file?: string }

function examples(): Example[] {
  const md = [join(ROOT, 'README.md'), ...filesUnder(join(ROOT, 'docs'), (f) => f.endsWith('.md')), ...filesUnder(join(ROOT, 'examples'), (f) => f.endsWith('.md'))];
  const out: Example[] = [];
  for (const f of md) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/```ya?ml[^\n]*\n([\s\S]*?)```/g)) out.push({ where: `${relative(ROOT, f)}:${text.slice(0, m.index).split('\n').length}`, text: m[1]! });
  }
  for (const f of filesUnder(join(ROOT, 'examples'), (x) => /\.ya?ml$/.test(x))) out.push({ where: relative(ROOT, f), text: readFileSync(f, 'utf8'), file: f });
  return out;
}

const SITE_KEYS = ['coordinator', 'stateDir', 'datasets', 'trainer', 'pollWaitMs', 'caFile', 'policy', 'privacy', 'analytics', 'jurisdiction', 'compute', 'testing'];
const BASE_SITE = { coordinator: 'https://setu.example.org:7070', datasets: { heart: { format: 'fed-heart-disease', center: 0 } } };

/** Loads one example with the code that reads its kind; returns the kind, or throws what that code would say. */
function load(doc: unknown, where: string, file?: string): string {
  // An excerpt of an SS-MIX2 mapping: a list of views over HL7 segments.
  if (Array.isArray(doc) && doc.length && doc.every((v) => v && typeof v === 'object' && 'segment' in v && 'facts' in v)) {
    for (const v of doc) {
      const problems = checkValue(Ss2ViewSchema, v);
      if (problems.length) throw new Error(problems.join('; '));
    }
    return 'SS-MIX2 mapping views';
  }
  if (Array.isArray(doc) || (doc && typeof doc === 'object' && 'resources' in doc) || (doc && typeof doc === 'object' && 'scheduler' in doc)) {
    const list = Array.isArray(doc) ? doc : 'resources' in (doc as object) ? (doc as { resources: unknown[] }).resources : [doc];
    list.forEach((r) => parseResource(r));
    return 'compute resources';
  }
  const o = doc as Record<string, unknown>;
  // A bench federation names its study and sites' files relative to itself: read from its own file.
  if ('study' in o && 'sites' in o && file) return (readFederation(file), 'bench federation');
  if ('analytics' in o && 'dataSchema' in o && !('model' in o)) {
    parseDataSchema(o.dataSchema);
    parseAnalyticsSpec(o.analytics);
    return 'analytics study';
  }
  if ('model' in o && 'strategy' in o) {
    const problems = checkValue(StudySpecSchema, o);
    if (problems.length) throw new Error(problems.join('; '));
    const spec = o as unknown as StudySpec;
    // Everything but the sites themselves, which are checked against their declarations when the study is created:
    // here each site it names holds its dataset and trains on its own machine.
    const sites = (spec.sites ?? []).map((name) => ({ name, status: 'active', datasets: { [spec.dataset]: 100 }, compute: 'own' as const }));
    const more = [...createProblems(spec, sites), ...privacyProblems(spec), ...asyncSpecProblems(spec)];
    if (more.length) throw new Error(more.join('; '));
    if (spec.dataSchema) parseDataSchema(spec.dataSchema);
    return 'study';
  }
  if ('principles' in o && 'rules' in o) return (parsePolicy(YAML.stringify(o), where), 'jurisdiction policy');
  if ('site' in o && 'rules' in o) return (parseSiteLocalPolicy(YAML.stringify(o), where), 'site-local policy');
  if (Object.keys(o).length && Object.keys(o).every((k) => SITE_KEYS.includes(k))) {
    // A fragment (e.g. only `compute:`) is checked inside an otherwise minimal site.yaml.
    parseSiteConfig(YAML.stringify({ ...BASE_SITE, ...o }), where);
    return 'site config';
  }
  throw new Error(`not a configuration any loader reads (keys: ${Object.keys(o).join(', ')})`);
}

test('every configuration example in docs/, examples/ and the README is accepted by the code that reads it', () => {
  const all = examples();
  assert.ok(all.length >= 15, `found ${all.length} examples`);
  const kinds = new Map<string, number>();
  const refused: string[] = [];
  for (const ex of all) {
    try {
      const kind = load(YAML.parse(ex.text), ex.where, ex.file);
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    } catch (e) {
      refused.push(`${ex.where}: ${(e as Error).message}`);
    }
  }
  assert.deepEqual(refused, [], `refused examples:\n${refused.join('\n')}`);
  for (const k of ['site config', 'study', 'compute resources', 'site-local policy']) assert.ok(kinds.get(k), `an example of a ${k} is checked (${JSON.stringify([...kinds])})`);
});

test('the loaders do refuse a broken example (the check above can fail)', () => {
  assert.throws(() => load({ ...BASE_SITE, trainer: { kind: 'external', command: ['x'], timeoutMs: 5 } }, 'x'), /\/trainer\/timeoutMs: unknown field/);
  assert.throws(() => load({ name: 's', dataset: 'heart', model: { kind: 'logistic', inputDim: 3 }, strategy: { name: 'FedAvg' }, rounds: 1, fit: { batchSize: 1, optimizer: { kind: 'sgd', lr: 1 } } }, 'x'), /give localSteps/);
  assert.throws(() => load({ id: 'X', name: 'n', institution: 'i', jurisdiction: 'IN', scheduler: 'slurm', capacity: { cpus: 1, gpus: [], ramGiB: 1 } }, 'x'), /\/id/);
  assert.throws(() => load({ colour: 'blue' }, 'x'), /not a configuration/);
});

test("the tabular-data guide's worked example encodes as it says", () => {
  const page = readFileSync(join(ROOT, 'docs', 'tabular-data.md'), 'utf8');
  const csv = /```csv\n([\s\S]*?)```/.exec(page)![1]!;
  const study = YAML.parse(/```yaml\n(name: chest-pain-risk[\s\S]*?)```/.exec(page)![1]!) as StudySpec;
  const schema = parseDataSchema(study.dataSchema);
  const table = parseCsv(csv, 'cohort.csv');
  assert.deepEqual(checkSchema(table, schema), []);
  const claimed = /The schema encodes (\d+) columns: `([^`]+)`/.exec(page)!;
  assert.deepEqual(encodedFeatureNames(schema), claimed[2]!.split(', '));
  assert.equal((study.model as { inputDim: number }).inputDim, Number(claimed[1]));
  const data = loadTabular(table, schema);
  assert.deepEqual(data.droppedLines, [4], 'the row without bp (line 4) is dropped');
  assert.equal(data.train.n + data.test.n, 3);
  // The quoted "52" is the number 52: find its row among the encoded ones.
  const rows = [...Array(data.train.n + data.test.n).keys()].map((i) => (i < data.train.n ? data.train.x.slice(i * 6, i * 6 + 6) : data.test.x.slice((i - data.train.n) * 6, (i - data.train.n) * 6 + 6)));
  assert.ok(rows.some((r) => r[0] === 52 && r[2] === 1 && r[5] === 1), 'age 52, smoker yes, cp 3');
});

test("governance.md's table of the India–Japan studies the shipped policies allow is what the policy check says", () => {
  const policies = loadPolicies(defaultPolicyDir());
  const page = readFileSync(join(ROOT, 'docs', 'governance.md'), 'utf8');
  const rows = [...page.matchAll(/^\| (SecAgg\+ \(three or more sites\)|DP only[^|]*|neither) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$/gm)];
  assert.equal(rows.length, 3, 'the table has its three rows');
  const plans = { SecAgg: { secagg: true, dp: null }, DP: { secagg: false, dp: { epsilon: 3, delta: 1e-5 } }, neither: { secagg: false, dp: null } };
  const sites = [{ id: 'in-a', jurisdiction: 'IN', examplesPerUpdate: 199, computeJurisdiction: 'IN' }, { id: 'jp-a', jurisdiction: 'JP', examplesPerUpdate: 85, computeJurisdiction: 'JP' }];
  for (const r of rows) {
    const plan = r[1]!.startsWith('SecAgg') ? plans.SecAgg : r[1]!.startsWith('DP') ? plans.DP : plans.neither;
    ['JP', 'IN', 'an undeclared jurisdiction'].forEach((where, i) => {
      const broken = [...new Set(checkStudy({ id: 's', coordinatorJurisdiction: where, ...plan }, sites, policies).map((v) => v.jurisdiction))].sort();
      const said = r[i + 2]!.trim();
      const expected = said === 'allowed' ? [] : said.includes('both') ? ['IN', 'JP'] : [said.includes("IN's") ? 'IN' : 'JP'];
      assert.deepEqual(broken, expected, `${r[1]} with the coordinator ${where}: the page says "${said}"`);
    });
  }
});

/** The `setu …` and `npm run bench -- …` lines of a page's plain code blocks (the commands a reader types). */
function commandsOf(page: string): string[][] {
  const out: string[][] = [];
  // Fences open and close in turn; only blocks opened with a bare ``` (no language) hold commands.
  let fence: string | undefined;
  for (const line of page.split('\n')) {
    if (line.startsWith('```')) {
      fence = fence === undefined ? line.slice(3).trim() : undefined;
      continue;
    }
    if (fence !== '') continue;
    const words = line.trim().split(/\s+/);
    if (words[0] === 'setu') out.push(words.slice(1));
    else if (words.slice(0, 4).join(' ') === 'npm run bench --') out.push(['bench', ...words.slice(4)]);
  }
  return out;
}

test("large-models.md's commands are real: each names a command whose --help lists every flag it uses", () => {
  const page = readFileSync(join(ROOT, 'docs', 'large-models.md'), 'utf8');
  const commands = commandsOf(page);
  assert.ok(commands.length >= 4, `found ${commands.length} commands`);
  for (const words of commands) {
    const path = words.slice(0, words.findIndex((w) => w.startsWith('--')));
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), ...path, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `setu ${path.join(' ')} --help: ${r.stderr}`);
    for (const flag of words.filter((w) => w.startsWith('--'))) assert.match(r.stdout, new RegExp(`\\s${flag}\\b`), `setu ${path.join(' ')} has no ${flag} (docs/large-models.md)`);
  }
  // The bench's flags, run for real at a size the suite can afford: src/cli/bench/big-train.test.ts.
});
