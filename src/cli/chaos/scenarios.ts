/**
 * The chaos scenarios: each runs one real study (four heart hospitals, FedAvg, the demo's FLamby protocol) while
 * doing one kind of damage at moments drawn from a seeded RNG, then checks the store against an uninterrupted run
 * made in the same invocation. A moment is "the N-th such event, then a random few milliseconds": the harness
 * waits on the coordinator's and the agents' own log lines (round opened, task delivered, update accepted, round
 * committed, result queued), so the damage lands at varied points of a round and ordering never rests on a sleep.
 *
 *   coordinator-kills   SIGKILL the coordinator again and again (≥ 20 in the full run), restart it on the same store
 *   agent-kills         SIGKILL site agents (mid-training, after queuing a result, at random), restart each
 *   agent-kills-dp      the same in a DP-SGD study at ε = 1 over all rounds: a task charged twice exhausts the budget
 *   coordinator-down    SIGKILL the coordinator while a round is open and keep it down past that round's deadline
 *   network             the chaos proxy between agents and coordinator resets connections, refuses them, stalls them
 */
import type { StudySpec } from '../../protocol/api.js';
import { createRng, type Xoshiro128 } from '../../learning/rng.js';
import { DP_SGD_LR, heartStudySpec } from '../demo.js';
import { Federation, SITES } from './federation.js';
import { isRequest, type Line } from './lines.js';
import { checkCompleted, checkDigests, checkPrivacy, checkUpdates, checkUsage, openRoundDeadline, readStudy, type Check, type StudyRecord } from './checks.js';

