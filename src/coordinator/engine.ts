/**
 * The round engine: drives every running study through its rounds with its strategy.
 *
 * Everything it decides is written to the store before anyone acts on it, and every step re-reads
 * the store, so a coordinator killed at any point resumes from the last committed step, and several
 * coordinator processes sharing one PostgreSQL can run engines side by side: each study is driven
 * only by the instance holding its lease.
 *
 * Round r (1..R) is a fit round; round R+1 is an evaluate round of the final model. A fit task also
 * evaluates the incoming global model on the site's test split, so per-round metrics cost no extra trip.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Store, StudyRow, TaskRow, UpdateRow } from '../store/store.js';
import { StoreConflict } from '../store/store.js';
import { backoffMs, classifyFault, type BackoffOptions } from './faults.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { engineRetries } from '../observability/metrics.js';
import type { EventBus } from './events.js';
import type { StudySpec, ResultMeta } from '../protocol/api.js';
import { AGENT_MAX_RETRY_DELAY_MS } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import type { Weights } from '../protocol/tensors.js';
import { createModel } from '../learning/models/registry.js';
import { createRng } from '../learning/rng.js';
import { torchLinearInit } from '../learning/torch-init.js';
import { linearCoxTorchInit } from '../learning/models/cox.js';
import { combineSums, statsFromSums } from '../learning/federated-stats.js';
import { hostStrategy, type FitResultIn, type HostedStrategy } from './strategy-host.js';
import { aggregateRound, aggregationPath, resultsOf } from './fit-aggregate.js';
import { blobSource } from './stream-aggregate.js';
import { commitTransitions, eligibleParticipants, loadLifecycle } from '../governance/study-governance.js';
import { complete as lifecycleComplete, stop as lifecycleStop } from '../governance/lifecycle.js';
import { ensureModelCard } from '../governance/model-card.js';
import { appendAudit, appendAuditBatch, type AuditKey } from '../governance/audit-store.js';
import { DEFAULT_STAGE_TIMEOUT_S, SecAggSessions, maskedLength, newSession, restartRound, secAggPlus, type SecAggSession } from './secagg.js';
import { clientLevelDp } from './privacy.js';
import type { RoundRow } from '../store/store.js';
import { aggregatePart, rulesOf } from './study-model.js';
import { driveAnalyticsRound, openAnalyticsRound } from './analytics-rounds.js';
import type { DriverContext } from './driver-context.js';
import { decideFromProgress, secaggShortfall, stopStudy, type RoundCloseDeps } from './round-close.js';
import { driveAsyncRound, openAsyncRound } from './async-rounds.js';

export interface EngineOptions {
  /**
   * This coordinator's stable identity (start.ts keeps it in the data directory): a coordinator restarted on
   * the same data directory holds its predecessor's leases at once instead of waiting them out.
   */
  instanceId?: string;
  tickMs?: number;
  leaseMs?: number;
  /**
   * A study nobody drove for longer than this (the coordinator was down, the store was unreachable, the
   * process was stopped) has its open round's deadline moved out by the time it lost (default: 4 ticks, at
   * least 3 s): the sites are not blamed for the coordinator's downtime.
   */
  gapMs?: number;
  /**
   * Given to an open round on top of the time it lost (default: the agents' longest retry delay): the sites
   * learn that the coordinator is back only at their next try.
   */
  reconnectGraceMs?: number;
  /** Backoff of retries after transient faults (faults.ts). */
  retry?: BackoffOptions;
  now?: () => number;
  /** The engine's progress lines (round opened, committed, …). */
  log?: (msg: string) => void;
  /** Structured log of faults and retries (default: silent). Lines carry `study` and `attempt`. */
  logger?: Logger;
  /** Signs the audit entries of issued tasks and committed aggregates (written in the same transaction). */
  audit?: AuditKey;
}

export const DEFAULT_ROUND_TIMEOUT_S = 600;

/** Task states that may still bring a result (a restarted SecAgg+ round issues these again). */
const LIVE_TASK = ['issued', 'delivered', 'done'];

/** Where a study's federated normalisation statistics are kept. */
export const normStatsKey = (studyId: string) => `study:${studyId}:normstats`;
/** When a study was last driven by any coordinator (ms): what downtime is measured from. */
export const drivenAtKey = (studyId: string) => `study:${studyId}:driven_at`;

export function studySeed(spec: StudySpec): number {
  return spec.seed ?? 42;
}

