/**
 * SecAgg+ over HTTP: one session per fit round of a study with `privacy.secagg`, carried by the agents' own
 * requests (they only dial out). After training, each agent walks the stages through routes/secagg.ts:
 *
 *   GET  setup            → its client id and the round's SecAgg+ config (session id = config.roundId)
 *   POST keys             → two X25519 public keys
 *   GET  neighbour-keys   (long-poll until the keys stage closes)
 *   POST shares           → encrypted Shamir shares for its neighbours
 *   GET  mask-request     (long-poll) → the shares addressed to it and who is active
 *   POST masked           → its masked, quantised update Δ (+ weight element) and its ResultMeta (metrics, privacy spend);
 *                           over 8 MiB the words go first as a chunked upload (routes/uploads.ts) that this names
 *   GET  unmask-request   (long-poll) → survivors and dropped
 *   POST unmask           → its shares of survivors' self-mask seeds and dropped sites' mask keys
 *
 * A stage closes when every expected site has answered or, after the keys stage, when the study's
 * `privacy.secagg.stageTimeoutSeconds` (default 30 s) has passed: the missing sites count as dropped, and a
 * site that dropped after masking is recovered while ≥ threshold of its neighbours answer (else the round fails,
 * naming it). The keys stage waits for every site that has not refused its task, until the round's deadline
 * less three stage timeouts.
 *
 * What the coordinator holds: the SecAggServer state machine (keys, share ciphertexts it cannot open; no vector),
 * per site the ResultMeta, and each accepted masked input as a blob in its blob store (masked: it reveals nothing
 * without the masks), removed once the round commits or ends. In SQL, an accepted masked input becomes an `updates`
 * row with size NULL and the digest of that blob; only the aggregate is ever unmasked, block by block from the blobs
 * (stream-secagg.ts), and only its mean is committed as the new model.
 *
 * Coordinator restart: sessions live in this process's memory. A coordinator restarted mid-round finds an open
 * SecAgg+ round without a session and restarts that round cleanly: a new session (new round id, new keys, so no
 * mask is ever reused), the round's meta-only update rows dropped and its tasks issued again. Agents holding an
 * unfinished upload re-mask the same trained update (no new privacy spend); agents that had finished send the
 * update they kept for that round (site/release.ts), so the restarted round sums the same updates. Sessions are not shared between coordinator processes: with
 * several coordinators on one PostgreSQL, the one driving the study (its lease holder) serves the stages and
 * any other answers 503 `secagg_elsewhere` naming it (`servedElsewhere`); when the holder dies, the coordinator
 * that takes the lease over restarts the round as above.
 */
import { randomBytes } from 'node:crypto';
import { SecAggServer, makeConfig, type SecAggResult, type Unmasking } from '../privacy/secagg/server.js';
import { recommendedDegree } from '../privacy/secagg/graph.js';
import type { MaskRequestMsg, NeighbourKeysMsg, UnmaskRequestMsg, SetupMsg } from '../privacy/secagg/messages.js';
import type { ResultMeta, StudySpec } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import { unflatten } from '../privacy/flat.js';
import type { RoundRow, Store, TaskRow, UpdateRow } from '../store/store.js';
import type { BlobStore } from '../store/blobs/blob-store.js';
import type { Elementwise } from '../learning/strategy.js';
import type { ResolvedRules } from '../protocol/tensors.js';
import type { HostedStrategy } from './strategy-host.js';
import { blobSource, readSourceHeader, type ByteSource } from './stream-aggregate.js';
import { unmaskedSum } from './stream-secagg.js';

export type SessionStage = 'keys' | 'shares' | 'masked' | 'unmask' | 'done' | 'aborted';
const ORDER: SessionStage[] = ['keys', 'shares', 'masked', 'unmask', 'done'];

export const DEFAULT_STAGE_TIMEOUT_S = 30;

