/**
 * Jurisdiction policy as code. One YAML file per jurisdiction (policies/IN.yaml, policies/JP.yaml, …) states
 * the rules a study must meet before it may use data held there; a site may add its own local policy, and
 * site-local wins (as in NVIDIA FLARE, where a site's own privacy/authorisation files override the job's).
 *
 * The shipped files are configurable examples, not legal advice. This module only parses, validates and
 * evaluates them; the coordinator calls `checkStudy` before `start`, and `checkRelease` before a release.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ROLES, type Role } from './roles.js';

/** How a per-site update must be protected: none, SecAgg+, DP (ε ≤ maxEpsilon), either, or both. */
export const PROTECTIONS = ['none', 'secagg', 'dp', 'secagg-or-dp', 'secagg-and-dp'] as const;
export type Protection = (typeof PROTECTIONS)[number];

/** A required sign-off: one per consortium, one per participating jurisdiction, or one per participating site. */
export interface SignoffRule {
  role: Role;
  per: 'consortium' | 'jurisdiction' | 'site';
}

export interface PolicyRules {
  /** The fewest training examples that may stand behind one site's update. */
  minExamplesPerUpdate: number;
  updateProtection: {
    /** When the update goes to a coordinator in another jurisdiction. */
    crossBorder: Protection;
    /** When the coordinator is in the same jurisdiction. */
    domestic: Protection;
    /** DP only counts as protection with ε and δ at most these (per site, per study). */
    maxEpsilon: number;
    maxDelta: number;
  };
  /** Jurisdictions whose compute may train on this data; "same" means the data's own jurisdiction. */
  computeJurisdictions: string[];
  /** Who must sign off before a model trained on this data is released. */
  releaseSignoff: SignoffRule[];
}

export interface JurisdictionPolicy {
  jurisdiction: string;
  name: string;
  version: number;
  /** Plain-words notice: what the file is and is not (configurable example, not legal advice). */
  notice: string;
  /** The principles the rules try to reflect, in plain words, with the law they come from. */
  principles: { law: string; text: string }[];
  rules: PolicyRules;
  /** Rule fields a site-local policy replaced (set by mergeSiteLocal), e.g. "updateProtection.maxEpsilon". */
  localOverrides?: string[];
}

/** A site's own policy: any subset of the rules. Whatever it sets replaces the jurisdiction's value. */
export interface SiteLocalPolicy {
  site: string;
  notice?: string;
  rules: Partial<Omit<PolicyRules, 'updateProtection'>> & { updateProtection?: Partial<PolicyRules['updateProtection']> };
}

export class PolicyError extends Error {
  override name = 'PolicyError';
  constructor(readonly file: string, readonly field: string, detail: string) {
    super(`${file}: ${field ? `${field}: ` : ''}${detail}`);
  }
}

// ---------------------------------------------------------------- validation

type Obj = Record<string, unknown>;
const JURISDICTION_RE = /^(?:[A-Z]{2}|DEFAULT)$/;

