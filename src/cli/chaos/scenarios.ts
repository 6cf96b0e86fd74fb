/**
 * The chaos scenarios: each runs one real study (four heart hospitals, FedAvg, the demo's FLamby protocol) while
 * doing one kind of damage at moments drawn from a seeded RNG, then checks the store against an uninterrupted run
 * of the same spec made in the same invocation. A moment is "the next such event, then a random few milliseconds":
 * the harness waits on the coordinator's and the agents' own log lines (round opened, task delivered, update
 * accepted, SecAgg+ stage answered, round committed, result queued), so the damage lands at varied points of a
 * round and ordering never rests on a sleep.
 *
 *   coordinator-kills         SIGKILL the coordinator again and again (≥ 20 in the full run), restart it on the same store
 *   coordinator-kills-secagg  the same under SecAgg+ (kills after masked inputs and unmask answers too)
 *   agent-kills               SIGKILL site agents (after delivery: training; after "uploading": result queued; at random)
 *   agent-kills-dp            the same in a DP-SGD study at ε = 1 over all rounds: a task charged twice exhausts the budget
 *   agent-kills-dp-secagg     DP-SGD under SecAgg+, as `setu demo --dp-epsilon 1` runs it
 *   coordinator-down          SIGKILL the coordinator while a round is open and keep it down past that round's deadline
 *   network                   the chaos proxy between agents and coordinator resets connections, refuses them, stalls them
 */
import type { StudySpec } from '../../protocol/api.js';
import { createRng, type Xoshiro128 } from '../../learning/rng.js';
import { DP_SGD_LR, heartStudySpec } from '../demo.js';
import { Federation, SITES } from './federation.js';
import { isRequest, type Line } from './lines.js';
import { checkCompleted, checkDigests, checkPrivacy, checkUpdates, checkUsage, openRoundDeadline, readStudy, type Check, type StudyRecord } from './checks.js';