export const SCENARIOS = ['coordinator-kills', 'agent-kills', 'agent-kills-dp', 'coordinator-down', 'network'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export const DESCRIPTIONS: Record<ScenarioName, string> = {
  'coordinator-kills': 'SIGKILL the coordinator at random moments, restart it on the same store',
  'agent-kills': 'SIGKILL site agents at random moments (training, result queued), restart them',
  'agent-kills-dp': 'SIGKILL site agents in a DP-SGD study (ε = 1 over all rounds)',
  'coordinator-down': 'keep the coordinator down past an open round\'s deadline',
  network: 'TCP proxy between agents and coordinator: reset, refuse, stall connections',
};

export interface ChaosOptions {
  seed: number;
  quick: boolean;
  /** PostgreSQL server for the coordinators' stores (a fresh database per run); default SQLite. */
  pgBase?: string;
  scenarios?: ScenarioName[];
  /** Keep each run's directory (logs, store, site state). */
  keep?: boolean;
  progress?: (m: string) => void;
}

export interface ScenarioResult {
  scenario: ScenarioName;
  description: string;
  kills: { coordinator: number; agents: number; network: number };
  restarts: number;
  /** Seconds the coordinator was down past a round's deadline (coordinator-down). */
  downPastDeadlineSeconds: number;
  wallSeconds: number;
  rounds: number;
  status: string;
  checks: Check[];
  ok: boolean;
  dir?: string;
}

export interface ChaosReport {
  seed: number;
  quick: boolean;
  store: 'sqlite' | 'postgres';
  baseline: { rounds: number; wallSeconds: number; finalDigest: string | null; status: string } | null;
  scenarios: ScenarioResult[];
  ok: boolean;
}

/** How much of each damage a run does. */
export interface Sizes {
  rounds: number;
  coordinatorKills: number;
  agentKills: number;
  dpRounds: number;
  dpAgentKills: number;
  outages: number;
  roundTimeoutSeconds: number;
  networkFaults: number;
  /** Longest a scenario's study may take before it counts as stuck. */
  studyTimeoutMs: number;
}

export const FULL: Sizes = { rounds: 30, coordinatorKills: 24, agentKills: 12, dpRounds: 30, dpAgentKills: 12, outages: 2, roundTimeoutSeconds: 10, networkFaults: 30, studyTimeoutMs: 20 * 60_000 };
export const QUICK: Sizes = { rounds: 6, coordinatorKills: 3, agentKills: 3, dpRounds: 6, dpAgentKills: 3, outages: 1, roundTimeoutSeconds: 8, networkFaults: 6, studyTimeoutMs: 4 * 60_000 };
/** The issue's bar: at least 20 coordinator kills in one study in the full run. */
export const MIN_FULL_COORDINATOR_KILLS = 20;

/** The plain study: the demo's FLamby protocol. The deadline does not enter training, so one baseline serves all. */
export function plainSpec(seed: number, rounds: number, roundTimeoutSeconds = 120): StudySpec {
  return { ...heartStudySpec(seed, rounds), name: 'chaos', roundTimeoutSeconds };
}

/** Sample-level DP-SGD at ε = 1, δ = 1e-3 over the whole study (σ planned so that all rounds just fit). */
export function dpSpec(seed: number, rounds: number): StudySpec {
  const s = plainSpec(seed, rounds);
  s.privacy = { dp: { level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 } } as StudySpec['privacy'];
  s.fit = { ...s.fit, optimizer: { ...s.fit.optimizer, lr: DP_SGD_LR } };
  return s;
}
const DP_SITE_BUDGET = { privacy: { budget: { epsilon: 1, delta: 1e-3 } } };

// ---- moments ----------------------------------------------------------------------------------------------------

const roundOpened = (l: Line) => /round \d+ \(\w+\) opened/.test(l.msg);
const roundCommitted = (l: Line) => /round \d+ committed/.test(l.msg);
const taskDelivered = (site?: string) => (l: Line) => isRequest(l, '/v1/agent/task', 200, site);
const updateAccepted = (l: Line) => isRequest(l, '/v1/agent/tasks/:id/result', 200);
const resultQueued = (l: Line) => /: fit done in \d+ ms; uploading/.test(l.msg);

const pick = <T>(rng: Xoshiro128, xs: readonly T[]): T => xs[rng.nextInt(xs.length)]!;

/** A random wait: how far past an event the damage lands (randomness of the moment, not ordering). */
const jitter = (rng: Xoshiro128, maxMs: number) => new Promise((r) => setTimeout(r, Math.floor(rng.next() * maxMs)));

interface Damage {
  coordinatorKills: number;
  agentKills: number;
  networkFaults: number;
  downPastDeadlineMs: number;
}

const EVENT_TIMEOUT = { timeoutMs: 120_000 };

/** Kills the coordinator on a random event of the running study, `n` times, restarting it each time. */
async function coordinatorKills(f: Federation, d: Damage, rng: Xoshiro128, n: number, say: (m: string) => void): Promise<void> {
  const moments = { opened: roundOpened, delivered: taskDelivered(), accepted: updateAccepted, committed: roundCommitted } as const;
  while (d.coordinatorKills < n && !f.done.aborted) {
    const kind = pick(rng, ['opened', 'delivered', 'accepted', 'committed', 'any'] as const);
    if (kind === 'any') await jitter(rng, 3000);
    else if (!(await f.coordinatorLines.next(moments[kind], { ...EVENT_TIMEOUT, signal: f.done }))) break;
    await jitter(rng, 250);
    if (f.done.aborted) break;
    await f.killCoordinator();
    d.coordinatorKills++;
    say(`coordinator SIGKILL ${d.coordinatorKills}/${n} (${kind === 'any' ? 'at a random time' : `after a round event: ${kind}`})`);
    await f.restartCoordinator();
  }
}

/** Kills a random agent on one of its own events (task delivered, result queued) or at random, `n` times. */
async function agentKills(f: Federation, d: Damage, rng: Xoshiro128, n: number, say: (m: string) => void): Promise<void> {
  while (d.agentKills < n && !f.done.aborted) {
    const victim = rng.nextInt(SITES);
    const kind = pick(rng, ['delivered', 'queued', 'any'] as const);
    if (kind === 'any') await jitter(rng, 2000);
    else {
      const l = kind === 'delivered'
        ? await f.coordinatorLines.next(taskDelivered(f.siteIds[victim]), { ...EVENT_TIMEOUT, signal: f.done })
        : await f.siteLines[victim]!.next(resultQueued, { ...EVENT_TIMEOUT, signal: f.done });
      if (!l) break;
    }
    // Right after delivery the agent is training; right after "uploading" its result is queued but maybe not sent.
    await jitter(rng, kind === 'queued' ? 30 : 200);
    if (f.done.aborted) break;
    await f.killSite(victim);
    d.agentKills++;
    say(`agent hospital-${victim} SIGKILL ${d.agentKills}/${n} (${kind === 'any' ? 'at a random time' : kind === 'delivered' ? 'after its task was delivered' : 'after it queued its result'})`);
    await f.restartSite(victim);
  }
}

/**
 * Kills the coordinator right after a fit round opens and keeps it down until a second past that round's
 * deadline, as the store holds it, `n` times at random rounds.
 */
async function coordinatorDown(f: Federation, d: Damage, rng: Xoshiro128, n: number, rounds: number, say: (m: string) => void): Promise<void> {
  let from = 1;
  for (let i = 0; i < n && !f.done.aborted; i++) {
    // Spread the outages over the study: each at a random round in its share of the rounds.
    const share = Math.max(1, Math.floor((rounds - 1) / n));
    const target = Math.min(rounds - 1, from + rng.nextInt(share));
    from = target + 1;
    const opened = await f.coordinatorLines.next((l) => {
      const m = /round (\d+) \(fit\) opened/.exec(l.msg);
      return !!m && Number(m[1]) >= target;
    }, { ...EVENT_TIMEOUT, signal: f.done });
    if (!opened) break;
    await f.killCoordinator();
    d.coordinatorKills++;
    const open = await openRoundDeadline(f.storeUrl, f.studyId);
    if (!open) {
      // The round committed between its "opened" line and the kill: no open deadline to outlive this time.
      say(`coordinator SIGKILL ${d.coordinatorKills}: no round open; restarting at once`);
      await f.restartCoordinator();
      i--;
      continue;
    }
    const downTo = open.deadline + 1000;
    say(`coordinator SIGKILL during round ${open.round}; down until 1 s past its deadline (${Math.round((downTo - Date.now()) / 1000)} s)`);
    // Staying down until then is the fault itself (the deadline is a wall-clock time in the store).
    await new Promise((r) => setTimeout(r, Math.max(0, downTo - Date.now())));
    d.downPastDeadlineMs += Date.now() - open.deadline;
    await f.restartCoordinator();
  }
}

/** Network faults through the proxy at random round events: reset all, refuse for a while, stall for a while. */
async function networkFaults(f: Federation, d: Damage, rng: Xoshiro128, n: number, say: (m: string) => void): Promise<void> {
  const p = f.proxy!;
  const moments = [roundOpened, taskDelivered(), updateAccepted, roundCommitted];
  while (d.networkFaults < n && !f.done.aborted) {
    if (!(await f.coordinatorLines.next(pick(rng, moments), { ...EVENT_TIMEOUT, signal: f.done }))) break;
    await jitter(rng, 200);
    if (f.done.aborted) break;
    const kind = pick(rng, ['reset', 'refuse', 'stall'] as const);
    d.networkFaults++;
    if (kind === 'reset') {
      say(`network fault ${d.networkFaults}/${n}: reset ${p.reset()} open connection(s)`);
      continue;
    }
    // How long the link stays down is part of the fault drawn, not a wait for something to happen.
    const ms = 300 + Math.floor(rng.next() * 4000);
    if (kind === 'refuse') p.drop(ms);
    else p.stall();
    say(`network fault ${d.networkFaults}/${n}: ${kind === 'refuse' ? 'refuse new connections (and reset open ones)' : 'stall every connection'} for ${ms} ms`);
    await new Promise((r) => setTimeout(r, ms));
    p.heal();
  }
}

// ---- running ----------------------------------------------------------------------------------------------------

interface Run {
  record: StudyRecord | undefined;
  wallSeconds: number;
  damage: Damage;
  restarts: number;
  stuck: string | undefined;
  dir: string;
}

async function runStudy(o: ChaosOptions, spec: StudySpec, setup: { proxy?: boolean; siteExtra?: Record<string, unknown> }, timeoutMs: number,
  drive: (f: Federation, d: Damage) => Promise<void>): Promise<Run> {
  const f = await Federation.create({ ...(o.pgBase ? { pgBase: o.pgBase } : {}), ...(o.keep ? { keep: true } : {}), ...setup });
  const started = Date.now();
  const damage: Damage = { coordinatorKills: 0, agentKills: 0, networkFaults: 0, downPastDeadlineMs: 0 };
  try {
    await f.start(spec);
    let broke: string | undefined;
    try {
      await drive(f, damage);
    } catch (e) {
      // A process that did not come back is a finding about the scenario, not a crash of the harness.
      broke = (e as Error).message;
    }
    const final = broke ? undefined : await f.waitDone(Math.max(0, timeoutMs - (Date.now() - started)));
    const wallSeconds = (Date.now() - started) / 1000;
    await f.stop();
    const names = new Map(Array.from({ length: SITES }, (_, i) => [`hospital-${i}`, f.siteStateDir(i)]));
    const record = await readStudy(f.storeUrl, f.studyId, names);
    return { record, wallSeconds, damage, restarts: f.coordinatorRestarts + f.siteRestarts, stuck: broke ?? (final ? undefined : `the study did not end within ${Math.round(timeoutMs / 1000)} s (at round ${record.round}); see ${f.dir}`), dir: f.dir };
  } finally {
    await f.close();
  }
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const sizes = o.quick ? QUICK : FULL;
  const say = o.progress ?? (() => {});
  const chosen = o.scenarios ?? [...SCENARIOS];
  let baseline: Run | undefined;
  if (chosen.some((s) => s !== 'agent-kills-dp')) {
    say(`baseline: an uninterrupted run of ${sizes.rounds} rounds`);
    baseline = await runStudy(o, plainSpec(o.seed, sizes.rounds), {}, sizes.studyTimeoutMs, async () => {});
    const b = baseline.record;
    if (!b || b.status !== 'completed') throw new Error(`the uninterrupted baseline did not complete (${b?.status ?? 'no record'}${b?.error ? `: ${b.error}` : ''}${baseline.stuck ? `; ${baseline.stuck}` : ''}): nothing to compare with`);
    say(`baseline: completed in ${baseline.wallSeconds.toFixed(1)} s`);
  }
  const results: ScenarioResult[] = [];
  for (const name of chosen) {
    const rng = createRng(o.seed, 'chaos', name);
    const log = (m: string) => say(`${name}: ${m}`);
    say(`${name}: ${DESCRIPTIONS[name]}`);
    let run: Run;
    let rounds = sizes.rounds;
    let planned: { what: string; min: number; got: (d: Damage) => number };
    if (name === 'coordinator-kills') {
      const min = o.quick ? sizes.coordinatorKills : MIN_FULL_COORDINATOR_KILLS;
      planned = { what: 'coordinator kills', min, got: (d) => d.coordinatorKills };
      run = await runStudy(o, plainSpec(o.seed, rounds), {}, sizes.studyTimeoutMs, (f, d) => coordinatorKills(f, d, rng, sizes.coordinatorKills, log));
    } else if (name === 'agent-kills') {
      planned = { what: 'agent kills', min: sizes.agentKills, got: (d) => d.agentKills };
      run = await runStudy(o, plainSpec(o.seed, rounds), {}, sizes.studyTimeoutMs, (f, d) => agentKills(f, d, rng, sizes.agentKills, log));
    } else if (name === 'agent-kills-dp') {
      rounds = sizes.dpRounds;
      planned = { what: 'agent kills', min: sizes.dpAgentKills, got: (d) => d.agentKills };
      run = await runStudy(o, dpSpec(o.seed, rounds), { siteExtra: DP_SITE_BUDGET }, sizes.studyTimeoutMs, (f, d) => agentKills(f, d, rng, sizes.dpAgentKills, log));
    } else if (name === 'coordinator-down') {
      planned = { what: 'outages past a deadline', min: sizes.outages, got: (d) => (d.downPastDeadlineMs > 0 ? d.coordinatorKills : 0) };
      run = await runStudy(o, plainSpec(o.seed, rounds, sizes.roundTimeoutSeconds), {}, sizes.studyTimeoutMs, (f, d) => coordinatorDown(f, d, rng, sizes.outages, rounds, log));
    } else {
      planned = { what: 'network faults', min: sizes.networkFaults, got: (d) => d.networkFaults };
      run = await runStudy(o, plainSpec(o.seed, rounds), { proxy: true }, sizes.studyTimeoutMs, (f, d) => networkFaults(f, d, rng, sizes.networkFaults, log));
    }
    const r = run.record!;
    const dp = name === 'agent-kills-dp';
    const base = dp ? undefined : baseline!.record;
    const checks: Check[] = [
      run.stuck ? { name: 'completed', ok: false, detail: run.stuck } : checkCompleted(r, rounds),
      planned.got(run.damage) >= planned.min
        ? { name: 'chaos', ok: true, detail: `${planned.got(run.damage)} ${planned.what} (at least ${planned.min} planned)` }
        : { name: 'chaos', ok: false, detail: `only ${planned.got(run.damage)} ${planned.what} before the study ended; at least ${planned.min} were needed` },
      checkDigests(r, base, 'n/a: DP-SGD noise is fresh randomness, so no two runs share a model'),
      checkUpdates(r, base),
      checkPrivacy(r, dp),
      checkUsage(r),
    ];
    const res: ScenarioResult = {
      scenario: name, description: DESCRIPTIONS[name],
      kills: { coordinator: run.damage.coordinatorKills, agents: run.damage.agentKills, network: run.damage.networkFaults },
      restarts: run.restarts, downPastDeadlineSeconds: run.damage.downPastDeadlineMs / 1000, wallSeconds: run.wallSeconds, rounds,
      status: r.status, checks, ok: checks.every((c) => c.ok !== false), ...(o.keep ? { dir: run.dir } : {}),
    };
    say(`${name}: ${res.ok ? 'ok' : `FAILED: ${checks.filter((c) => c.ok === false).map((c) => `${c.name}: ${c.detail}`).join('; ')}`}`);
    results.push(res);
  }
  return {
    seed: o.seed, quick: o.quick, store: o.pgBase ? 'postgres' : 'sqlite',
    baseline: baseline ? { rounds: sizes.rounds, wallSeconds: baseline.wallSeconds, finalDigest: baseline.record!.versions.get(sizes.rounds) ?? null, status: baseline.record!.status } : null,
    scenarios: results, ok: results.every((x) => x.ok),
  };
}
