/**
 * Fail fast: what a study asks for, checked against what its sites declared, before anything runs. A study that
 * cannot work is refused at create (400 invalid_study) or at start (409), naming the field, the site and what is
 * allowed, instead of failing at a site minutes later while the lead watches "0/3 sites reported".
 *
 * The checks are pure functions over the spec and the sites' declarations (`SiteDeclaration`), gathered from the
 * store in one place (`siteDeclarations`), so they are unit-tested without a coordinator and grow in one file.
 */
import { analyticsSpecProblems } from './analytics-rounds.js';
import type { StudySpec } from '../protocol/api.js';
import { encodedFeatureNames } from '../protocol/data-schema.js';
import type { Store } from '../store/store.js';

export type DpLevel = 'sample' | 'client';

/** What the coordinator knows of one site: enrolment, the datasets it declared, where and how it trains. */
export interface SiteDeclaration {
  name: string;
  status: string;
  /** Training examples per dataset key, as the agent declared them (enrolment, and again at every start). */
  datasets: Record<string, number>;
  /** Where it trains: its own machine, or compute the coordinator places (site.yaml `compute.mode`). */
  compute: 'own' | 'placed';
  /**
   * The DP levels its trainer can apply, when the site declares them (trainer capability declarations; until an
   * agent declares them, `dpSupport` below says what the agent is known to do).
   */
  dp?: DpLevel[];
}

/**
 * Where the agent applies differential privacy when the site declares nothing: both levels in the built-in trainer
 * on the site's own machine; for placed training (a Slurm or Kubernetes job) client level only, which the agent
 * applies to the job's result when it comes back, while DP-SGD would have to run inside the job, which it does not
 * (so this refuses such a study at create; the trainer declarations refuse it again at start).
 */
export function dpSupport(site: SiteDeclaration): DpLevel[] {
  if (site.dp) return site.dp;
  return site.compute === 'own' ? ['sample', 'client'] : ['client'];
}

/** The sites a study would ask: the ones it names (unknown names included, to be reported), else every active site. */
function askedSites(spec: StudySpec, sites: SiteDeclaration[]): { named: string[]; known: SiteDeclaration[] } {
  if (spec.sites) return { named: spec.sites, known: spec.sites.map((n) => sites.find((s) => s.name === n)).filter((s): s is SiteDeclaration => !!s) };
  const active = sites.filter((s) => s.status === 'active');
  return { named: active.map((s) => s.name), known: active };
}

/** Every problem that makes the study unable to run; [] when it may be created. */
export function createProblems(spec: StudySpec, sites: SiteDeclaration[]): string[] {
  const out: string[] = [];
  const fit = spec.fit;
  if (fit.localSteps !== undefined && fit.epochs !== undefined) out.push(`/fit: give localSteps or epochs, not both (got localSteps ${fit.localSteps} and epochs ${fit.epochs})`);
  if (fit.localSteps === undefined && fit.epochs === undefined) out.push('/fit: give localSteps (steps per round) or epochs (passes over the data per round)');

  // The model against the data it will read.
  // (A custom model reads the data through the site's own trainer: its inputs are the study lead's business.)
  if (spec.dataSchema && spec.model.kind !== 'custom') {
    const cols = encodedFeatureNames(spec.dataSchema);
    if (spec.model.inputDim !== cols.length) {
      out.push(`/model/inputDim: the data schema encodes ${cols.length} feature column(s) (${preview(cols)}), so inputDim must be ${cols.length}, not ${spec.model.inputDim}`);
    }
    const survival = spec.dataSchema.task.kind === 'survival';
    if (survival !== (spec.model.kind === 'cox')) {
      out.push(`/model/kind: a ${spec.dataSchema.task.kind} task needs ${survival ? 'a cox model' : 'a logistic or mlp model'}, not ${spec.model.kind}`);
    }
  }

  // The sites it names, and what they hold.
  const active = sites.filter((s) => s.status === 'active');
  const { named, known } = askedSites(spec, sites);
  const unknown = named.filter((n) => !sites.some((s) => s.name === n));
  if (unknown.length) out.push(`/sites: no enrolled site is named ${unknown.join(', ')} (enrolled: ${active.map((s) => s.name).join(', ') || 'none yet'})`);
  const inactive = known.filter((s) => s.status !== 'active');
  if (inactive.length) out.push(`/sites: ${inactive.map((s) => `${s.name} is ${s.status}`).join(', ')}`);
  if (spec.minSites !== undefined && spec.sites && spec.minSites > spec.sites.length) {
    out.push(`/minSites: ${spec.minSites} is more than the ${spec.sites.length} site(s) the study names`);
  }
  const usable = known.filter((s) => s.status === 'active');
  const lacking = usable.filter((s) => !(spec.dataset in s.datasets));
  if (usable.length && lacking.length === usable.length) {
    const keys = [...new Set(usable.flatMap((s) => Object.keys(s.datasets)))].sort();
    out.push(`/dataset: no site declares a dataset "${spec.dataset}" (the sites declare: ${keys.join(', ') || 'none'})`);
  } else if (lacking.length) {
    out.push(`/dataset: ${lacking.map((s) => `site ${s.name} declares no dataset "${spec.dataset}" (it has: ${Object.keys(s.datasets).join(', ') || 'none'})`).join('; ')}${spec.sites ? '' : '; name the sites that hold it in sites:'}`);
  }
  out.push(...privacyCapabilityProblems(spec, usable));
  out.push(...analyticsSpecProblems(spec));
  return out;
}