export function digestHex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * Initial global model of a study over a built-in family, deterministic in its seed. A logistic or linear Cox model
 * starts exactly where PyTorch's `torch.manual_seed(seed); nn.Linear(d, 1)` starts (see learning/torch-init.ts), so
 * a study can be compared seed by seed with a PyTorch reference such as FLamby's. (A custom model has no built-in
 * initialisation: its study lead uploads its initial weights.)
 */
export function initialWeights(spec: StudySpec): Weights {
  const seed = studySeed(spec);
  if (spec.model.kind === 'logistic') return torchLinearInit(seed, spec.model.inputDim);
  if (spec.model.kind === 'cox' && !spec.model.hidden?.length) return linearCoxTorchInit(seed, spec.model.inputDim);
  return createModel(spec.model).init(createRng(seed, 'init'));
}

/** What this process knows about driving one study: when it last did, and its retries after transient faults. */
interface Driving {
  /** When a drive of the study by this process last completed (absent: not since it claimed it; read the store's record). */
  lastDrivenAt?: number;
  /** When the store's record of the last drive was written by this process. */
  persistedAt?: number;
  attempts: number;
  notBefore: number;
}

export class RoundEngine {
  readonly instanceId: string;
  /** SecAgg+ sessions of the open rounds of studies with privacy.secagg (in memory: see secagg.ts). */
  readonly secagg = new SecAggSessions();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = false;
  private readonly now: () => number;
  private readonly log: (msg: string) => void;
  private readonly logger: Logger;
  private readonly driving = new Map<string, Driving>();
  private tickFaults = 0;
  private offPeers: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly bus: EventBus,
    private readonly opts: EngineOptions = {},
  ) {
    this.instanceId = opts.instanceId ?? `coord-${randomBytes(4).toString('hex')}`;
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? (() => {});
    this.logger = (opts.logger ?? createLogger({ level: 'silent' })).child({ instance: this.instanceId });
  }

  private get tickMs(): number {
    return this.opts.tickMs ?? 500;
  }

  private get gapMs(): number {
    return this.opts.gapMs ?? Math.max(4 * this.tickMs, 3000);
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.tickMs);
    // Another coordinator on the database received what a round here waits for (roundReady there).
    this.offPeers ??= this.store.peers?.subscribe((s) => {
      if (s.kind === 'drive') this.kick();
    });
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.offPeers?.();
    this.offPeers = undefined;
    if (this.timer) clearInterval(this.timer);
    while (this.running) await new Promise((r) => setTimeout(r, 10));
  }

  /**
   * Something a study's open round waits for has happened here (its last result, a SecAgg+ stage, a task error):
   * a tick now, and one at the other coordinators on the database, since the study may be driven by one of them
   * (without the signal it saw the round complete at its next tick, up to tickMs later).
   */
  roundReady(studyId: string): void {
    this.kick();
    this.store.peers?.publish({ kind: 'drive', studyId });
  }

  /** Runs a tick now, or right after the one in progress. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.tick()
      .catch((e) => this.tickFailed(e))
      .finally(() => {
        this.running = false;
        if (this.again && !this.stopped) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** A tick that could not even list the running studies: the next tick tries again (the interval is the backoff). */
  private tickFailed(e: unknown): void {
    const f = classifyFault(e);
    if (f.transient) {
      this.tickFaults++;
      engineRetries.inc({ reason: f.reason });
      this.logger.warn({ err: e, reason: f.reason, attempt: this.tickFaults }, 'engine tick: the store is unavailable; retrying on the next tick');
    } else {
      this.logger.error({ err: e }, 'engine tick failed');
      this.log(`engine tick failed: ${(e as Error).stack ?? e}`);
    }
  }

  async tick(): Promise<void> {
    const studies = await this.store.listStudiesByStatus('running');
    this.tickFaults = 0;
    for (const study of studies) {
      if (this.stopped) return;
      const d = this.driving.get(study.id) ?? { attempts: 0, notBefore: 0 };
      this.driving.set(study.id, d);
      if (this.now() < d.notBefore) continue;
      try {
        if (!(await this.store.claimStudy(study.id, this.instanceId, this.now(), this.opts.leaseMs ?? 10_000))) {
          // Another coordinator drives it; if this one claims it later, it measures downtime from the store's record.
          this.driving.delete(study.id);
          continue;
        }
        await this.catchUp(study, d);
        await this.drive(study);
        await this.driven(study, d);
        if (d.attempts > 0) this.logger.info({ study: study.id, attempts: d.attempts }, 'study driven again after transient faults');
        d.attempts = 0;
      } catch (e) {
        if (e instanceof StoreConflict) continue; // another instance moved first; re-read next tick
        const f = classifyFault(e);
        if (f.transient) {
          this.retryLater(study.id, d, f.reason, e);
          continue;
        }
        this.logger.error({ study: study.id, err: e }, 'study failed');
        this.log(`study ${study.id}: ${(e as Error).stack ?? e}`);
        try {
          await this.fail(study, f.reason);
        } catch (e2) {
          // The failure itself could not be written: the next tick meets the same fault and tries again.
          const f2 = classifyFault(e2);
          if (f2.transient) this.retryLater(study.id, d, f2.reason, e2);
          else this.logger.error({ study: study.id, err: e2 }, 'could not record the study\'s failure');
        }
      }
    }
    // Studies that stopped running need no retry state.
    const running = new Set(studies.map((s) => s.id));
    for (const id of this.driving.keys()) if (!running.has(id)) this.driving.delete(id);
  }

  /** A transient fault: wait (capped exponential backoff with jitter), count it, say so; the study stays running. */
  private retryLater(studyId: string, d: Driving, reason: string, e: unknown): void {
    d.attempts++;
    const wait = backoffMs(d.attempts, this.opts.retry);
    d.notBefore = this.now() + wait;
    engineRetries.inc({ reason });
    this.logger.warn({ study: studyId, attempt: d.attempts, reason, retryInMs: wait, err: e }, 'transient fault while driving a study; retrying');
  }

  /**
   * Downtime is not the sites' fault. When no drive of the study completed for longer than gapMs (this
   * coordinator was down, the store was unreachable, the lease passed from a dead coordinator to this one), the
   * open round's deadline moves out by the time lost, and the record of the last drive with it, in one
   * transaction (so the same time is never given back twice).
   */
  private async catchUp(study: StudyRow, d: Driving): Promise<void> {
    const now = this.now();
    let last = d.lastDrivenAt;
    if (last === undefined) {
      const saved = Number(await this.store.getKv(drivenAtKey(study.id)));
      if (Number.isFinite(saved) && saved > 0) last = saved;
    }
    if (last === undefined || now - last <= this.gapMs) return;
    const open = await this.store.openRoundOf(study.id);
    // Only the part of the gap after the round opened was lost to it.
    const lost = open ? now - Math.max(last, open.opened_at) : 0;
    if (!open || lost <= 0) return;
    const given = lost + (this.opts.reconnectGraceMs ?? AGENT_MAX_RETRY_DELAY_MS);
    await this.store.transaction(async (tx) => {
      await tx.extendOpenRound(study.id, open.round, given);
      await tx.setKv(drivenAtKey(study.id), String(now));
    });
    d.lastDrivenAt = d.persistedAt = now;
    this.secagg.get(study.id, open.round)?.extend(given);
    this.logger.warn({ study: study.id, round: open.round, lostMs: lost, givenMs: given }, 'nobody drove this study for a while; its round deadline moves out by the time lost and the sites\' reconnect grace');
    this.log(`study ${study.id}: not driven for ${Math.round(lost / 1000)} s; round ${open.round}'s deadline moves out by ${Math.round(given / 1000)} s (with the sites' reconnect grace)`);
  }

  /**
   * Notes a completed drive. The store's record is refreshed about once a second, not every tick: a later gap
   * is then measured at most that much too long, in the sites' favour.
   */
  private async driven(study: StudyRow, d: Driving): Promise<void> {
    const now = this.now();
    d.lastDrivenAt = now;
    if (d.persistedAt !== undefined && now - d.persistedAt < Math.min(1000, this.gapMs / 2)) return;
    await this.store.setKv(drivenAtKey(study.id), String(now));
    d.persistedAt = now;
  }

  private async fail(study: StudyRow, message: string): Promise<void> {
    const now = this.now();
    try {
      await this.store.transaction(async (tx) => {
        await tx.transitionStudy(study.id, ['running'], 'failed', now, { error: message });
        // The lifecycle ends too (stopped, with the failure as its reason), audited like any other transition.
        const cur = await loadLifecycle(tx, study.id);
        if (cur?.state === 'running') await commitTransitions(tx, { store: this.store, audit: this.opts.audit }, cur, [lifecycleStop(cur, `failed: ${message}`, { by: 'coordinator', at: now })]);
        else if (this.opts.audit) await appendAudit(tx, this.opts.audit, { ts: now, actor: 'coordinator', kind: 'study.stopped', subject: study.id, data: { reason: `failed: ${message}`, from: 'running' } });
      });
    } catch (e) {
      if (e instanceof StoreConflict) return; // already moved (stopped, completed, or failed by another coordinator)
      throw e;
    }
    this.logger.warn({ study: study.id, reason: message }, 'study failed');
    this.bus.emit({ type: 'study.status', studyId: study.id, status: 'failed', error: message });
  }

  private async drive(study: StudyRow): Promise<void> {
    const spec = JSON.parse(study.spec) as StudySpec;
    const open = await this.store.openRoundOf(study.id);
    if (!open) {
      // A study over CSV data first checks every site's file against its schema (round 0).
      if (spec.dataSchema && !(await this.store.getRound(study.id, 0))) return this.openRound(study, spec, 0, 'prepare');
      if (spec.analytics) return openAnalyticsRound(this.driverContext(), study, spec);
      if (spec.async && study.current_round < spec.rounds) return openAsyncRound(this.driverContext(), study, spec);
      const next = study.current_round + 1;
      if (next <= spec.rounds) await this.openRound(study, spec, next, 'fit');
      else await this.openRound(study, spec, spec.rounds + 1, 'evaluate');
      return;
    }
    if (open.kind === 'analytics') return driveAnalyticsRound(this.driverContext(), study, spec, open);
    if (open.kind === 'async') return driveAsyncRound(this.driverContext(), study, spec, open);
    if (open.kind === 'fit' && spec.privacy?.secagg) return this.driveSecAgg(study, spec, open, await this.store.listTasks(study.id, open.round), await this.store.listUpdates(study.id, open.round));
    // Closes as soon as every site has answered (result, refusal or task error), honouring minSites (round-close.ts).
    // From counts: the round's rows (the updates with their weights) are read once, to commit.
    const decision = await decideFromProgress(this.closeDeps(), spec, open, await this.store.roundProgress(study.id, open.round), this.now());
    if (decision.action === 'commit') {
      const updates = await this.store.listUpdates(study.id, open.round);
      if (open.kind === 'fit') await this.commitFit(study, spec, open.round, updates);
      else if (open.kind === 'prepare') await this.commitPrepare(study, spec, updates);
      else await this.commitEvaluate(study, spec, open.round, updates);
      // The next round opens on a tick right after this one, not a whole tick interval later.
      this.again = true;
    } else if (decision.action === 'fail') {
      await this.fail(study, decision.reason);
    }
  }

  /** What an analytics study's rounds, and an asynchronous study's, need from the engine (analytics-rounds.ts, async-rounds.ts). */
  private driverContext(): DriverContext {
    return { store: this.store, bus: this.bus, now: this.now, log: this.log, defaultTimeoutS: DEFAULT_ROUND_TIMEOUT_S, ...(this.opts.audit ? { audit: this.opts.audit } : {}) };
  }

  private closeDeps(): RoundCloseDeps {
    return { store: this.store, bus: this.bus, ...(this.opts.audit ? { audit: this.opts.audit } : {}) };
  }

  private participants(study: StudyRow): string[] {
    return JSON.parse(study.participants ?? '[]') as string[];
  }

  private async openRound(study: StudyRow, spec: StudySpec, round: number, kind: 'fit' | 'evaluate' | 'prepare'): Promise<void> {
    const now = this.now();
    const global = await this.store.latestModelVersion(study.id);
    if (!global) throw new Error(`study ${study.id} has no model version`);
    // Only sites still eligible under the study's lifecycle (approved, not withdrawn, terms not lapsed) get a
    // task: a site that withdrew is dropped from the next round on.
    const sites = await eligibleParticipants(this.store, study.id, this.participants(study), now);
    if (sites.length === 0) throw new Error(`round ${round}: no participating site is still eligible (every site withdrew or its approval lapsed)`);
    // SecAgg+ with fewer than three would reveal updates: stop with a reason that says who left (round-close.ts).
    const short = kind === 'fit' ? await secaggShortfall(this.store, study, spec, sites, round) : null;
    if (short) return stopStudy(this.closeDeps(), study, short, now);
    // Whole milliseconds (roundTimeoutSeconds may be fractional; deadline_at is an integer column).
    const deadline = now + Math.round((spec.roundTimeoutSeconds ?? DEFAULT_ROUND_TIMEOUT_S) * 1000);
    let plan: { siteId: string; config: unknown }[];
    if (kind === 'fit') {
      const host = await this.strategyFor(study, spec);
      plan = host.configureFit(round, sites);
    } else {
      plan = sites.map((siteId) => ({ siteId, config: {} }));
    }
    const tasks: TaskRow[] = plan.map((p) => ({
      id: `${study.id}.r${round}.${p.siteId}`,
      study_id: study.id,
      round,
      site_id: p.siteId,
      kind,
      model_version_id: global.id,
      config: JSON.stringify(p.config),
      status: 'issued',
      created_at: now,
      deadline_at: deadline,
      delivered_at: null,
      done_at: null,
    }));
    const audit = this.opts.audit;
    await this.store.openRound(
      { study_id: study.id, round, status: 'open', kind, opened_at: now, deadline_at: deadline, committed_at: null, model_version_id: kind === 'evaluate' ? global.id : null },
      tasks,
      audit
        ? async (tx) => {
            // One take of the audit head for the round's tasks, not one per task.
            await appendAuditBatch(tx, audit, tasks.map((t) => ({ ts: now, actor: 'coordinator', kind: 'task.issued', subject: t.id, data: { study: study.id, round, kind, site: t.site_id, modelVersion: global.id, modelDigest: global.digest } })));
          }
        : undefined,
    );
    if (kind === 'fit' && spec.privacy?.secagg) {
      const row: RoundRow = { study_id: study.id, round, status: 'open', kind, opened_at: now, deadline_at: deadline, committed_at: null, model_version_id: null };
      this.secagg.put(await newSession(this.store, spec, row, tasks, await this.maskedLength(spec, global.digest), now));
    }
    this.log(`study ${study.id}: round ${round} (${kind}) opened for ${tasks.length} sites`);
    this.bus.emit({ type: 'round.opened', studyId: study.id, round, kind, sites: tasks.length });
    this.bus.emit({ type: 'tasks', siteIds: tasks.map((t) => t.site_id), taskIds: tasks.map((t) => t.id), tasks });
  }

  /**
   * The study's strategy as the round engine runs it: the hosted strategy with its saved state, wrapped in
   * client-level DP-FedAvg and SecAgg+ when the study asks for them (privacy.ts, secagg.ts), so that opening
   * and committing a round are the same code for every study.
   */
  private async strategyFor(study: StudyRow, spec: StudySpec): Promise<HostedStrategy> {
    const state = await this.store.latestStrategyState(study.id);
    let host = hostStrategy(spec, state ? { json: JSON.parse(state.json), tensors: state.tensors ? decodeSafetensors(state.tensors).weights : {} } : undefined);
    if (spec.privacy?.dp?.level === 'client') host = clientLevelDp(host, spec);
    if (spec.privacy?.secagg) host = secAggPlus(host, (round) => this.secagg.get(study.id, round));
    return host;
  }

  /**
   * A fit round under SecAgg+: the session (secagg.ts) moves through its stages on the agents' requests; this
   * feeds it the refusals, restarts a round this process has no session for, and commits the unmasked sum.
   * The session is dropped only once its outcome is written, so a transient fault while committing is retried
   * from the same finished session instead of restarting the round.
   */
  private async driveSecAgg(study: StudyRow, spec: StudySpec, open: RoundRow, tasks: TaskRow[], updates: UpdateRow[]): Promise<void> {
    const globalRow = await this.store.latestModelVersion(study.id);
    if (!globalRow) throw new Error('no global model');
    let session = this.secagg.get(study.id, open.round);
    if (!session) {
      session = await restartRound(this.store, spec, open, await this.maskedLength(spec, globalRow.digest), this.now());
      this.secagg.put(session);
      this.log(`study ${study.id}: round ${open.round} had no SecAgg+ session in this process (coordinator restarted); restarted it as ${session.id}`);
      this.bus.emit({ type: 'tasks', siteIds: tasks.map((t) => t.site_id), taskIds: tasks.map((t) => t.id) });
      return;
    }
    // Sites out of the round: those that refused, and those whose task closed without a result (refused,
    // expired, failed: anything but issued, delivered or done).
    const refused = (await this.store.listRefusals(study.id)).filter((r) => r.round === open.round && r.site_id).map((r) => r.site_id!);
    for (const t of tasks) if (!LIVE_TASK.includes(t.status)) refused.push(t.site_id);
    session.noteRefused(refused, this.now());
    if (session.stage === 'aborted') {
      if (await this.againBeforeDeadline(study, spec, open, tasks, globalRow.digest, session.error ?? 'aborted')) return;
      await this.fail(study, `round ${open.round}: ${session.error}`);
      await this.dropSecAgg(study.id, open.round);
      return;
    }
    if (session.stage === 'done') {
      const minResults = Math.min(spec.minSites ?? tasks.length, tasks.length);
      const done = session;
      const survivors = new Set(done.unmasking!.survivors.map((i) => done.siteOf[i]!));
      // Only sites whose masked input is in the sum count (an accepted row whose input missed the stage does not).
      const used = updates.filter((u) => survivors.has(u.site_id));
      this.log(`study ${study.id}: round ${open.round}: SecAgg+ summed ${survivors.size} sites (dropped after sharing: ${done.unmasking!.dropped.length}; recovered after masking: ${session.recoveredAfterMasking.length})`);
      try {
        if (used.length < minResults) {
          if (await this.againBeforeDeadline(study, spec, open, tasks, globalRow.digest, `summed ${used.length} of ${tasks.length} sites; at least ${minResults} needed`)) return;
          await this.fail(study, `round ${open.round}: SecAgg+ summed ${used.length} of ${tasks.length} sites; at least ${minResults} needed`);
        }
        else await this.commitFit(study, spec, open.round, used, done);
      } catch (e) {
        // Another coordinator closed the round first: this session has nothing left to do.
        if (e instanceof StoreConflict) await this.dropSecAgg(study.id, open.round);
        throw e;
      }
      await this.dropSecAgg(study.id, open.round);
      return;
    }
    if (this.now() > open.deadline_at) {
      await this.fail(study, `round ${open.round}: the SecAgg+ ${session.stage} stage had not completed by the deadline`);
      await this.dropSecAgg(study.id, open.round);
    }
  }

  /**
   * A SecAgg+ session that lost too many sites between its stages (an agent restarted, a connection cut) is a
   * passing fault while the round has time left: the round starts again as a new session, and the sites that had
   * trained send the update they kept for it (site/release.ts), so nothing is trained or spent twice. Only at the
   * round's deadline does the shortfall fail the study.
   */
  private async againBeforeDeadline(study: StudyRow, spec: StudySpec, open: RoundRow, tasks: TaskRow[], globalDigest: string, why: string): Promise<boolean> {
    // A new session needs its whole keys window (it closes 3 stage timeouts before the deadline) and the three
    // stages after it; with less time left a restart would abort at once, so the shortfall fails the study now.
    const stageMs = (spec.privacy?.secagg?.stageTimeoutSeconds ?? DEFAULT_STAGE_TIMEOUT_S) * 1000;
    if (this.now() + 4 * stageMs >= open.deadline_at) return false;
    await this.dropSecAgg(study.id, open.round);
    const session = await restartRound(this.store, spec, open, await this.maskedLength(spec, globalDigest), this.now());
    this.secagg.put(session);
    this.logger.warn({ study: study.id, round: open.round, reason: why, session: session.id }, 'SecAgg+ round lost sites between stages; starting it again before its deadline');
    this.log(`study ${study.id}: round ${open.round}: SecAgg+ ${why}; starting the round again as ${session.id} (deadline not reached)`);
    this.bus.emit({ type: 'tasks', siteIds: tasks.map((t) => t.site_id), taskIds: tasks.map((t) => t.id) });
    return true;
  }

  /** The values SecAgg+ masks for this model version (from its header: the model is not decoded). */
  private maskedLength(spec: StudySpec, digest: string): Promise<number> {
    return maskedLength(this.store.blobs, digest, (names) => rulesOf(spec, names));
  }

  /** Drops a round's SecAgg+ session and the blobs of its masked inputs (nothing reads them again). */
  private async dropSecAgg(studyId: string, round: number): Promise<void> {
    const s = this.secagg.get(studyId, round);
    this.secagg.drop(studyId, round);
    await s?.discardMasked(this.store.blobs);
  }

  private async commitFit(study: StudyRow, spec: StudySpec, round: number, updates: UpdateRow[], session?: SecAggSession): Promise<void> {
    const now = this.now();
    const globalRow = await this.store.latestModelVersion(study.id);
    if (!globalRow) throw new Error('no global model');
    const host = await this.strategyFor(study, spec);
    const results = resultsOf(updates);
    const asked = (await this.store.listTasks(study.id, round)).length;
    // Streamed from the update blobs into the new version's blob when the strategy is elementwise, else in memory
    // (fit-aggregate.ts). A masked update (SecAgg+) has no blob: its row carries only the site's metadata.
    const blobs = this.store.blobs;
    const sources = await Promise.all(updates.map(async (u) => ({ row: u, ...(u.digest !== null && u.size !== null ? { source: await blobSource(blobs, u.digest, u.size) } : {}) })));
    // SecAgg+: a plain mean is unmasked block by block from the masked blobs; any other strategy gets the sum in memory.
    if (session && !host.secaggMean) await session.materialise(blobs);
    const secagg = session && host.secaggMean ? { unmasking: session.unmasking!, masked: await session.maskedSources(blobs), ...(session.blockWords !== undefined ? { blockWords: session.blockWords } : {}) } : undefined;
    const fitRound = { spec, host, round, global: await blobSource(blobs, globalRow.digest), updates: sources, asked, metadata: { study: study.id, round: String(round) }, blobs, ...(secagg ? { secagg } : {}) };
    const path = aggregationPath(fitRound);
    const { digest, size } = await blobs.putStream(aggregateRound(fitRound));
    const state = host.getState();
    const metrics = fitMetrics(study.id, round, results);
    for (const m of host.roundMetrics?.(round) ?? []) metrics.push({ study_id: study.id, round, site_id: null, ...m });
    const isLast = round >= spec.rounds;
    const audit = this.opts.audit;
    await this.store.commitRound({
      studyId: study.id,
      round,
      now,
      ...(audit
        ? {
            inTx: async (tx) => {
              await appendAudit(tx, audit, {
                ts: now,
                actor: 'coordinator',
                kind: 'aggregate.committed',
                subject: `${study.id}.v${round}`,
                data: { study: study.id, round, digest, strategy: spec.strategy.name, updates: updates.map((u) => ({ site: u.site_id, digest: u.digest, numExamples: u.num_examples })) },
              });
            },
          }
        : {}),
      model: { id: `${study.id}.v${round}`, study_id: study.id, round, digest, size, created_at: now },
      metrics,
      strategyState: { study_id: study.id, round, json: JSON.stringify(state.json), tensors: Object.keys(state.tensors).length ? encodeSafetensors(state.tensors) : null },
      advanceTo: round,
    });
    const summary = Object.fromEntries(metrics.filter((m) => m.site_id === null).map((m) => [`${m.phase}.${m.name}`, m.value]));
    this.log(`study ${study.id}: round ${round} committed from ${updates.length} sites (aggregated ${path === 'stream' ? 'streamed from the blobs' : 'in memory'})${isLast ? ' (last fit round)' : ''}`);
    this.bus.emit({ type: 'round.committed', studyId: study.id, round, kind: 'fit', metrics: summary });
  }

  /**
   * Round 0 of a study over CSV data: every site has checked its file against the study's schema.
   * Any mismatch fails the study with one message naming each site and column; otherwise, for
   * global normalisation, the sites' column sums become the statistics every later task carries.
   */
  private async commitPrepare(study: StudyRow, spec: StudySpec, updates: UpdateRow[]): Promise<void> {
    const now = this.now();
    const reports = await Promise.all(
      updates.map(async (u) => ({ site: (await this.store.getSite(u.site_id))?.name ?? u.site_id, report: (JSON.parse(u.metrics) as ResultMeta).prepare })),
    );
    const problems = reports.flatMap(({ site, report }) =>
      // Each problem's message names its column already.
      report ? report.problems.map((p) => `site ${site}: ${p.message}`) : [`site ${site}: sent no schema check`],
    );
    if (problems.length) {
      await this.store.commitRound({ studyId: study.id, round: 0, now, metrics: [] });
      await this.fail(study, `the study cannot start: its data schema does not match every site's file: ${problems.join('; ')}`);
      return;
    }
    let stats: string | undefined;
    if (spec.dataSchema?.preprocessing?.normalise === 'global') {
      const sums = reports.map(({ site, report }) => {
        if (!report?.sums) throw new Error(`site ${site} sent no column sums for global normalisation`);
        return report.sums;
      });
      stats = JSON.stringify(statsFromSums(combineSums(sums)));
    }
    await this.store.commitRound({
      studyId: study.id,
      round: 0,
      now,
      metrics: [{ study_id: study.id, round: 0, site_id: null, phase: 'prepare', name: 'examples', value: updates.reduce((a, u) => a + u.num_examples, 0) }],
      ...(stats ? { inTx: (tx) => tx.setKv(normStatsKey(study.id), stats!) } : {}),
    });
    this.log(`study ${study.id}: every site's data matches the schema`);
    this.bus.emit({ type: 'round.committed', studyId: study.id, round: 0, kind: 'prepare', metrics: {} });
  }

  private async commitEvaluate(study: StudyRow, spec: StudySpec, round: number, updates: UpdateRow[]): Promise<void> {
    const now = this.now();
    const results = updates.map((u) => ({ siteId: u.site_id, numExamples: u.num_examples, meta: JSON.parse(u.metrics) as ResultMeta }));
    const metrics = evalMetricRows(study.id, spec.rounds, results);
    const audit = this.opts.audit;
    await this.store.commitRound({
      studyId: study.id, round, now, metrics, studyStatus: 'completed',
      // The lifecycle's completion (and its audit entry) commits with the final round.
      inTx: async (tx) => {
        const cur = await loadLifecycle(tx, study.id);
        if (cur) await commitTransitions(tx, { store: this.store, audit }, cur, [lifecycleComplete(cur, { by: 'coordinator', at: now }, { rounds: spec.rounds, metrics: summaryOf(metrics) })]);
      },
    });
    // The model card names the audit head that now includes the completion.
    await ensureModelCard(this.store, study.id, now).catch((e) => this.log(`study ${study.id}: model card not written yet: ${(e as Error).message}`));
    const summary = Object.fromEntries(metrics.filter((m) => m.site_id === null).map((m) => [`${m.phase}.${m.name}`, m.value]));
    this.bus.emit({ type: 'round.committed', studyId: study.id, round, kind: 'evaluate', metrics: summary });
    this.bus.emit({ type: 'study.status', studyId: study.id, status: 'completed' });
    this.log(`study ${study.id}: completed`);
  }
}