export class SecAggSession {
  readonly id: string;
  readonly server: SecAggServer;
  stage: SessionStage = 'keys';
  private stageOpenedAt: number;
  /** Site id → client id (the order of the round's tasks, sorted by site id). */
  readonly clientOf = new Map<string, number>();
  readonly siteOf: string[];
  readonly taskOf: string[];
  private readonly answered = new Set<number>();
  private refused = new Set<number>();
  neighbourKeys: Map<number, NeighbourKeysMsg> | null = null;
  maskRequests: Map<number, MaskRequestMsg> | null = null;
  unmaskRequest: UnmaskRequestMsg | null = null;
  /** Set when the round closes (stage done): who is in the sum and the masks to remove from any block of it. */
  unmasking: Unmasking | null = null;
  /** The whole unmasked sum, for a strategy that aggregates in memory (materialise); null until then. */
  result: SecAggResult | null = null;
  /**
   * Each survivor's masked input, as a blob (digest) in the coordinator's blob store: the session holds no
   * vector; the sum is taken block by block from these when the round commits (stream-secagg.ts).
   */
  readonly maskedBlobs = new Map<number, string>();
  /** Words per unmasking block (tests set a few, to cross many blocks). */
  blockWords: number | undefined;
  /** Sites whose masked input is in the sum but that did not answer the unmask stage: recovered from their neighbours' shares. */
  recoveredAfterMasking: number[] = [];
  error: string | null = null;
  /** Each site's result metadata (metrics, example count, privacy spend): what a plain result carries besides weights. */
  readonly metas = new Map<number, ResultMeta>();
  private waiters: (() => void)[] = [];

  constructor(
    readonly studyId: string,
    readonly round: number,
    tasks: TaskRow[],
    readonly spec: StudySpec,
    readonly vectorLength: number,
    readonly weightScale: number,
    private roundDeadline: number,
    now: number,
  ) {
    const sorted = [...tasks].sort((a, b) => (a.site_id < b.site_id ? -1 : 1));
    this.siteOf = sorted.map((t) => t.site_id);
    this.taskOf = sorted.map((t) => t.id);
    sorted.forEach((t, i) => this.clientOf.set(t.site_id, i));
    const n = sorted.length;
    const s = spec.privacy!.secagg!;
    const rec = recommendedDegree(n);
    const degree = s.degree !== undefined ? Math.min(s.degree, n - 1) : rec.degree;
    const threshold = s.threshold !== undefined ? Math.min(s.threshold, degree) : rec.threshold;
    const dp = spec.privacy?.dp;
    this.server = new SecAggServer(
      makeConfig({
        roundId: `${studyId}.r${round}.${randomBytes(8).toString('hex')}`,
        numClients: n,
        degree,
        threshold,
        vectorLength,
        weightScale,
        clipRange: s.clipRange ?? (dp?.level === 'client' ? dp.clipNorm : 4),
        ...(s.quantBits !== undefined ? { quantBits: s.quantBits } : {}),
      }),
    );
    this.id = this.server.config.roundId;
    this.stageOpenedAt = now;
  }

  /** Words of each masked input: the aggregated values, and the weight element of a weighted round. */
  get words(): number {
    return this.vectorLength + (this.weightScale > 0 ? 1 : 0);
  }

  /** The survivors' masked inputs as byte sources over their blobs, in client order. */
  async maskedSources(blobs: BlobStore): Promise<ByteSource[]> {
    const u = this.unmasking;
    if (!u) throw new Error(`round ${this.round}: the SecAgg+ session has not finished`);
    return Promise.all(u.survivors.map((c) => {
      const d = this.maskedBlobs.get(c);
      if (!d) throw new Error(`round ${this.round}: the masked input of client ${c} is not in the blob store`);
      return blobSource(blobs, d);
    }));
  }

  /** The unmasked sum in memory (SecAggServer.finish's result, from the blobs), for a strategy that is not a plain mean. */
  async materialise(blobs: BlobStore): Promise<SecAggResult> {
    if (this.result) return this.result;
    const u = this.unmasking!;
    const masked = await this.maskedSources(blobs);
    try {
      const r = await unmaskedSum({ masked, unmasking: u, ...(this.blockWords !== undefined ? { blockWords: this.blockWords } : {}) });
      this.result = { ...r, survivors: u.survivors, dropped: u.dropped };
      return this.result;
    } finally {
      await Promise.all(masked.map((m) => m.close?.()));
    }
  }

  /** Removes the masked inputs' blobs (the round committed, failed or restarted: they are never read again). */
  async discardMasked(blobs: BlobStore): Promise<void> {
    const ds = [...this.maskedBlobs.values()];
    this.maskedBlobs.clear();
    for (const d of ds) await blobs.delete(d).catch(() => {});
  }

  get stageTimeoutMs(): number {
    return (this.spec.privacy?.secagg?.stageTimeoutSeconds ?? DEFAULT_STAGE_TIMEOUT_S) * 1000;
  }

  /** Gives back `ms` the coordinator lost (engine.ts catchUp): the round's deadline and the open stage's clock move out. */
  extend(ms: number): void {
    this.roundDeadline += ms;
    this.stageOpenedAt += ms;
  }

  setup(clientId: number): SetupMsg {
    return this.server.setupMessages()[clientId]!;
  }

  /** Has `stage` closed (so its outputs are ready)? */
  past(stage: SessionStage): boolean {
    if (this.stage === 'aborted') return true;
    return ORDER.indexOf(this.stage) > ORDER.indexOf(stage);
  }