class V {
  constructor(readonly file: string) {}
  fail(field: string, msg: string): never { throw new PolicyError(this.file, field, msg); }
  obj(v: unknown, field: string, allowed: string[], required: string[]): Obj {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'must be a mapping');
    const o = v as Obj;
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.fail(field ? `${field}.${k}` : k, `unknown field (allowed: ${allowed.join(', ')})`);
    for (const k of required) if (!(k in o)) this.fail(field ? `${field}.${k}` : k, 'is required');
    return o;
  }
  str(v: unknown, field: string): string {
    if (typeof v !== 'string' || v.trim() === '') this.fail(field, 'must be a non-empty string');
    return v;
  }
  num(v: unknown, field: string, min: number, max = Infinity, integer = false): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(field, 'must be a finite number');
    if (integer && !Number.isInteger(v)) this.fail(field, 'must be an integer');
    if (v < min || v > max) this.fail(field, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }
  oneOf<T extends string>(v: unknown, field: string, options: readonly T[]): T {
    if (typeof v !== 'string' || !options.includes(v as T)) this.fail(field, `must be one of ${options.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }
  list(v: unknown, field: string): unknown[] {
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }
}

const RULE_KEYS = ['minExamplesPerUpdate', 'updateProtection', 'computeJurisdictions', 'releaseSignoff'];
const PROTECTION_KEYS = ['crossBorder', 'domestic', 'maxEpsilon', 'maxDelta'];

function validateRules(v: V, raw: unknown, field: string, partial: boolean): SiteLocalPolicy['rules'] {
  const o = v.obj(raw, field, RULE_KEYS, partial ? [] : RULE_KEYS);
  const out: SiteLocalPolicy['rules'] = {};
  if ('minExamplesPerUpdate' in o) out.minExamplesPerUpdate = v.num(o.minExamplesPerUpdate, `${field}.minExamplesPerUpdate`, 1, Number.MAX_SAFE_INTEGER, true);
  if ('updateProtection' in o) {
    const f = `${field}.updateProtection`;
    const p = v.obj(o.updateProtection, f, PROTECTION_KEYS, partial ? [] : PROTECTION_KEYS);
    const up: Partial<PolicyRules['updateProtection']> = {};
    if ('crossBorder' in p) up.crossBorder = v.oneOf(p.crossBorder, `${f}.crossBorder`, PROTECTIONS);
    if ('domestic' in p) up.domestic = v.oneOf(p.domestic, `${f}.domestic`, PROTECTIONS);
    if ('maxEpsilon' in p) up.maxEpsilon = v.num(p.maxEpsilon, `${f}.maxEpsilon`, Number.MIN_VALUE);
    if ('maxDelta' in p) up.maxDelta = v.num(p.maxDelta, `${f}.maxDelta`, 0, 1);
    out.updateProtection = up;
  }
  if ('computeJurisdictions' in o) {
    const f = `${field}.computeJurisdictions`;
    const list = v.list(o.computeJurisdictions, f);
    if (list.length === 0) v.fail(f, 'must name at least one jurisdiction (or "same")');
    out.computeJurisdictions = list.map((j, i) => {
      if (j === 'same') return j;
      if (typeof j !== 'string' || !/^[A-Z]{2}$/.test(j)) v.fail(`${f}[${i}]`, `must be a two-letter ISO country code or "same", got ${JSON.stringify(j)}`);
      return j;
    });
  }
  if ('releaseSignoff' in o) {
    const f = `${field}.releaseSignoff`;
    out.releaseSignoff = v.list(o.releaseSignoff, f).map((r, i) => {
      const e = v.obj(r, `${f}[${i}]`, ['role', 'per'], ['role', 'per']);
      return { role: v.oneOf(e.role, `${f}[${i}].role`, ROLES.filter((x) => x !== 'site')), per: v.oneOf(e.per, `${f}[${i}].per`, ['consortium', 'jurisdiction', 'site'] as const) };
    });
  }
  return out;
}

function readYaml(text: string, file: string): unknown {
  try {
    return parseYaml(text, { uniqueKeys: true, strict: true });
  } catch (e) {
    if (e instanceof YAMLParseError) throw new PolicyError(file, '', `not valid YAML: ${e.message.split('\n')[0]}`);
    throw e;
  }
}

/** Parse and strictly validate a jurisdiction policy; errors name the file and the field. */
export function parsePolicy(text: string, file = '<policy>'): JurisdictionPolicy {
  const v = new V(file);
  const o = v.obj(readYaml(text, file), '', ['jurisdiction', 'name', 'version', 'notice', 'principles', 'rules'], ['jurisdiction', 'name', 'version', 'notice', 'principles', 'rules']);
  const jurisdiction = v.str(o.jurisdiction, 'jurisdiction');
  if (!JURISDICTION_RE.test(jurisdiction)) v.fail('jurisdiction', `must be a two-letter ISO country code or DEFAULT, got ${JSON.stringify(jurisdiction)}`);
  const principles = v.list(o.principles, 'principles').map((p, i) => {
    const e = v.obj(p, `principles[${i}]`, ['law', 'text'], ['law', 'text']);
    return { law: v.str(e.law, `principles[${i}].law`), text: v.str(e.text, `principles[${i}].text`) };
  });
  const rules = validateRules(v, o.rules, 'rules', false) as PolicyRules;
  return {
    jurisdiction, name: v.str(o.name, 'name'), version: v.num(o.version, 'version', 1, 1e9, true),
    notice: v.str(o.notice, 'notice'), principles, rules,
  };
}

export function parseSiteLocalPolicy(text: string, file = '<site policy>'): SiteLocalPolicy {
  const v = new V(file);
  const o = v.obj(readYaml(text, file), '', ['site', 'notice', 'rules'], ['site', 'rules']);
  const out: SiteLocalPolicy = { site: v.str(o.site, 'site'), rules: validateRules(v, o.rules, 'rules', true) };
  if ('notice' in o) out.notice = v.str(o.notice, 'notice');
  return out;
}

export function loadPolicyFile(path: string): JurisdictionPolicy {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PolicyError(path, '', `cannot read: ${(e as Error).message}`);
  }
  const p = parsePolicy(text, path);
  const stem = basename(path).replace(/\.ya?ml$/, '');
  if (stem !== p.jurisdiction) throw new PolicyError(path, 'jurisdiction', `is ${p.jurisdiction} but the file is named ${basename(path)}`);
  return p;
}

/** The shipped policies/ folder at the package root (the same from src/ and dist/). */
export function defaultPolicyDir(): string {
  return fileURLToPath(new URL('../../policies/', import.meta.url));
}

/** Load every *.yaml / *.yml in `dir`, keyed by jurisdiction. */
export function loadPolicies(dir: string): Record<string, JurisdictionPolicy> {
  const out: Record<string, JurisdictionPolicy> = {};
  for (const f of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const p = loadPolicyFile(join(dir, f));
    if (p.jurisdiction in out) throw new PolicyError(join(dir, f), 'jurisdiction', `${p.jurisdiction} is defined twice`);
    out[p.jurisdiction] = p;
  }
  return out;
}

// ---------------------------------------------------------------- merging

/**
 * The effective policy for one site: every rule field the site-local policy sets replaces the jurisdiction's
 * (whether stricter or an explicit, deliberate override); the rest comes from the jurisdiction. The fields
 * replaced are listed in `localOverrides`, so reports can say which rule came from where.
 */
export function mergeSiteLocal(j: JurisdictionPolicy, local: SiteLocalPolicy | undefined): JurisdictionPolicy {
  const merged: JurisdictionPolicy = structuredClone(j);
  if (!local) return merged;
  const overrides: string[] = [...(j.localOverrides ?? [])];
  const r = local.rules;
  if (r.minExamplesPerUpdate !== undefined) { merged.rules.minExamplesPerUpdate = r.minExamplesPerUpdate; overrides.push('minExamplesPerUpdate'); }
  if (r.computeJurisdictions !== undefined) { merged.rules.computeJurisdictions = [...r.computeJurisdictions]; overrides.push('computeJurisdictions'); }
  if (r.releaseSignoff !== undefined) { merged.rules.releaseSignoff = structuredClone(r.releaseSignoff); overrides.push('releaseSignoff'); }
  for (const [k, val] of Object.entries(r.updateProtection ?? {})) {
    if (val === undefined) continue;
    (merged.rules.updateProtection as Record<string, unknown>)[k] = val;
    overrides.push(`updateProtection.${k}`);
  }
  merged.localOverrides = overrides;
  return merged;
}

// ---------------------------------------------------------------- checking

export type RuleId = 'no-policy' | 'min-examples' | 'update-protection' | 'compute-location' | 'release-signoff';

export interface StudyPlan {
  id: string;
  /** Where the coordinator (the receiver of per-site updates) runs. */
  coordinatorJurisdiction: string;
  secagg: boolean;
  /** The client-level or sample-level DP guarantee every site's data gets, or null without DP. */
  dp: { epsilon: number; delta: number } | null;
}

export interface ParticipatingSite {
  id: string;
  jurisdiction: string;
  /** Training examples behind each of this site's updates. */
  examplesPerUpdate: number;
  /** Where its training runs (its own machine or a placed compute resource). */
  computeJurisdiction: string;
  /** The site's own policy, if it has one. */
  local?: SiteLocalPolicy;
}

export interface Violation {
  jurisdiction: string;
  site: string | null;
  rule: RuleId;
  /** Whether the rule came from the jurisdiction's file or the site's own policy. */
  source: 'jurisdiction' | 'site-local';
  message: string;
}

function protectionHolds(p: Protection, plan: StudyPlan, maxEps: number, maxDelta: number): boolean {
  const dpOk = plan.dp !== null && plan.dp.epsilon <= maxEps && plan.dp.delta <= maxDelta;
  switch (p) {
    case 'none': return true;
    case 'secagg': return plan.secagg;
    case 'dp': return dpOk;
    case 'secagg-or-dp': return plan.secagg || dpOk;
    case 'secagg-and-dp': return plan.secagg && dpOk;
  }
}

function describe(p: Protection, maxEps: number, maxDelta: number): string {
  const dp = `DP with ε ≤ ${maxEps} and δ ≤ ${maxDelta}`;
  return { none: 'nothing', secagg: 'SecAgg+', dp, 'secagg-or-dp': `SecAgg+ or ${dp}`, 'secagg-and-dp': `SecAgg+ and ${dp}` }[p];
}

function describePlan(plan: StudyPlan): string {
  const parts = [plan.secagg ? 'SecAgg+' : 'no SecAgg+', plan.dp ? `DP with ε = ${plan.dp.epsilon}, δ = ${plan.dp.delta}` : 'no DP'];
  return parts.join(' and ');
}

/** The policy that governs `site`: its jurisdiction's file (or DEFAULT) merged with its local policy. */
export function effectivePolicy(site: ParticipatingSite, policies: Record<string, JurisdictionPolicy>): JurisdictionPolicy | null {
  const base = Object.prototype.hasOwnProperty.call(policies, site.jurisdiction) ? policies[site.jurisdiction]! : policies.DEFAULT;
  return base ? mergeSiteLocal(base, site.local) : null;
}

/**
 * Check a study against the policy of every participating site's jurisdiction (and the site's own policy).
 * Returns every rule broken, each naming the jurisdiction, the site, the rule id and why; [] means it may start.
 */
export function checkStudy(plan: StudyPlan, sites: ParticipatingSite[], policies: Record<string, JurisdictionPolicy>): Violation[] {
  const out: Violation[] = [];
  for (const site of sites) {
    const eff = effectivePolicy(site, policies);
    if (!eff) {
      out.push({ jurisdiction: site.jurisdiction, site: site.id, rule: 'no-policy', source: 'jurisdiction', message: `no policy for jurisdiction ${site.jurisdiction} and no DEFAULT policy` });
      continue;
    }
    const src = (field: string): Violation['source'] => (eff.localOverrides?.includes(field) ? 'site-local' : 'jurisdiction');
    const add = (rule: RuleId, field: string, message: string) => out.push({ jurisdiction: site.jurisdiction, site: site.id, rule, source: src(field), message });
    const r = eff.rules;
    if (!(site.examplesPerUpdate >= r.minExamplesPerUpdate)) {
      add('min-examples', 'minExamplesPerUpdate', `site ${site.id} puts ${site.examplesPerUpdate} examples behind an update; at least ${r.minExamplesPerUpdate} are required`);
    }
    const up = r.updateProtection;
    const crossBorder = plan.coordinatorJurisdiction !== site.jurisdiction;
    const need = crossBorder ? up.crossBorder : up.domestic;
    if (!protectionHolds(need, plan, up.maxEpsilon, up.maxDelta)) {
      const field = crossBorder ? 'updateProtection.crossBorder' : 'updateProtection.domestic';
      const epsField = eff.localOverrides?.some((f) => f === 'updateProtection.maxEpsilon' || f === 'updateProtection.maxDelta');
      const where = crossBorder ? `leave ${site.jurisdiction} for a coordinator in ${plan.coordinatorJurisdiction}` : `go to the coordinator in ${site.jurisdiction}`;
      out.push({
        jurisdiction: site.jurisdiction, site: site.id, rule: 'update-protection',
        source: src(field) === 'site-local' || epsField ? 'site-local' : 'jurisdiction',
        message: `site ${site.id}'s updates ${where} and need ${describe(need, up.maxEpsilon, up.maxDelta)}; the study has ${describePlan(plan)}`,
      });
    }
    const allowed = r.computeJurisdictions.map((j) => (j === 'same' ? site.jurisdiction : j));
    if (!allowed.includes(site.computeJurisdiction)) {
      add('compute-location', 'computeJurisdictions', `data of site ${site.id} (${site.jurisdiction}) may train only on compute in ${[...new Set(allowed)].join(', ')}; it is placed in ${site.computeJurisdiction}`);
    }
  }
  return out;
}

