/**
 * An asynchronous study (StudySpec.async, FedBuff): instead of rounds, every site trains whenever it is free on the
 * latest version, and every `bufferSize` (K) arriving updates fold into a new version (async-fold.ts), each weighted
 * by its staleness. A slow or intermittent site never holds back the others: the buffer takes whatever arrives.
 *
 * How it sits in the store (everything decided is written before anyone acts on it, so a coordinator killed at any
 * point resumes where the store says):
 *  - One round of kind `async` (ASYNC_ROUND) holds every task and update of the study while it trains. Its deadline
 *    is when the next version is due: each version moves it out by roundTimeoutSeconds; a study that makes no version
 *    for that long fails, saying what the buffer holds. The engine's downtime catch-up moves it like any round's.
 *  - Each site holds at most one open task, a `fit` task like any other (agents need nothing new), against the
 *    latest version when it was issued; its id names the site and that version, so a site trains at most once from
 *    each version (the agent's crash-safe releases are keyed by round and model version, site/release.ts). A site
 *    gets its next task as soon as its previous one is answered (result, refusal, error) or expired, against the
 *    then-latest version, or, if it already trained from that one, when the next version commits.
 *  - The buffer is the round's updates that no fold has taken: a version commits (store.commitVersion) with its
 *    model, metrics, an `aggregate.committed` audit entry naming each update with its staleness and weight, and one
 *    `async_contributions` row per update it took or refused as stale, in one transaction that also moves the study
 *    from version v−1 to v by compare-and-set: a version is committed exactly once, a buffered update folded at
 *    most once, and an update accepted but not yet folded is still in the buffer after a crash.
 *  - Staleness s = latest version − the version the site trained from, when it is folded. Updates with s beyond
 *    `maxStaleness` are refused (a refusal row with code `stale_update` and an `update.refused` audit entry), and a
 *    task whose version is already that far behind is expired early so its site starts again from the latest.
 *  - Under client-level DP a buffer takes at most one update per site (so one site moves the noised sum by at most
 *    C: one Gaussian release per buffer, as each site's ledger charges per contribution), and a site whose update
 *    still waits for a buffer gets its next task once it is folded.
 *  - After the last version (the study's `rounds`) the round closes in the same transaction, expiring the tasks
 *    still out, and the engine runs the usual evaluate round of the final model.
 */
import type { AsyncContributionRow, MetricRow, ModelVersionRow, RoundRow, Store, StudyRow, TaskRow, UpdateRow } from '../store/store.js';
import type { AsyncSpec, ResultMeta, StudySpec } from '../protocol/api.js';
import type { AsyncView } from '../protocol/views.js';
import { appendAudit } from '../governance/audit-store.js';
import { eligibleParticipants } from '../governance/study-governance.js';
import { rulesOf, transportDtypes } from './study-model.js';
import { blobSource, readSourceHeader, type ByteSource } from './stream-aggregate.js';
import { streamAsyncFold } from './stream-async-fold.js';
import { countedAggregation } from './fit-aggregate.js';
import { hostStrategy } from './strategy-host.js';
import { clientNoiseMultiplier } from './privacy.js';
import { CryptoNormal } from '../privacy/noise.js';
import { stalenessWeight } from './async-fold.js';
import type { DriverContext } from './driver-context.js';


/** The round that holds an asynchronous study's tasks and updates while it trains (round 0 is the prepare round). */
export const ASYNC_ROUND = 1;
/** Strategies whose server step is the (staleness-weighted) example-weighted mean of the deltas. */
export const ASYNC_STRATEGIES = ['fedavg', 'fedprox'];
const OPEN = ['issued', 'delivered'];


/** A task's id: the study, the site and the version it trains from (one task per site per version). */
export const asyncTaskId = (studyId: string, siteId: string, version: number) => `${studyId}.r${ASYNC_ROUND}.${siteId}.v${version}`;


