/**
 * What the chaos harness checks after a study, read from the coordinator's store and the sites' own state (not
 * from the API, which could hide a row): the model of every round (a digest of its weights alone), the updates
 * of every committed round, the privacy ledger and the compute-usage ledger per task, and each site's own privacy
 * account. Each check is compared with an uninterrupted run where one exists (same spec, same seed), else with
 * what the rules say (one update per participant per round, one privacy charge per released task).
 */
import { createHash } from 'node:crypto';
import { openStore } from '../../store/store.js';
import { decodeSafetensors } from '../../protocol/safetensors.js';
import type { Weights } from '../../protocol/tensors.js';
import { SiteState } from '../../site/state.js';
import { BUDGET_FILE } from '../../site/privacy.js';
import { PrivacyBudget, type PrivacyBudgetJSON } from '../../privacy/budget.js';

export interface RoundRecord {
  round: number;
  kind: string;
  status: string;
  /** Tasks the round issued, per site name (more than one: the round was issued again). */
  tasks: Record<string, number>;
  /** Accepted updates: site name, task id and the digest of the update's weights (null for an evaluation). */
  updates: { site: string; task: string; digest: string | null }[];
}

export interface LedgerRow {
  task: string;
  site: string;
  round: number;
  epsilon: number;
  plan: { sampleRate: number; noiseMultiplier: number; steps: number };
  budget: { epsilon: number; delta: number };
}

export interface StudyRecord {
  status: string;
  error: string | null;
  round: number;
  participants: string[];
  /** Round → digest of that round's model weights. */
  versions: Map<number, string>;
  rounds: RoundRecord[];
  ledger: LedgerRow[];
  /** Task ids with a compute-usage row. */
  usage: string[];
  /** Per site name: the labels (task ids) of its own privacy account's releases and its ε now. */
  siteAccounts: Map<string, { labels: string[]; epsilon: number } | undefined>;
}

