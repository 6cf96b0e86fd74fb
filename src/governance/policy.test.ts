import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadPolicies, loadPolicyFile, parsePolicy, parseSiteLocalPolicy, mergeSiteLocal, checkStudy, checkRelease,
  defaultPolicyDir, PolicyError, type ParticipatingSite, type StudyPlan,
} from './policy.js';

const policies = loadPolicies(defaultPolicyDir());
const IN_TEXT = readFileSync(join(defaultPolicyDir(), 'IN.yaml'), 'utf8');

/** Two Indian and two Japanese sites, training at home, with plenty of examples. */
function sites(): ParticipatingSite[] {
  return [
    { id: 'in-1', jurisdiction: 'IN', examplesPerUpdate: 199, computeJurisdiction: 'IN' },
    { id: 'in-2', jurisdiction: 'IN', examplesPerUpdate: 172, computeJurisdiction: 'IN' },
    { id: 'jp-1', jurisdiction: 'JP', examplesPerUpdate: 30, computeJurisdiction: 'JP' },
    { id: 'jp-2', jurisdiction: 'JP', examplesPerUpdate: 85, computeJurisdiction: 'JP' },
  ];
}
const plain: StudyPlan = { id: 's1', coordinatorJurisdiction: 'JP', secagg: false, dp: null };

test('the shipped policies load, validate, and say they are configurable examples, not legal advice', () => {
  assert.deepEqual(Object.keys(policies).sort(), ['DEFAULT', 'IN', 'JP']);
  for (const p of Object.values(policies)) {
    assert.match(p.notice, /configurable example, not legal advice/i);
    assert.ok(p.principles.length > 0);
  }
  assert.ok(policies.IN!.principles.some((p) => /DPDP Act 2023/.test(p.law)));
  assert.ok(policies.JP!.principles.some((p) => /APPI/.test(p.law)));
  for (const f of ['IN.yaml', 'JP.yaml', 'DEFAULT.yaml']) {
    assert.match(readFileSync(join(defaultPolicyDir(), f), 'utf8'), /CONFIGURABLE EXAMPLE, NOT LEGAL ADVICE/);
  }
});

test('a plain study breaks update-protection wherever updates cross a border, named per site and jurisdiction', () => {
  const v = checkStudy(plain, sites(), policies);
  // Coordinator in JP: Indian updates cross the border unprotected; Japanese updates stay domestic.
  assert.deepEqual(v.map((x) => [x.jurisdiction, x.site, x.rule, x.source]), [
    ['IN', 'in-1', 'update-protection', 'jurisdiction'],
    ['IN', 'in-2', 'update-protection', 'jurisdiction'],
  ]);
  assert.match(v[0]!.message, /leave IN for a coordinator in JP and need SecAgg\+ or DP with ε ≤ 3/);
  assert.match(v[0]!.message, /the study has no SecAgg\+ and no DP/);
  // Coordinator in a third country: every site's update crosses; JP demands SecAgg+, so DP alone is not enough for it.
  const dpOnly = checkStudy({ ...plain, coordinatorJurisdiction: 'SG', dp: { epsilon: 1, delta: 1e-6 } }, sites(), policies);
  assert.deepEqual(dpOnly.map((x) => x.site), ['jp-1', 'jp-2']);
  assert.match(dpOnly[0]!.message, /need SecAgg\+; the study has no SecAgg\+ and DP with ε = 1/);
});

test('DP with ε above the cap does not count as protection', () => {
  const v = checkStudy({ ...plain, dp: { epsilon: 8, delta: 1e-6 } }, sites(), policies);
  assert.equal(v.filter((x) => x.rule === 'update-protection').length, 2);
  assert.deepEqual(checkStudy({ ...plain, dp: { epsilon: 3, delta: 1e-5 } }, sites(), policies), []);
  assert.equal(checkStudy({ ...plain, dp: { epsilon: 3, delta: 1e-4 } }, sites(), policies).length, 2);
});