/** An asynchronous study's problems known at creation, each naming its field and what is allowed. */
export function asyncSpecProblems(spec: StudySpec): string[] {
  const a = spec.async;
  if (!a) return [];
  const out: string[] = [];
  if (!ASYNC_STRATEGIES.includes(spec.strategy.name.toLowerCase())) {
    out.push(`/strategy/name: an asynchronous study folds each buffer with FedBuff's staleness-weighted mean of the sites' deltas; it works with ${ASYNC_STRATEGIES.join(', ')} (got ${spec.strategy.name})`);
  }
  if (spec.analytics) out.push('/async: analytics queries run one round per query over every site; remove async or analytics');
  if (spec.privacy?.secagg) {
    out.push('/privacy/secagg: SecAgg+ sums a fixed set of sites that mask together in one session, but an asynchronous buffer fills with updates trained from different versions at different times, each needing its own staleness weight, which a masked sum cannot apply; run SecAgg+ studies synchronously (remove async)');
  }
  if (spec.sites && a.bufferSize > spec.sites.length) out.push(`/async/bufferSize: ${a.bufferSize} exceeds the ${spec.sites.length} sites of the study; a site trains once per version, so a buffer needs at most that many (1 to ${spec.sites.length})`);
  if (a.stalenessExponent !== undefined && (a.stalenessWeight ?? 'polynomial') !== 'polynomial') out.push(`/async/stalenessExponent: only the polynomial weighting takes an exponent (stalenessWeight is ${a.stalenessWeight})`);
  if ((a.hingeAfter !== undefined || a.hingeSlope !== undefined) && a.stalenessWeight !== 'hinge') out.push(`/async/${a.hingeAfter !== undefined ? 'hingeAfter' : 'hingeSlope'}: only the hinge weighting takes hingeAfter and hingeSlope (stalenessWeight is ${a.stalenessWeight ?? 'polynomial'})`);
  if (spec.minSites !== undefined) out.push('/minSites: an asynchronous study folds every bufferSize updates; it has no per-round minimum (remove minSites)');
  return out;
}

/** Opens the study's asynchronous round: a task for every eligible site against the latest version. */
export async function openAsyncRound(ctx: DriverContext, study: StudyRow, spec: StudySpec): Promise<void> {
  const { store } = ctx;
  const now = ctx.now();
  const a = spec.async!;
  const latest = await store.latestModelVersion(study.id);
  if (!latest) throw new Error(`study ${study.id} has no model version`);
  const sites = await eligibleParticipants(store, study.id, JSON.parse(study.participants ?? '[]') as string[], now);
  if (sites.length < a.bufferSize) {
    throw new Error(`asynchronous study: bufferSize ${a.bufferSize} needs at least that many sites, and ${sites.length} ${sites.length === 1 ? 'is' : 'are'} eligible (a site trains once per version)`);
  }
  const deadline = now + timeoutMs(ctx, spec);
  const round: RoundRow = { study_id: study.id, round: ASYNC_ROUND, status: 'open', kind: 'async', opened_at: now, deadline_at: deadline, committed_at: null, model_version_id: null };
  const tasks = sites.map((s) => newTask(study, spec, s, latest.id, latest.round, now, deadline));
  await store.openRound(round, tasks, auditIssued(ctx, study, tasks, latest.round, latest.digest, now));
  ctx.log(`study ${study.id}: asynchronous (buffer ${a.bufferSize}, ${spec.rounds} versions) opened for ${tasks.length} sites`);
  ctx.bus.emit({ type: 'round.opened', studyId: study.id, round: ASYNC_ROUND, kind: 'async', sites: tasks.length });
  ctx.bus.emit({ type: 'tasks', siteIds: sites, taskIds: tasks.map((t) => t.id), tasks });
}

function timeoutMs(ctx: DriverContext, spec: StudySpec): number {
  return Math.round((spec.roundTimeoutSeconds ?? ctx.defaultTimeoutS) * 1000);
}

function newTask(study: StudyRow, spec: StudySpec, siteId: string, versionId: string, version: number, now: number, deadline: number): TaskRow {
  const config = hostStrategy(spec).configureFit(version + 1, [siteId])[0]?.config ?? spec.fit;
  return {
    id: asyncTaskId(study.id, siteId, version), study_id: study.id, round: ASYNC_ROUND, site_id: siteId, kind: 'fit', model_version_id: versionId,
    config: JSON.stringify(config), status: 'issued', created_at: now, deadline_at: deadline, delivered_at: null, done_at: null,
  };
}