export const SCENARIOS = ['coordinator-kills', 'coordinator-kills-secagg', 'agent-kills', 'agent-kills-dp', 'agent-kills-dp-secagg', 'coordinator-down', 'network'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export const DESCRIPTIONS: Record<ScenarioName, string> = {
  'coordinator-kills': 'SIGKILL the coordinator at random moments, restart it on the same store',
  'coordinator-kills-secagg': 'the same in a SecAgg+ study (also after masked inputs and unmask answers)',
  'agent-kills': 'SIGKILL site agents at random moments (training, result queued), restart them',
  'agent-kills-dp': 'SIGKILL site agents in a DP-SGD study (ε = 1 over all rounds)',
  'agent-kills-dp-secagg': 'SIGKILL site agents in a DP-SGD study under SecAgg+ (the demo\'s privacy)',
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

export interface BaselineSummary {
  kind: BaselineKind;
  rounds: number;
  wallSeconds: number;
  finalDigest: string | null;
}

export interface ChaosReport {
  seed: number;
  quick: boolean;
  store: 'sqlite' | 'postgres';
  baselines: BaselineSummary[];
  scenarios: ScenarioResult[];
  ok: boolean;
}

/** How much of each damage a run does. */
export interface Sizes {
  rounds: number;
  coordinatorKills: number;
  secaggCoordinatorKills: number;
  agentKills: number;
  dpRounds: number;
  dpAgentKills: number;
  outages: number;
  roundTimeoutSeconds: number;
  networkFaults: number;
  /** Longest a scenario's study may take before it counts as stuck. */
  studyTimeoutMs: number;
}

export const FULL: Sizes = { rounds: 30, coordinatorKills: 24, secaggCoordinatorKills: 10, agentKills: 12, dpRounds: 30, dpAgentKills: 12, outages: 2, roundTimeoutSeconds: 10, networkFaults: 30, studyTimeoutMs: 20 * 60_000 };
export const QUICK: Sizes = { rounds: 12, coordinatorKills: 3, secaggCoordinatorKills: 2, agentKills: 3, dpRounds: 12, dpAgentKills: 3, outages: 1, roundTimeoutSeconds: 12, networkFaults: 6, studyTimeoutMs: 4 * 60_000 };
/** The issue's bar: at least 20 coordinator kills in one study in the full run. */
export const MIN_FULL_COORDINATOR_KILLS = 20;

/** The plain study: the demo's FLamby protocol. The deadline does not enter training, so one baseline serves all. */
export function plainSpec(seed: number, rounds: number, roundTimeoutSeconds = 120): StudySpec {
  return { ...heartStudySpec(seed, rounds), name: 'chaos', roundTimeoutSeconds };
}

/** The plain study under SecAgg+ (its sum is quantised, so its model is its own: it has its own baseline). */
export function secaggSpec(seed: number, rounds: number): StudySpec {
  return { ...plainSpec(seed, rounds), privacy: { secagg: {} } };
}

/** Sample-level DP-SGD at ε = 1, δ = 1e-3 over the whole study (σ planned so that all rounds just fit). */
export function dpSpec(seed: number, rounds: number, secagg = false): StudySpec {
  // Under SecAgg+ the keys stage stays open until three stage timeouts before the round's deadline: 300 s leaves a
  // restarted agent (process start, enrolment read, DP-SGD training) 210 s to send its keys on a loaded machine,
  // and a round that lost sites between stages time to start again. Rounds close as soon as every site answered.
  const s = plainSpec(seed, rounds, secagg ? 300 : 120);
  s.privacy = { dp: { level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 }, ...(secagg ? { secagg: {} } : {}) } as StudySpec['privacy'];
  s.fit = { ...s.fit, optimizer: { ...s.fit.optimizer, lr: DP_SGD_LR } };
  return s;
}
/** Each site caps its spend on the study at the study's own target, as the demo's hospitals do. */
const DP_SITE_BUDGET = { privacy: { budget: { epsilon: 1, delta: 1e-3 } } };

// ---- moments ----------------------------------------------------------------------------------------------------

const roundOpened = (l: Line) => /round \d+ \(\w+\) opened/.test(l.msg);
const roundCommitted = (l: Line) => /round \d+ committed/.test(l.msg);
const taskDelivered = (site?: string) => (l: Line) => isRequest(l, '/v1/agent/task', 200, site);
const updateAccepted = (l: Line) => isRequest(l, '/v1/agent/tasks/:id/result', 200);
const resultQueued = (l: Line) => /: fit done in \d+ ms; uploading/.test(l.msg);
const maskedAccepted = (l: Line) => isRequest(l, '/v1/agent/secagg/:taskId/masked', 200);
const unmaskAccepted = (l: Line) => isRequest(l, '/v1/agent/secagg/:taskId/unmask', 200);
const maskedSent = (l: Line) => /SecAgg\+ masked input sent/.test(l.msg);

const pick = <T>(rng: Xoshiro128, xs: readonly T[]): T => xs[rng.nextInt(xs.length)]!;

/**
 * A random wait: how far past an event the damage lands (randomness of the moment, not ordering); never longer
 * than a round, so that damage planned for a study lands in it however fast its rounds run.
 */
const jitter = (rng: Xoshiro128, f: Federation, maxMs: number) => new Promise((r) => setTimeout(r, Math.floor(rng.next() * Math.min(maxMs, f.roundMs))));

/**
 * A random moment of the running study: a random point within the next round, as long as the last round took.
 * (A random span of wall time, as this was, let a study whose rounds got faster end before its damage was done:
 * 1.5 s is seven quick rounds.) False when the study ended first.
 */
async function randomMoment(f: Federation, rng: Xoshiro128): Promise<boolean> {
  if (!(await f.coordinatorLines.next(roundOpened, { ...EVENT_TIMEOUT, signal: f.done }))) return false;
  await jitter(rng, f, Infinity);
  return true;
}

interface Damage {
  coordinatorKills: number;
  agentKills: number;
  networkFaults: number;
  downPastDeadlineMs: number;
}

const EVENT_TIMEOUT = { timeoutMs: 120_000 };

/** Kills the coordinator on a random event of the running study, `n` times, restarting it each time. */
async function coordinatorKills(f: Federation, d: Damage, rng: Xoshiro128, n: number, secagg: boolean, say: (m: string) => void): Promise<void> {
  const moments = { opened: roundOpened, delivered: taskDelivered(), accepted: updateAccepted, committed: roundCommitted, masked: maskedAccepted, unmasked: unmaskAccepted } as const;
  const kinds = ['opened', 'delivered', secagg ? 'masked' : 'accepted', ...(secagg ? ['unmasked' as const] : []), 'committed', 'any'] as const;
  while (d.coordinatorKills < n && !f.done.aborted) {
    const kind = pick(rng, kinds);
    if (kind === 'any') {
      if (!(await randomMoment(f, rng))) break;
    } else if (!(await f.coordinatorLines.next(moments[kind], { ...EVENT_TIMEOUT, signal: f.done }))) break;
    await jitter(rng, f, 250);
    if (f.done.aborted) break;
    await f.killCoordinator();
    d.coordinatorKills++;
    say(`coordinator SIGKILL ${d.coordinatorKills}/${n} (${kind === 'any' ? 'at a random time' : `after a round event: ${kind}`})`);
    await f.restartCoordinator();
  }
}

/** Kills a random agent on one of its own events (task delivered, result queued) or at random, `n` times. */
async function agentKills(f: Federation, d: Damage, rng: Xoshiro128, n: number, secagg: boolean, say: (m: string) => void): Promise<void> {
  const kinds = ['delivered', 'queued', ...(secagg ? ['masked' as const] : []), 'any'] as const;
  while (d.agentKills < n && !f.done.aborted) {
    const victim = rng.nextInt(SITES);
    const kind = pick(rng, kinds);
    if (kind === 'any') {
      if (!(await randomMoment(f, rng))) break;
    } else {
      const l = kind === 'delivered'
        ? await f.coordinatorLines.next(taskDelivered(f.siteIds[victim]), { ...EVENT_TIMEOUT, signal: f.done })
        : await f.siteLines[victim]!.next(kind === 'queued' ? resultQueued : maskedSent, { ...EVENT_TIMEOUT, signal: f.done });
      if (!l) break;
    }
    // Right after delivery the agent is training; right after "uploading" its result is queued but maybe not sent.
    await jitter(rng, f, kind === 'queued' ? 30 : 200);
    if (f.done.aborted) break;
    await f.killSite(victim);
    d.agentKills++;
    say(`agent hospital-${victim} SIGKILL ${d.agentKills}/${n} (${{ any: 'at a random time', delivered: 'after its task was delivered', queued: 'after it queued its result', masked: 'after it sent its masked input' }[kind]})`);
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
    await jitter(rng, f, 200);
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
  record: StudyRecord;
  wallSeconds: number;
  damage: Damage;
  restarts: number;
  /** Why the study did not end (stuck, or a process that did not come back). */
  stuck: string | undefined;
  dir: string;
}

interface Setup {
  proxy?: boolean;
  siteExtra?: Record<string, unknown>;
}

async function runStudy(o: ChaosOptions, spec: StudySpec, setup: Setup, timeoutMs: number, drive: (f: Federation, d: Damage) => Promise<void>): Promise<Run> {
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
    const stuck = broke ?? (final ? undefined : `the study did not end within ${Math.round(timeoutMs / 1000)} s (at round ${record.round})`);
    return { record, wallSeconds, damage, restarts: f.coordinatorRestarts + f.siteRestarts, stuck, dir: f.dir };
  } finally {
    await f.close();
  }
}

export type BaselineKind = 'plain' | 'secagg';
export interface Baseline {
  summary: BaselineSummary;
  record: StudyRecord;
}

/** An uninterrupted run of the study the scenarios of `kind` damage. */
export async function runBaseline(o: ChaosOptions, kind: BaselineKind): Promise<Baseline> {
  const sizes = o.quick ? QUICK : FULL;
  const spec = kind === 'plain' ? plainSpec(o.seed, sizes.rounds) : secaggSpec(o.seed, sizes.rounds);
  const run = await runStudy(o, spec, {}, sizes.studyTimeoutMs, async () => {});
  const r = run.record;
  if (r.status !== 'completed') throw new Error(`the uninterrupted ${kind} baseline did not complete (${r.status}${r.error ? `: ${r.error}` : ''}${run.stuck ? `; ${run.stuck}` : ''}): nothing to compare with`);
  return { record: r, summary: { kind, rounds: sizes.rounds, wallSeconds: run.wallSeconds, finalDigest: r.versions.get(sizes.rounds) ?? null } };
}

interface ScenarioDef {
  /** The uninterrupted run whose model this one must end with (none: DP noise is fresh randomness). */
  baseline: BaselineKind | undefined;
  dp: boolean;
  rounds: (z: Sizes) => number;
  spec: (seed: number, z: Sizes) => StudySpec;
  setup?: Setup;
  /** The least damage that makes the run count, and how much was done. */
  planned: (z: Sizes, quick: boolean) => { what: string; min: number; got: (d: Damage) => number };
  drive: (f: Federation, d: Damage, rng: Xoshiro128, z: Sizes, say: (m: string) => void) => Promise<void>;
}

const kills = (what: string, min: number, got: (d: Damage) => number) => ({ what, min, got });

export const DEFS: Record<ScenarioName, ScenarioDef> = {
  'coordinator-kills': {
    baseline: 'plain', dp: false, rounds: (z) => z.rounds, spec: (s, z) => plainSpec(s, z.rounds),
    planned: (z, quick) => kills('coordinator kills', quick ? z.coordinatorKills : MIN_FULL_COORDINATOR_KILLS, (d) => d.coordinatorKills),
    drive: (f, d, rng, z, say) => coordinatorKills(f, d, rng, z.coordinatorKills, false, say),
  },
  'coordinator-kills-secagg': {
    baseline: 'secagg', dp: false, rounds: (z) => z.rounds, spec: (s, z) => secaggSpec(s, z.rounds),
    planned: (z) => kills('coordinator kills', z.secaggCoordinatorKills, (d) => d.coordinatorKills),
    drive: (f, d, rng, z, say) => coordinatorKills(f, d, rng, z.secaggCoordinatorKills, true, say),
  },
  'agent-kills': {
    baseline: 'plain', dp: false, rounds: (z) => z.rounds, spec: (s, z) => plainSpec(s, z.rounds),
    planned: (z) => kills('agent kills', z.agentKills, (d) => d.agentKills),
    drive: (f, d, rng, z, say) => agentKills(f, d, rng, z.agentKills, false, say),
  },
  'agent-kills-dp': {
    baseline: undefined, dp: true, rounds: (z) => z.dpRounds, spec: (s, z) => dpSpec(s, z.dpRounds), setup: { siteExtra: DP_SITE_BUDGET },
    planned: (z) => kills('agent kills', z.dpAgentKills, (d) => d.agentKills),
    drive: (f, d, rng, z, say) => agentKills(f, d, rng, z.dpAgentKills, false, say),
  },
  'agent-kills-dp-secagg': {
    baseline: undefined, dp: true, rounds: (z) => z.dpRounds, spec: (s, z) => dpSpec(s, z.dpRounds, true), setup: { siteExtra: DP_SITE_BUDGET },
    planned: (z) => kills('agent kills', z.dpAgentKills, (d) => d.agentKills),
    drive: (f, d, rng, z, say) => agentKills(f, d, rng, z.dpAgentKills, true, say),
  },
  'coordinator-down': {
    baseline: 'plain', dp: false, rounds: (z) => z.rounds, spec: (s, z) => plainSpec(s, z.rounds, z.roundTimeoutSeconds),
    planned: (z) => kills('outages past a deadline', z.outages, (d) => (d.downPastDeadlineMs > 0 ? d.coordinatorKills : 0)),
    drive: (f, d, rng, z, say) => coordinatorDown(f, d, rng, z.outages, z.rounds, say),
  },
  network: {
    baseline: 'plain', dp: false, rounds: (z) => z.rounds, spec: (s, z) => plainSpec(s, z.rounds), setup: { proxy: true },
    planned: (z) => kills('network faults', z.networkFaults, (d) => d.networkFaults),
    drive: (f, d, rng, z, say) => networkFaults(f, d, rng, z.networkFaults, say),
  },
};

/** Runs one scenario's study under its damage and checks it (against `baseline`, which must be DEFS[name].baseline's). */
export async function runScenario(o: ChaosOptions, name: ScenarioName, baseline: Baseline | undefined): Promise<ScenarioResult> {
  const z = o.quick ? QUICK : FULL;
  const def = DEFS[name];
  if (def.baseline && baseline?.summary.kind !== def.baseline) throw new Error(`scenario ${name} needs the ${def.baseline} baseline`);
  const say = (m: string) => o.progress?.(`${name}: ${m}`);
  const rng = createRng(o.seed, 'chaos', name);
  const rounds = def.rounds(z);
  const planned = def.planned(z, o.quick);
  const run = await runStudy(o, def.spec(o.seed, z), def.setup ?? {}, z.studyTimeoutMs, (f, d) => def.drive(f, d, rng, z, say));
  const r = run.record;
  const got = planned.got(run.damage);
  const checks: Check[] = [
    run.stuck ? { name: 'completed', ok: false, detail: run.stuck } : checkCompleted(r, rounds),
    got >= planned.min
      ? { name: 'chaos', ok: true, detail: `${got} ${planned.what} (at least ${planned.min} planned)` }
      : { name: 'chaos', ok: false, detail: `only ${got} ${planned.what} before the study ended; at least ${planned.min} were needed` },
    checkDigests(r, baseline?.record, 'n/a: DP-SGD noise is fresh randomness, so no two runs share a model'),
    checkUpdates(r, baseline?.record),
    checkPrivacy(r, def.dp),
    checkUsage(r),
  ];
  return {
    scenario: name, description: DESCRIPTIONS[name],
    kills: { coordinator: run.damage.coordinatorKills, agents: run.damage.agentKills, network: run.damage.networkFaults },
    restarts: run.restarts, downPastDeadlineSeconds: run.damage.downPastDeadlineMs / 1000, wallSeconds: run.wallSeconds, rounds,
    status: r.status, checks, ok: checks.every((c) => c.ok !== false), ...(o.keep ? { dir: run.dir } : {}),
  };
}

/** Every chosen scenario, each baseline it needs run once first. */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const say = o.progress ?? (() => {});
  const chosen = o.scenarios ?? [...SCENARIOS];
  const baselines = new Map<BaselineKind, Baseline>();
  for (const kind of ['plain', 'secagg'] as const) {
    if (!chosen.some((s) => DEFS[s].baseline === kind)) continue;
    say(`baseline ${kind}: an uninterrupted run`);
    const b = await runBaseline(o, kind);
    baselines.set(kind, b);
    say(`baseline ${kind}: completed ${b.summary.rounds} rounds in ${b.summary.wallSeconds.toFixed(1)} s, final model ${b.summary.finalDigest?.slice(0, 12)}`);
  }
  const results: ScenarioResult[] = [];
  for (const name of chosen) {
    say(`${name}: ${DESCRIPTIONS[name]}`);
    const def = DEFS[name];
    const res = await runScenario(o, name, def.baseline ? baselines.get(def.baseline) : undefined);
    say(`${name}: ${res.ok ? 'ok' : `FAILED: ${res.checks.filter((c) => c.ok === false).map((c) => `${c.name}: ${c.detail}`).join('; ')}`}`);
    results.push(res);
  }
  return {
    seed: o.seed, quick: o.quick, store: o.pgBase ? 'postgres' : 'sqlite',
    baselines: [...baselines.values()].map((b) => b.summary), scenarios: results, ok: results.every((x) => x.ok),
  };
}