type MetricRowOut = { study_id: string; round: number; site_id: string | null; phase: string; name: string; value: number };

/** Per-site and example-weighted global metrics of a fit round, plus the evaluation of the incoming model. */
function fitMetrics(studyId: string, round: number, results: FitResultIn[]): MetricRowOut[] {
  const rows: MetricRowOut[] = [];
  rows.push(...weighted(studyId, round, 'fit', results.map((r) => ({ siteId: r.siteId, n: r.numExamples, m: r.meta.trainMetrics ?? {} }))));
  // The incoming model of round r is version r-1.
  rows.push(...evalMetricRows(studyId, round - 1, results.map((r) => ({ siteId: r.siteId, numExamples: r.numExamples, meta: r.meta }))));
  rows.push({ study_id: studyId, round, site_id: null, phase: 'fit', name: 'sites', value: results.length });
  return rows;
}

function evalMetricRows(studyId: string, modelRound: number, results: { siteId: string; numExamples: number; meta: ResultMeta }[]): MetricRowOut[] {
  return weighted(
    studyId,
    modelRound,
    'evaluate',
    results.filter((r) => r.meta.evalMetrics).map((r) => ({ siteId: r.siteId, n: r.meta.evalExamples ?? r.numExamples, m: r.meta.evalMetrics! })),
  );
}

function weighted(studyId: string, round: number, phase: string, items: { siteId: string; n: number; m: Record<string, number> }[]): MetricRowOut[] {
  const rows: MetricRowOut[] = [];
  const sums = new Map<string, { s: number; n: number }>();
  for (const it of items) {
    for (const [name, value] of Object.entries(it.m)) {
      if (!Number.isFinite(value)) continue;
      rows.push({ study_id: studyId, round, site_id: it.siteId, phase, name, value });
      const acc = sums.get(name) ?? { s: 0, n: 0 };
      acc.s += value * it.n;
      acc.n += it.n;
      sums.set(name, acc);
    }
  }
  for (const [name, { s, n }] of sums) if (n > 0) rows.push({ study_id: studyId, round, site_id: null, phase, name, value: s / n });
  return rows;
}

/** The global (example-weighted) metrics of a round, for the completion's audit entry. */
function summaryOf(metrics: MetricRowOut[]): Record<string, number> {
  return Object.fromEntries(metrics.filter((m) => m.site_id === null).map((m) => [`${m.phase}.${m.name}`, m.value]));
}