function auditIssued(ctx: DriverContext, study: StudyRow, tasks: TaskRow[], version: number, digest: string, now: number): ((tx: Store) => Promise<void>) | undefined {
  const audit = ctx.audit;
  if (!audit) return undefined;
  return async (tx) => {
    for (const t of tasks) {
      await appendAudit(tx, audit, { ts: now, actor: 'coordinator', kind: 'task.issued', subject: t.id, data: { study: study.id, round: ASYNC_ROUND, kind: 'fit', site: t.site_id, modelVersion: t.model_version_id, modelDigest: digest, version } });
    }
  };
}

/**
 * One tick of an asynchronous study: fold every full buffer, expire tasks past their deadline or too stale to be
 * used, give every free site its next task, and fail the study when no version can come any more.
 */
export async function driveAsyncRound(ctx: DriverContext, study: StudyRow, spec: StudySpec, open: RoundRow): Promise<void> {
  const { store } = ctx;
  const a = spec.async!;
  const dp = spec.privacy?.dp?.level === 'client';
  const maxStaleness = a.maxStaleness ?? Infinity;
  const versions = await store.listModelVersions(study.id);
  const versionOf = new Map(versions.map((v) => [v.id, v.round]));
  let version = study.current_round;
  let buffered = await store.unfoldedUpdates(study.id, ASYNC_ROUND);
  const latestId = versions.find((v) => v.round === version)?.id ?? '';
  // Only what this tick needs: the open tasks, those against the latest version and the buffer's (not the history).
  const tasks = await store.asyncTasks(study.id, ASYNC_ROUND, latestId, buffered.map((u) => u.task_id));
  const taskOf = new Map(tasks.map((t) => [t.id, t]));
  const baseOf = (u: UpdateRow) => {
    const v = versionOf.get(taskOf.get(u.task_id)?.model_version_id ?? '');
    if (v === undefined) throw new Error(`update of task ${u.task_id} names no known model version`);
    return v;
  };

  // Fold every full buffer (several when updates piled up while no coordinator ran).
  for (;;) {
    if (version >= spec.rounds) return;
    const stale = buffered.filter((u) => version - baseOf(u) > maxStaleness);
    const chosen = pick(buffered.filter((u) => !stale.includes(u)), a.bufferSize, dp);
    if (chosen.length < a.bufferSize) break;
    await commitVersion(ctx, study, spec, version + 1, chosen, stale, baseOf);
    version++;
    buffered = buffered.filter((u) => !chosen.includes(u) && !stale.includes(u));
    if (version >= spec.rounds) return; // the round closed with the last version; the engine evaluates it next
  }

  const now = ctx.now();
  if (now > open.deadline_at) {
    throw new Error(`asynchronous study: no new version for ${Math.round(timeoutMs(ctx, spec) / 1000)} s after version ${version}: ${await bufferState(ctx, study, a, version, tasks, buffered, baseOf)}`);
  }
  // Tasks that can no longer help: past their deadline, or trained from a version too old to be folded.
  for (const t of tasks) {
    if (!OPEN.includes(t.status)) continue;
    const base = versionOf.get(t.model_version_id) ?? version;
    const why = now > t.deadline_at ? 'its deadline passed' : version - base > maxStaleness ? `version ${base} is ${version - base} versions behind (maxStaleness ${a.maxStaleness})` : undefined;
    if (why && (await store.expireTask(t.id, now))) {
      t.status = 'expired';
      ctx.log(`study ${study.id}: task ${t.id} expired: ${why}`);
    }
  }
  // Every free site gets its next task against the latest version (once per version).
  const latest = await store.latestModelVersion(study.id);
  if (!latest || latest.round !== version) throw new Error(`study ${study.id}: version ${version} is missing`);
  const eligible = await eligibleParticipants(store, study.id, JSON.parse(study.participants ?? '[]') as string[], now);
  const waiting = new Set(buffered.map((u) => u.site_id));
  const free = eligible.filter((s) => !tasks.some((t) => t.site_id === s && OPEN.includes(t.status)) && !taskOf.has(asyncTaskId(study.id, s, version)) && !(dp && waiting.has(s)));
  if (free.length) {
    const deadline = now + timeoutMs(ctx, spec);
    const issued = free.map((s) => newTask(study, spec, s, latest.id, version, now, deadline));
    await store.issueTasks(study.id, ASYNC_ROUND, issued, auditIssued(ctx, study, issued, version, latest.digest, now));
    ctx.log(`study ${study.id}: version ${version}: tasks for ${issued.length} sites`);
    ctx.bus.emit({ type: 'tasks', siteIds: free, taskIds: issued.map((t) => t.id), tasks: issued });
    return;
  }
  // Nothing out, nobody left to ask, and the buffer cannot fill: no version can come.
  if (!tasks.some((t) => OPEN.includes(t.status))) {
    throw new Error(`asynchronous study: no version ${version + 1} can be made: ${await bufferState(ctx, study, a, version, tasks, buffered, baseOf)}`);
  }
}