export interface Signoff {
  role: Role;
  by: string;
  /** The jurisdiction the signer answers for (their institution's). */
  jurisdiction: string;
  /** The site they sign for, when signing per site. */
  site?: string;
}

/** Which sign-offs are missing before a model trained on `sites` may be released. [] means it may be released. */
export function checkRelease(signoffs: Signoff[], sites: ParticipatingSite[], policies: Record<string, JurisdictionPolicy>): Violation[] {
  const out: Violation[] = [];
  const seen = new Set<string>();
  for (const site of sites) {
    const eff = effectivePolicy(site, policies);
    if (!eff) {
      out.push({ jurisdiction: site.jurisdiction, site: site.id, rule: 'no-policy', source: 'jurisdiction', message: `no policy for jurisdiction ${site.jurisdiction} and no DEFAULT policy` });
      continue;
    }
    const source = eff.localOverrides?.includes('releaseSignoff') ? 'site-local' : 'jurisdiction';
    for (const req of eff.rules.releaseSignoff) {
      const target = req.per === 'site' ? `site ${site.id}` : req.per === 'jurisdiction' ? `jurisdiction ${site.jurisdiction}` : 'the consortium';
      const key = `${req.role}|${target}`;
      if (seen.has(key)) continue; // one missing consortium-wide sign-off is reported once
      const met = signoffs.some((s) => s.role === req.role &&
        (req.per === 'consortium' || (req.per === 'jurisdiction' && s.jurisdiction === site.jurisdiction) || (req.per === 'site' && s.site === site.id)));
      if (!met) {
        seen.add(key);
        out.push({ jurisdiction: site.jurisdiction, site: req.per === 'site' ? site.id : null, rule: 'release-signoff', source, message: `release needs a sign-off by ${/^[aeiou]/.test(req.role) ? 'an' : 'a'} ${req.role} for ${target}` });
      }
    }
  }
  return out;
}