test('with SecAgg+ the study passes; every other broken rule is listed', () => {
  assert.deepEqual(checkStudy({ ...plain, secagg: true }, sites(), policies), []);
  const s = sites();
  s[2]!.examplesPerUpdate = 24; // JP needs 25
  s[1]!.computeJurisdiction = 'JP'; // Indian data placed on Japanese compute
  s.push({ id: 'br-1', jurisdiction: 'BR', examplesPerUpdate: 5, computeJurisdiction: 'BR' }); // falls back to DEFAULT
  const v = checkStudy({ ...plain, secagg: true }, s, policies);
  assert.deepEqual(v.map((x) => `${x.jurisdiction}/${x.site}/${x.rule}`), ['IN/in-2/compute-location', 'JP/jp-1/min-examples', 'BR/br-1/min-examples']);
  assert.match(v[0]!.message, /data of site in-2 \(IN\) may train only on compute in IN; it is placed in JP/);
  assert.match(v[1]!.message, /24 examples .* at least 25/);
});

test('a jurisdiction with neither its own policy nor a DEFAULT is refused', () => {
  const { DEFAULT: _d, ...noDefault } = policies;
  void _d;
  const v = checkStudy({ ...plain, secagg: true }, [{ id: 'x', jurisdiction: 'BR', examplesPerUpdate: 100, computeJurisdiction: 'BR' }], noDefault);
  assert.deepEqual(v.map((x) => x.rule), ['no-policy']);
});

test('site-local wins: stricter values and explicit overrides replace the jurisdiction, and are named as site-local', () => {
  const local = parseSiteLocalPolicy([
    'site: in-1',
    'rules:',
    '  minExamplesPerUpdate: 500',
    '  updateProtection:',
    '    crossBorder: secagg-and-dp',
    '    maxEpsilon: 1',
  ].join('\n'), 'in-1.yaml');
  const merged = mergeSiteLocal(policies.IN!, local);
  assert.equal(merged.rules.minExamplesPerUpdate, 500);
  assert.equal(merged.rules.updateProtection.crossBorder, 'secagg-and-dp');
  assert.equal(merged.rules.updateProtection.maxEpsilon, 1);
  assert.equal(merged.rules.updateProtection.maxDelta, 1e-5, 'unset fields come from the jurisdiction');
  assert.deepEqual(merged.localOverrides, ['minExamplesPerUpdate', 'updateProtection.crossBorder', 'updateProtection.maxEpsilon']);
  assert.equal(policies.IN!.rules.minExamplesPerUpdate, 20, 'merging does not modify the jurisdiction policy');
  const s = sites();
  s[0]!.local = local;
  const v = checkStudy({ ...plain, secagg: true, dp: { epsilon: 2, delta: 1e-6 } }, s, policies);
  assert.deepEqual(v.map((x) => `${x.site}/${x.rule}/${x.source}`), ['in-1/min-examples/site-local', 'in-1/update-protection/site-local']);
  // An explicit local override may also relax: a site that allows its updates out unprotected.
  const relaxed = parseSiteLocalPolicy('site: in-2\nrules:\n  updateProtection: { crossBorder: none }\n');
  const s2 = sites();
  s2[1]!.local = relaxed;
  assert.deepEqual(checkStudy(plain, s2, policies).map((x) => x.site), ['in-1']);
});

test('release sign-offs: per site, per jurisdiction and per consortium', () => {
  const s = sites();
  const missing = checkRelease([], s, policies);
  assert.deepEqual(missing.map((m) => m.message), [
    'release needs a sign-off by a site_admin for site in-1',
    'release needs a sign-off by a consortium_admin for the consortium',
    'release needs a sign-off by a site_admin for site in-2',
    'release needs a sign-off by a site_admin for site jp-1',
    'release needs a sign-off by a site_admin for site jp-2',
  ]);
  const all = [
    ...s.map((x) => ({ role: 'site_admin' as const, by: `admin-${x.id}`, jurisdiction: x.jurisdiction, site: x.id })),
    { role: 'consortium_admin' as const, by: 'root', jurisdiction: 'JP' },
  ];
  assert.deepEqual(checkRelease(all, s, policies), []);
  const local = parseSiteLocalPolicy('site: jp-1\nrules:\n  releaseSignoff: [{ role: auditor, per: jurisdiction }]\n');
  s[2]!.local = local;
  const v = checkRelease(all, s, policies);
  assert.deepEqual(v.map((x) => [x.site, x.source, x.message]), [[null, 'site-local', 'release needs a sign-off by an auditor for jurisdiction JP']]);
});