/** The first K buffered updates in arrival order; under DP at most one per site (the rest wait for a later buffer). */
function pick(buffered: UpdateRow[], k: number, onePerSite: boolean): UpdateRow[] {
  const out: UpdateRow[] = [];
  for (const u of buffered) {
    if (out.length === k) break;
    if (onePerSite && out.some((o) => o.site_id === u.site_id)) continue;
    out.push(u);
  }
  return out;
}

/** For a failure's reason: what the buffer holds and what each site did with the latest version. */
async function bufferState(ctx: DriverContext, study: StudyRow, a: AsyncSpec, version: number, tasks: TaskRow[], buffered: UpdateRow[], baseOf: (u: UpdateRow) => number): Promise<string> {
  const names = new Map((await ctx.store.listSites()).map((s) => [s.id, s.name]));
  const errors = new Map((await ctx.store.listTaskErrors(study.id, ASYNC_ROUND)).map((e) => [e.task_id, e]));
  const sites = (JSON.parse(study.participants ?? '[]') as string[]).map((s) => {
    const t = [...tasks].reverse().find((x) => x.site_id === s);
    const name = names.get(s) ?? s;
    if (!t) return `${name}: no task out, none against version ${version}, no update waiting`;
    const err = errors.get(t.id);
    return `${name}: task ${t.id} ${err ? `failed (${err.code}): ${err.message}` : t.status}`;
  });
  return `the buffer holds ${buffered.length} of ${a.bufferSize} updates${buffered.length ? ` (trained from versions ${buffered.map(baseOf).join(', ')})` : ''}; latest version ${version}; ${sites.join('; ')}`;
}