/** Privacy the study asks for that a site cannot give (from its declaration, or what its agent is known to do). */
export function privacyCapabilityProblems(spec: StudySpec, sites: SiteDeclaration[]): string[] {
  const dp = spec.privacy?.dp;
  const out: string[] = [];
  if (dp) {
    const cannot = sites.filter((s) => !dpSupport(s).includes(dp.level));
    if (cannot.length) {
      out.push(`/privacy/dp/level: ${dp.level}-level DP cannot be applied by ${cannot.map((s) => `${s.name} (${s.dp ? `its trainer declares ${s.dp.join(', ') || 'no DP'}` : `${s.compute === 'placed' ? 'placed compute: its training runs as a job that does not run DP-SGD; client-level DP (privacy.dp.level: client) is applied by its agent' : 'unknown trainer'}`})`).join(', ')}`);
    }
  }
  if (spec.privacy?.secagg && !spec.sites) {
    const n = sites.length;
    if (n < 3) out.push(`/privacy/secagg: SecAgg+ needs at least 3 sites, and ${n} active site(s) are enrolled (with 2, the sum reveals the other site's update to each)`);
  }
  return out;
}

/** What stands in the way at start, once the participants are known. */
export function startProblems(spec: StudySpec, participants: string[]): string[] {
  if (spec.privacy?.secagg && participants.length < 3) {
    return [`SecAgg+ needs at least 3 participants and ${participants.length} site(s) approved (${participants.join(', ') || 'none'}): with fewer, the sum reveals each site's update to the others; get more approvals or remove privacy.secagg`];
  }
  // A site trains once per version (async-rounds.ts), so a buffer of K needs K participants.
  if (spec.async && participants.length < spec.async.bufferSize) {
    return [`/async/bufferSize: ${spec.async.bufferSize} needs at least that many participants and ${participants.length} site(s) take part (${participants.join(', ') || 'none'}); lower bufferSize to at most ${participants.length} or get more approvals`];
  }
  return [];
}

const preview = (cols: string[]) => (cols.length <= 8 ? cols.join(', ') : `${cols.slice(0, 6).join(', ')}, … ${cols[cols.length - 1]}`);

/** Every site the coordinator knows, with what it declared. */
export async function siteDeclarations(store: Store): Promise<SiteDeclaration[]> {
  const members = await store.listMemberships();
  return Promise.all(members.map(async (m) => {
    const profile = await store.getSiteProfile(m.id);
    return { name: m.name, status: m.status, datasets: await store.listCohorts(m.id), compute: profile?.compute.mode ?? 'own' };
  }));
}