test('validation errors name the file and the field', () => {
  const bad = (text: string, re: RegExp) => assert.throws(() => parsePolicy(text, 'XX.yaml'), (e: unknown) => {
    assert.ok(e instanceof PolicyError);
    assert.match(e.message, /^XX\.yaml: /);
    assert.match(e.message, re);
    return true;
  });
  bad(IN_TEXT.replace('minExamplesPerUpdate: 20', 'minExamplesPerUpdate: -1'), /rules\.minExamplesPerUpdate: must be between 1/);
  bad(IN_TEXT.replace('minExamplesPerUpdate: 20', 'minExamplesPerUpdate: "20"'), /rules\.minExamplesPerUpdate: must be a finite number/);
  bad(IN_TEXT.replace('crossBorder: secagg-or-dp', 'crossBorder: encrypted'), /rules\.updateProtection\.crossBorder: must be one of none, secagg/);
  bad(IN_TEXT.replace('maxEpsilon: 3.0', 'maxEpsilon: .inf'), /rules\.updateProtection\.maxEpsilon: must be a finite number/);
  bad(IN_TEXT.replace('    maxDelta: 1.0e-5\n', ''), /rules\.updateProtection\.maxDelta: is required/);
  bad(IN_TEXT.replace('computeJurisdictions: [same]', 'computeJurisdictions: [india]'), /rules\.computeJurisdictions\[0\]: must be a two-letter/);
  bad(IN_TEXT.replace('computeJurisdictions: [same]', 'computeJurisdictions: []'), /rules\.computeJurisdictions: must name at least one/);
  bad(IN_TEXT.replace('{ role: site_admin, per: site }', '{ role: site, per: site }'), /rules\.releaseSignoff\[0\]\.role: must be one of/);
  bad(IN_TEXT.replace('{ role: site_admin, per: site }', '{ role: site_admin, per: hospital }'), /rules\.releaseSignoff\[0\]\.per/);
  bad(IN_TEXT.replace('minExamplesPerUpdate: 20', 'minExamplesPerUpdate: 20\n  minExamples: 3'), /rules\.minExamples: unknown field/);
  bad(IN_TEXT.replace('jurisdiction: IN', 'jurisdiction: India'), /jurisdiction: must be a two-letter/);
  bad(IN_TEXT.replace(/^notice:[\s\S]*?(?=^principles)/m, ''), /notice: is required/);
  bad(IN_TEXT + '\nversion: 2\n', /not valid YAML: Map keys must be unique/);
  bad('rules: [1, 2', /not valid YAML/);
  bad('- a list', /must be a mapping/);
  assert.throws(() => parseSiteLocalPolicy('site: a\nrules:\n  minExamplesPerUpdate: 0\n', 'a.yaml'), /a\.yaml: rules\.minExamplesPerUpdate: must be between 1/);
});

test('a policy file must be named after its jurisdiction, and each jurisdiction defined once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-policy-'));
  writeFileSync(join(dir, 'JP.yaml'), IN_TEXT);
  assert.throws(() => loadPolicyFile(join(dir, 'JP.yaml')), /JP\.yaml: jurisdiction: is IN but the file is named JP\.yaml/);
  assert.throws(() => loadPolicyFile(join(dir, 'missing.yaml')), /missing\.yaml: cannot read/);
  const dir2 = mkdtempSync(join(tmpdir(), 'setu-policy-'));
  writeFileSync(join(dir2, 'IN.yaml'), IN_TEXT);
  writeFileSync(join(dir2, 'IN.yml'), IN_TEXT);
  assert.throws(() => loadPolicies(dir2), /IN is defined twice/);
});