/** Folds the chosen updates into version `v` and records the stale ones as refused, in one transaction. */
async function commitVersion(ctx: DriverContext, study: StudyRow, spec: StudySpec, v: number, chosen: UpdateRow[], stale: UpdateRow[], baseOf: (u: UpdateRow) => number): Promise<void> {
  const { store } = ctx;
  const a = spec.async!;
  const now = ctx.now();
  const latest = await store.latestModelVersion(study.id);
  if (!latest || latest.round !== v - 1) throw new Error(`study ${study.id}: version ${v - 1} is missing`);
  // Streamed from the blobs slice by slice at any model size (stream-async-fold.ts): the arithmetic of foldBuffer.
  const current = await blobSource(store.blobs, latest.digest);
  const rules = rulesOf(spec, (await readSourceHeader(current, 'the current version')).tensors.map((t) => t.name));
  const bases = new Map<number, ByteSource>();
  const baseSource = async (b: number): Promise<ByteSource> => {
    let src = bases.get(b);
    if (!src) {
      const row = b === latest.round ? latest : await store.getModelVersion(`${study.id}.v${b}`);
      if (!row) throw new Error(`study ${study.id}: version ${b}, which an update trained from, is missing`);
      src = b === latest.round ? current : await blobSource(store.blobs, row.digest);
      bases.set(b, src);
    }
    return src;
  };
  const items: { u: UpdateRow; staleness: number; weight: number; source: ByteSource; base: ByteSource }[] = [];
  for (const u of chosen) {
    const staleness = v - 1 - baseOf(u);
    if (!u.digest || u.size === null) throw new Error(`update of task ${u.task_id} has no weights`);
    items.push({ u, staleness, weight: stalenessWeight(a, staleness), source: await blobSource(store.blobs, u.digest), base: await baseSource(baseOf(u)) });
  }
  const dp = spec.privacy?.dp?.level === 'client' ? { clipNorm: spec.privacy.dp.clipNorm, noiseMultiplier: clientNoiseMultiplier(spec), normal: new CryptoNormal() } : undefined;
  const folded = streamAsyncFold({
    current, rules, async: a, ...(dp ? { dp } : {}), metadata: { study: study.id, round: String(v) }, transportDtypes: transportDtypes(spec),
    buffer: items.map((i) => ({ siteId: i.u.site_id, source: i.source, base: i.base, numExamples: i.u.num_examples, staleness: i.staleness })),
  });
  const { digest: newDigest, size } = await store.blobs.putStream(countedAggregation(folded, 'streamed', items.reduce((n, i) => n + i.source.size, 0)));
  const modelRow: ModelVersionRow = { id: `${study.id}.v${v}`, study_id: study.id, round: v, created_at: now, digest: newDigest, size };
  const digest = modelRow.digest;
  const metrics = versionMetrics(study.id, v, items.map((i) => ({ siteId: i.u.site_id, n: i.u.num_examples, meta: JSON.parse(i.u.metrics) as ResultMeta, base: baseOf(i.u), staleness: i.staleness })));
  const contributions: AsyncContributionRow[] = [
    ...items.map((i) => ({ task_id: i.u.task_id, study_id: study.id, site_id: i.u.site_id, version: v, base_version: baseOf(i.u), staleness: i.staleness, weight: i.weight, status: 'folded', num_examples: i.u.num_examples, at: now })),
    ...stale.map((u) => ({ task_id: u.task_id, study_id: study.id, site_id: u.site_id, version: v - 1, base_version: baseOf(u), staleness: v - 1 - baseOf(u), weight: 0, status: 'stale', num_examples: u.num_examples, at: now })),
  ];
  const last = v >= spec.rounds;
  const audit = ctx.audit;
  await store.commitVersion({
    studyId: study.id, round: ASYNC_ROUND, version: v, now, deadlineAt: now + timeoutMs(ctx, spec),
    model: modelRow,
    metrics, contributions,
    inTx: async (tx) => {
      for (const u of stale) {
        const reason = `update of task ${u.task_id} trained from version ${baseOf(u)}, ${v - 1 - baseOf(u)} versions behind version ${v - 1}; maxStaleness is ${a.maxStaleness}`;
        await tx.countRefusal({ study_id: study.id, round: ASYNC_ROUND, site_id: u.site_id, task_id: u.task_id, code: 'stale_update', reason, at: now });
        if (audit) await appendAudit(tx, audit, { ts: now, actor: 'coordinator', kind: 'update.refused', subject: u.task_id, data: { study: study.id, round: ASYNC_ROUND, code: 'stale_update', reason } });
      }
      if (audit) {
        await appendAudit(tx, audit, {
          ts: now, actor: 'coordinator', kind: 'aggregate.committed', subject: `${study.id}.v${v}`,
          data: { study: study.id, round: v, digest, strategy: `${spec.strategy.name} (async, buffer ${a.bufferSize})`, updates: items.map((i) => ({ site: i.u.site_id, digest: i.u.digest, numExamples: i.u.num_examples, baseVersion: baseOf(i.u), staleness: i.staleness, weight: i.weight })) },
        });
      }
      // The last version closes the round: the tasks still out expire, and the engine evaluates the final model.
      if (last) await tx.commitRound({ studyId: study.id, round: ASYNC_ROUND, now, metrics: [] });
    },
  });
  const staleness = items.map((i) => i.staleness);
  ctx.log(`study ${study.id}: version ${v} folded from ${items.length} updates (staleness ${staleness.join(', ')})${stale.length ? `; ${stale.length} refused as too stale` : ''}${last ? ' (last version)' : ''}`);
  // The async round's buffer was aggregated: what it held is free (plugins/limits.ts), the views refresh.
  ctx.bus.emit({ type: 'round.committed', studyId: study.id, round: ASYNC_ROUND, kind: 'version', metrics: { version: v, 'async.staleness.mean': staleness.reduce((x, y) => x + y, 0) / staleness.length } });
}