  /** Resolves on the next stage change or after `ms`. */
  wait(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.waiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private changed(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Records that `clientId` answered the current stage (the caller has fed the server already). */
  answer(clientId: number, now: number): void {
    this.answered.add(clientId);
    this.advance(now);
  }

  noteRefused(siteIds: Iterable<string>, now: number): void {
    for (const s of siteIds) {
      const c = this.clientOf.get(s);
      if (c !== undefined) this.refused.add(c);
    }
    this.advance(now);
  }

  /** Who the current stage waits for. */
  private expected(): number[] {
    const all = this.siteOf.map((_, i) => i);
    switch (this.stage) {
      case 'keys':
        return all.filter((i) => !this.refused.has(i));
      case 'shares':
        return [...this.neighbourKeys!.keys()];
      case 'masked':
        return [...this.maskRequests!.keys()];
      case 'unmask':
        return this.unmaskRequest!.survivors;
      default:
        return [];
    }
  }

  /** Closes the current stage when everyone expected has answered or its time is up; may close several. */
  advance(now: number): void {
    for (;;) {
      if (this.stage === 'done' || this.stage === 'aborted') return;
      const everyone = this.expected().every((i) => this.answered.has(i));
      const timeUp = this.stage === 'keys' ? now > this.roundDeadline - 3 * this.stageTimeoutMs : now - this.stageOpenedAt > this.stageTimeoutMs;
      if (!everyone && !timeUp) return;
      try {
        if (this.stage === 'keys') {
          this.neighbourKeys = this.server.neighbourKeys();
          this.stage = 'shares';
        } else if (this.stage === 'shares') {
          this.maskRequests = this.server.maskRequests();
          this.stage = 'masked';
        } else if (this.stage === 'masked') {
          this.unmaskRequest = this.server.unmaskRequest();
          this.stage = 'unmask';
        } else if (this.stage === 'unmask') {
          this.recoveredAfterMasking = this.unmaskRequest!.survivors.filter((i) => !this.answered.has(i));
          this.unmasking = this.server.unmasking();
          this.stage = 'done';
        }
      } catch (e) {
        this.stage = 'aborted';
        this.error = (e as Error).message;
      }
      this.answered.clear();
      this.stageOpenedAt = now;
      this.changed();
    }
  }
}

/** The sessions of this coordinator process, by study and round. */
export class SecAggSessions {
  private readonly byRound = new Map<string, SecAggSession>();
  private readonly byId = new Map<string, SecAggSession>();

  get(studyId: string, round: number): SecAggSession | undefined {
    return this.byRound.get(`${studyId}\u0000${round}`);
  }

  byTask(task: TaskRow): SecAggSession | undefined {
    return this.get(task.study_id, task.round);
  }

  put(s: SecAggSession): void {
    const key = `${s.studyId}\u0000${s.round}`;
    const old = this.byRound.get(key);
    if (old) this.byId.delete(old.id);
    this.byRound.set(key, s);
    this.byId.set(s.id, s);
  }

  drop(studyId: string, round: number): void {
    const s = this.get(studyId, round);
    if (!s) return;
    this.byRound.delete(`${studyId}\u0000${round}`);
    this.byId.delete(s.id);
  }

  /** Every session (tests inspect what the coordinator holds). */
  all(): SecAggSession[] {
    return [...this.byRound.values()];
  }
}

/**
 * Several coordinators on one PostgreSQL: a SecAgg+ session lives in the memory of the coordinator driving the
 * study (its lease holder), so only that one can serve the round's stages. Another coordinator asked for them
 * answers 503 with this reason (the agent retries, and a load balancer sends it on); undefined when no live
 * lease of another coordinator explains the missing session.
 */
export async function servedElsewhere(store: Store, task: TaskRow, instanceId: string, now: number): Promise<string | undefined> {
  const study = await store.getStudy(task.study_id);
  if (!study?.claimed_by || study.claimed_by === instanceId || (study.claimed_until ?? 0) < now) return undefined;
  return `the SecAgg+ round ${task.round} of study ${task.study_id} is served by coordinator ${study.claimed_by}, which drives the study; this coordinator (${instanceId}) holds no session for it (SecAgg+ sessions are not shared between coordinators): retry, or reach that coordinator`;
}

/** Weighted (FedAvg) rounds scale by examples / weightScale; client-level DP is an unweighted sum. */
async function weightScaleOf(store: Store, spec: StudySpec, tasks: TaskRow[]): Promise<number> {
  if (spec.privacy?.dp?.level === 'client') return 0;
  let max = 1;
  for (const t of tasks) max = Math.max(max, (await store.cohortSize(t.site_id, spec.dataset)) ?? 1);
  return max;
}

export async function newSession(store: Store, spec: StudySpec, round: RoundRow, tasks: TaskRow[], vectorLength: number, now: number): Promise<SecAggSession> {
  return new SecAggSession(round.study_id, round.round, tasks, spec, vectorLength, await weightScaleOf(store, spec, tasks), round.deadline_at, now);
}

/**
 * The number of values SecAgg+ masks for a model version: its aggregated tensors' element counts, read from the
 * blob's safetensors header (the model is never decoded for it).
 */
export async function maskedLength(blobs: BlobStore, digest: string, rulesOf: (names: string[]) => ResolvedRules): Promise<number> {
  const h = await readSourceHeader(await blobSource(blobs, digest), 'the global model');
  const agg = new Set(rulesOf(h.tensors.map((t) => t.name)).aggregate);
  let n = 0;
  for (const t of h.tensors) if (agg.has(t.name)) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Restarts an open SecAgg+ round that has no session in this process (the coordinator restarted): its
 * meta-only update rows go, its tasks are issued again. Returns the new session.
 */
export async function restartRound(store: Store, spec: StudySpec, round: RoundRow, vectorLength: number, now: number): Promise<SecAggSession> {
  // Only tasks that were live go out again: a site that refused its task, or whose task expired, stays out.
  // The lost session's masked inputs (meta-only rows name their blobs) are never read again.
  for (const u of await store.listUpdates(round.study_id, round.round)) if (u.size === null && u.digest) await store.blobs.delete(u.digest).catch(() => {});
  await store.resetRound(round.study_id, round.round);
  const tasks = await store.listTasks(round.study_id, round.round);
  return newSession(store, spec, round, tasks, vectorLength, now);
}

/** The mean update from a finished session, as a model: global + Σ wᵢΔᵢ / Σ wᵢ (weighted) or the sum of Δ (client-level DP). */
export function aggregateOf(session: SecAggSession, global: Weights): { mean: Weights; sum: Weights; weightSum: number } {
  const r = session.result;
  if (!r) throw new Error(`round ${session.round}: the SecAgg+ sum was not taken from the masked inputs (materialise)`);
  return { mean: unflatten(r.mean, global, global), sum: unflatten(r.sum, global), weightSum: r.weightSum };
}

/**
 * SecAgg+ as the outermost layer of a study's strategy: at commit no individual update exists, only the
 * unmasked sum of the round's finished session. A layer that aggregates from a sum (client-level DP) gets the
 * sum; any other gets one result, the example-weighted mean, standing for all the sites (the strategies
 * privacyProblems admits under SecAgg+ depend on the mean alone). It adds how the round went to its metrics.
 */
export function secAggPlus(inner: HostedStrategy, sessionOf: (round: number) => SecAggSession | undefined): HostedStrategy {
  const finished = (round: number): SecAggSession => {
    const s = sessionOf(round);
    if (!s?.unmasking) throw new Error(`round ${round}: no finished SecAgg+ session to aggregate`);
    return s;
  };
  // A plain mean (FedAvg, FedProx alone) is computed block by block from the masked blobs (stream-secagg.ts).
  const mean = !inner.aggregateSum && inner.elementwise?.kind === 'mean' ? inner.elementwise : undefined;
  return {
    ...(mean ? { secaggMean: mean } : {}),
    strategy: inner.strategy,
    configureFit: (round, sites) => inner.configureFit(round, sites),
    getState: () => inner.getState(),
    aggregateFit(round, global, input) {
      const session = finished(round);
      const agg = aggregateOf(session, global);
      if (inner.aggregateSum) return inner.aggregateSum(round, global, agg.sum, input);
      const numExamples = input.results.reduce((a, r) => a + r.numExamples, 0);
      return inner.aggregateFit(round, global, { ...input, results: [{ siteId: 'secagg+', weights: agg.mean, numExamples, meta: { taskId: `${session.studyId}.r${round}.secagg`, numExamples: 0 } }] });
    },
    roundMetrics(round) {
      // How the SecAgg+ round went: sites in the sum, dropped after sharing, recovered after masking.
      const session = finished(round);
      const r = session.unmasking!;
      return [
        ...(inner.roundMetrics?.(round) ?? []),
        { phase: 'secagg', name: 'survivors', value: r.survivors.length },
        { phase: 'secagg', name: 'dropped', value: r.dropped.length },
        { phase: 'secagg', name: 'recovered', value: session.recoveredAfterMasking.length },
      ];
    },
  };
}

export type { UpdateRow };