/** sha256 over the tensors' names and bytes, sorted by name: the weights alone, not the file's metadata. */
export function weightsDigest(w: Weights): string {
  const h = createHash('sha256');
  for (const k of Object.keys(w).sort()) {
    const d = w[k]!.data;
    h.update(k).update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h.digest('hex');
}

/** The deadline of the study's open round, read from the store (the coordinator is down when this is asked). */
export async function openRoundDeadline(storeUrl: string, studyId: string): Promise<{ round: number; deadline: number } | undefined> {
  const store = await openStore(storeUrl);
  try {
    const r = await store.openRoundOf(studyId);
    return r ? { round: r.round, deadline: r.deadline_at } : undefined;
  } finally {
    await store.close();
  }
}

/** `siteStateDirs`: site name → its agent's state directory. */
export async function readStudy(storeUrl: string, studyId: string, siteStateDirs: Map<string, string>): Promise<StudyRecord> {
  const store = await openStore(storeUrl);
  try {
    const study = (await store.getStudy(studyId))!;
    // Sites are named by their names (hospital-0…): ids differ between the chaos run and the baseline.
    const names = new Map((await store.listSites()).map((x) => [x.id, x.name]));
    const name = (id: string) => names.get(id) ?? id;
    const versions = new Map<number, string>();
    for (const v of await store.listModelVersions(studyId)) {
      versions.set(v.round, weightsDigest(decodeSafetensors(await store.blobs.readAll(v.digest)).weights));
    }
    const rounds: RoundRecord[] = [];
    for (const r of await store.listRounds(studyId)) {
      const tasks: Record<string, number> = Object.create(null);
      for (const t of await store.listTasks(studyId, r.round)) tasks[name(t.site_id)] = (tasks[name(t.site_id)] ?? 0) + 1;
      const updates = await Promise.all((await store.listUpdates(studyId, r.round)).map(async (u) => ({
        site: name(u.site_id),
        task: u.task_id,
        digest: u.digest !== null && u.size !== null ? weightsDigest(decodeSafetensors(await store.blobs.readAll(u.digest)).weights) : null,
      })));
      rounds.push({ round: r.round, kind: r.kind, status: r.status, tasks, updates });
    }
    const ledger = (await store.ledgerRows(studyId)).map((r) => ({
      task: r.task_id, site: name(r.site_id), round: r.round, epsilon: Number(r.epsilon),
      plan: { sampleRate: Number(r.sample_rate), noiseMultiplier: Number(r.noise_multiplier), steps: Number(r.steps) },
      budget: { epsilon: Number(r.budget_epsilon), delta: Number(r.budget_delta) },
    }));
    const usage = (await store.listUsage(studyId)).map((u) => u.taskId);
    const siteAccounts = new Map<string, { labels: string[]; epsilon: number } | undefined>();
    for (const [site, dir] of siteStateDirs) {
      const j = new SiteState(dir).readJson<PrivacyBudgetJSON>(studyId, BUDGET_FILE);
      siteAccounts.set(site, j ? { labels: j.history.map((h) => h.label), epsilon: PrivacyBudget.fromJSON(j).spent() } : undefined);
    }
    return {
      status: study.status, error: study.error, round: study.current_round,
      participants: study.participants ? (JSON.parse(study.participants) as string[]).map(name) : [],
      versions, rounds, ledger, usage, siteAccounts,
    };
  } finally {
    await store.close();
  }
}

export interface Check {
  name: 'completed' | 'chaos' | 'digest' | 'updates' | 'privacy' | 'usage';
  /** true: holds; false: fails; null: does not apply (say why in detail). */
  ok: boolean | null;
  detail: string;
}

const fail = (name: Check['name'], detail: string): Check => ({ name, ok: false, detail });
const pass = (name: Check['name'], detail: string): Check => ({ name, ok: true, detail });

export function checkCompleted(r: StudyRecord, rounds: number): Check {
  if (r.status !== 'completed') return fail('completed', `study ${r.status} at round ${r.round}${r.error ? `: ${r.error}` : ''}`);
  return pass('completed', `completed, ${rounds} rounds`);
}

/** Every round's model equals the uninterrupted run's, bit for bit. */
export function checkDigests(r: StudyRecord, base: StudyRecord | undefined, why?: string): Check {
  if (!base) return { name: 'digest', ok: null, detail: why ?? 'no baseline' };
  const rounds = [...base.versions.keys()].sort((a, b) => a - b);
  for (const round of rounds) {
    const d = r.versions.get(round);
    if (d !== base.versions.get(round)) return fail('digest', d === undefined ? `model of round ${round} missing` : `model of round ${round} differs from the uninterrupted run's (${d.slice(0, 12)} ≠ ${base.versions.get(round)!.slice(0, 12)})`);
  }
  const extra = [...r.versions.keys()].filter((k) => !base.versions.has(k));
  if (extra.length) return fail('digest', `model versions for rounds ${extra.join(', ')} that the uninterrupted run does not have`);
  return pass('digest', `final model ${base.versions.get(rounds.at(-1)!)!.slice(0, 12)} and all ${rounds.length} versions equal the uninterrupted run's`);
}

/**
 * No update lost or counted twice: every committed round holds exactly one update from each participant, for a
 * task of that round and site; with a baseline, each fit update carries the same weights as the uninterrupted run's.
 */
export function checkUpdates(r: StudyRecord, base: StudyRecord | undefined): Check {
  const problems: string[] = [];
  let n = 0;
  for (const round of r.rounds) {
    if (round.status !== 'committed') continue;
    const bySite = new Map<string, number>();
    for (const u of round.updates) bySite.set(u.site, (bySite.get(u.site) ?? 0) + 1);
    for (const p of r.participants) {
      const c = bySite.get(p) ?? 0;
      if (c !== 1) problems.push(`round ${round.round}: ${c} updates from site ${p}`);
    }
    for (const s of bySite.keys()) if (!r.participants.includes(s)) problems.push(`round ${round.round}: update from non-participant ${s}`);
    n += round.updates.length;
    const b = base?.rounds.find((x) => x.round === round.round);
    if (base && b) {
      for (const u of round.updates) {
        const bu = b.updates.find((x) => x.site === u.site);
        if (bu && bu.digest !== u.digest) problems.push(`round ${round.round}: the update of site ${u.site} differs from the uninterrupted run's`);
      }
    }
  }
  const committed = r.rounds.filter((x) => x.status === 'committed').length;
  if (problems.length) return fail('updates', problems.slice(0, 3).join('; ') + (problems.length > 3 ? `; … ${problems.length - 3} more` : ''));
  return pass('updates', `${n} updates in ${committed} committed rounds, one per site per round${base ? ', each equal to the uninterrupted run\'s' : ''}`);
}

/**
 * No privacy spend lost or counted twice. Each participant has one ledger row per fit round, and the ε of its
 * k-th row is exactly what its accountant gives after k releases of that plan (a task charged twice shows as a
 * higher ε); each site's own account has one release per task, each a task the ledger holds, and ends at the
 * ledger's last ε.
 */
export function checkPrivacy(r: StudyRecord, dp: boolean): Check {
  if (!dp) {
    if (r.ledger.length) return fail('privacy', `${r.ledger.length} privacy ledger rows in a study without DP`);
    return { name: 'privacy', ok: null, detail: 'no DP in this study (ledger empty)' };
  }
  const problems: string[] = [];
  const fitRounds = r.rounds.filter((x) => x.kind === 'fit' && x.status === 'committed').map((x) => x.round);
  for (const site of r.participants) {
    const rows = r.ledger.filter((x) => x.site === site).sort((a, b) => a.round - b.round);
    const rounds = rows.map((x) => x.round);
    const missing = fitRounds.filter((x) => !rounds.includes(x));
    if (missing.length) problems.push(`site ${site}: no ledger row for fit rounds ${missing.join(', ')}`);
    const twice = rounds.filter((x, i) => rounds.indexOf(x) !== i);
    if (twice.length) problems.push(`site ${site}: charged twice in rounds ${[...new Set(twice)].join(', ')}`);
    if (rows.length) {
      const b = new PrivacyBudget(rows[0]!.budget.epsilon, rows[0]!.budget.delta);
      for (let k = 0; k < rows.length; k++) {
        const row = rows[k]!;
        b.spend(row.plan);
        const want = b.spent();
        if (Math.abs(row.epsilon - want) > 1e-9 * Math.max(1, want)) {
          problems.push(`site ${site}: ledger ε after its ${k + 1}${ordinal(k + 1)} release (round ${row.round}) is ${row.epsilon.toFixed(6)}, ${k + 1} releases cost ${want.toFixed(6)}: the site charged more than it released`);
          break;
        }
      }
    }
    const acct = r.siteAccounts.get(site);
    if (!acct) {
      problems.push(`site ${site}: no privacy account in its state directory`);
      continue;
    }
    const dup = acct.labels.filter((x, i) => acct.labels.indexOf(x) !== i);
    if (dup.length) problems.push(`site ${site}: its own account charged task ${dup[0]} ${acct.labels.filter((x) => x === dup[0]).length} times`);
    const ledgerTasks = new Set(rows.map((x) => x.task));
    const unknown = acct.labels.filter((x) => !ledgerTasks.has(x));
    if (unknown.length) problems.push(`site ${site}: its own account charged ${unknown.length} release(s) the coordinator's ledger does not hold (of task${new Set(unknown).size > 1 ? 's' : ''} ${[...new Set(unknown)].slice(0, 2).join(', ')})`);
    const lost = [...ledgerTasks].filter((x) => !acct.labels.includes(x));
    if (lost.length) problems.push(`site ${site}: the ledger holds ${lost.length} release(s) the site's own account lacks`);
    const last = rows.at(-1);
    if (last && Math.abs(acct.epsilon - last.epsilon) > 1e-9 * Math.max(1, last.epsilon)) problems.push(`site ${site}: its own account is at ε=${acct.epsilon.toFixed(6)}, the ledger at ε=${last.epsilon.toFixed(6)}`);
  }
  if (problems.length) return fail('privacy', problems.slice(0, 3).join('; ') + (problems.length > 3 ? `; … ${problems.length - 3} more` : ''));
  const eps = Math.max(...r.participants.map((s) => r.ledger.filter((x) => x.site === s).at(-1)?.epsilon ?? 0));
  return pass('privacy', `${r.ledger.length} ledger rows, one per site per fit round; site accounts agree; max ε ${eps.toFixed(4)}`);
}

const ordinal = (n: number) => (n % 10 === 1 && n % 100 !== 11 ? 'st' : n % 10 === 2 && n % 100 !== 12 ? 'nd' : n % 10 === 3 && n % 100 !== 13 ? 'rd' : 'th');

/** Every accepted task's compute usage is in the ledger (once: the ledger's primary key is the task). */
export function checkUsage(r: StudyRecord): Check {
  const have = new Set(r.usage);
  const accepted = r.rounds.filter((x) => x.status === 'committed').flatMap((x) => x.updates.map((u) => ({ ...u, round: x.round })));
  const lost = accepted.filter((u) => !have.has(u.task));
  if (lost.length) return fail('usage', `${lost.length} accepted task(s) have no compute usage row (first: round ${lost[0]!.round}, site ${lost[0]!.site})`);
  return pass('usage', `${accepted.length} accepted tasks, each with its usage row`);
}