/**
 * A version's metric rows (round = the version): the example-weighted train loss of its updates (per site and
 * global), its staleness (mean, max) and update count; and each site's evaluation of the version it trained from,
 * at that version's round (one per site and version: a site trains once from each).
 */
function versionMetrics(studyId: string, v: number, items: { siteId: string; n: number; meta: ResultMeta; base: number; staleness: number }[]): MetricRow[] {
  const rows: MetricRow[] = [];
  const row = (round: number, site: string | null, phase: string, name: string, value: number) => {
    if (Number.isFinite(value)) rows.push({ study_id: studyId, round, site_id: site, phase, name, value });
  };
  let loss = 0, n = 0;
  for (const i of items) {
    const l = i.meta.trainMetrics?.['loss'];
    if (l !== undefined && Number.isFinite(l)) {
      row(v, i.siteId, 'fit', 'loss', l);
      loss += l * i.n;
      n += i.n;
    }
    for (const [name, value] of Object.entries(i.meta.evalMetrics ?? {})) row(i.base, i.siteId, 'evaluate', name, value);
  }
  if (n > 0) row(v, null, 'fit', 'loss', loss / n);
  row(v, null, 'fit', 'sites', items.length);
  row(v, null, 'async', 'staleness.mean', items.reduce((x, i) => x + i.staleness, 0) / items.length);
  row(v, null, 'async', 'staleness.max', Math.max(...items.map((i) => i.staleness)));
  return rows;
}

/** What GET /v1/studies/:id says of an asynchronous study (views.ts AsyncViewSchema): its versions, its buffer, and the staleness of its updates. */
export async function asyncView(store: Store, study: StudyRow, nameOf: (id: string) => string): Promise<AsyncView | undefined> {
  const spec = JSON.parse(study.spec) as StudySpec;
  if (!spec.async) return undefined;
  const contributions = await store.listContributions(study.id);
  const folded = contributions.filter((c) => c.status === 'folded');
  const counts = new Map<number, number>();
  for (const c of folded) counts.set(c.staleness, (counts.get(c.staleness) ?? 0) + 1);
  const versions = await store.listModelVersions(study.id);
  const versionOf = new Map(versions.map((v) => [v.id, v.round]));
  const open = (await store.getRound(study.id, ASYNC_ROUND))?.status === 'open';
  const tasks = open ? (await store.asyncTasks(study.id, ASYNC_ROUND, '', [])).filter((t) => OPEN.includes(t.status)) : [];
  const buffered = open ? (await store.unfoldedUpdates(study.id, ASYNC_ROUND)).length : 0;
  return {
    version: Math.min(study.current_round, spec.rounds),
    versions: spec.rounds,
    bufferSize: spec.async.bufferSize,
    buffered,
    inFlight: tasks.filter((t) => OPEN.includes(t.status)).map((t) => ({ site: nameOf(t.site_id), baseVersion: versionOf.get(t.model_version_id) ?? 0 })),
    staleness: {
      histogram: [...counts].sort((x, y) => x[0] - y[0]).map(([staleness, count]) => ({ staleness, count })),
      mean: folded.length ? folded.reduce((x, c) => x + c.staleness, 0) / folded.length : null,
      max: folded.length ? Math.max(...folded.map((c) => c.staleness)) : null,
      refused: contributions.length - folded.length,
    },
    versionTimes: versions.filter((v) => v.round > 0 && v.round <= spec.rounds).map((v) => ({ version: v.round, at: v.created_at })),
  };
}
