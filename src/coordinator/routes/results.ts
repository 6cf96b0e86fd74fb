/**
 * What a task's result must pass before it is accepted, shared by the single-body result route (agent.ts) and the
 * chunked uploads (uploads.ts), so the two can never check differently:
 *  - a fit update (`checkFitUpdate`), read from its bytes chunk by chunk, never decoded whole: its safetensors
 *    header against the study's tensors (names, shapes, dtypes) before any value, its result metadata, every
 *    value finite, and its L2 distance from the global model it started from within `maxUpdateNorm`;
 *  - every result (`acceptResult`): the task it names, an analytics answer's counts, SecAgg+ and the privacy
 *    report, the example count against the site's cohort, finite metrics, the usage it carries (`ResultMeta.usage`,
 *    usage-record.ts); then `acceptUpdate` with its audit entry, privacy-ledger row and usage row in one transaction.
 * A refusal (`refuser`) is counted and audited (bounded: store/audit-bounds.ts) and changes nothing else.
 */
import { RESULT_META_KEY, ResultMetaSchema, checkValue, maxUpdateBytesOf, type ResultMeta, type StudySpec } from '../../protocol/api.js';
import { SafetensorsError, decodeTensorValues, headerFrom, headerLayout, type SafetensorsHeader, type TensorEntry } from '../../protocol/safetensors.js';
import { layoutDifference, type ResolvedRules, type WeightsLayout } from '../../protocol/tensors.js';
import { indexOfNonFinite } from '../../protocol/finite.js';
import { blobHeader } from '../../store/blobs/model-blobs.js';
import type { BlobInfo, BlobStore } from '../../store/blobs/blob-store.js';
import { appendAudit } from '../../governance/audit-store.js';
import { auditsRefusal } from '../../store/audit-bounds.js';
import { StoreConflict, type SiteRow, type Store, type TaskRow } from '../../store/store.js';
import { HttpError } from '../auth.js';
import { inModelDtypes, rulesOf, transportDtypes, updateLayout } from '../study-model.js';
import { recordSpendInTx, spendProblem } from '../privacy.js';
import { analyticsAnswerProblem } from '../analytics-rounds.js';
import type { RouteContext } from './context.js';
import { recordUsageInTx, usageRecordOf, type UsageToRecord } from '../usage-record.js';
import { roundTallyOf } from '../round-tally.js';
import { studyCohortsOf } from '../study-cohorts.js';

/**
 * Bytes an update's values are read in (a multiple of every element size): small, since every update being checked
 * holds one such buffer and a round checks its sites' updates at once, large enough that a read costs little.
 */
const CHECK_CHUNK_BYTES = 256 * 1024;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A chunk's values: F32 read in place where it is aligned (no copy, no garbage), anything else decoded. */
function valuesOf(chunk: Uint8Array, dtype: TensorEntry['dtype'], name: string): Float32Array {
  if (dtype === 'F32' && LITTLE_ENDIAN && chunk.byteOffset % 4 === 0 && chunk.length % 4 === 0) return new Float32Array(chunk.buffer, chunk.byteOffset, chunk.length / 4);
  return decodeTensorValues(chunk, dtype, name);
}

/** An update's bytes as the checks read them: in memory (a small single-body result) or a stored blob (a larger one streamed to it, or an upload). */
export interface UpdateSource {
  size: number;
  read(start: number, end: number): Promise<Uint8Array>;
  /** Bytes [start, end) in chunks; a chunk is the reader's only until it asks for the next (its buffer is reused). */
  stream(start: number, end: number): AsyncIterable<Uint8Array>;
}

export function bytesSource(b: Uint8Array): UpdateSource {
  return {
    size: b.length,
    read: async (s, e) => b.subarray(s, Math.min(e, b.length)),
    stream: async function* (s, e) {
      for (let at = s; at < e; at += CHECK_CHUNK_BYTES) yield b.subarray(at, Math.min(at + CHECK_CHUNK_BYTES, e));
    },
  };
}

export function blobSource(blobs: BlobStore, blob: BlobInfo): UpdateSource {
  const openReader = blobs.openReader?.bind(blobs);
  return {
    size: blob.size,
    read: (s, e) => blobs.read(blob.digest, s, e),
    stream: !openReader ? (s, e) => blobs.stream(blob.digest, { start: s, end: e, chunkBytes: CHECK_CHUNK_BYTES }) : async function* (s, e) {
      // One open file and one buffer for the whole range (not a fresh, page-faulted allocation per chunk).
      const reader = await openReader(blob.digest);
      try {
        const to = Math.min(e, reader.size);
        const buffer = new Uint8Array(Math.max(0, Math.min(CHECK_CHUNK_BYTES, to - s)));
        for (let at = s; at < to; at += CHECK_CHUNK_BYTES) {
          const chunk = buffer.subarray(0, Math.min(CHECK_CHUNK_BYTES, to - at));
          await reader.readInto(chunk, at);
          yield chunk;
        }
      } finally {
        await reader.close();
      }
    },
  };
}

/** The global model an update started from, as its checks need it: never its decoded values. */
export interface GlobalVersion {
  digest: string;
  header: SafetensorsHeader;
  /** The tensors an update carries (the aggregated ones), with their shapes and dtypes. */
  layout: WeightsLayout;
  rules: ResolvedRules;
}

/** Model versions are immutable: a small cache saves reading a header per upload. */
export function globalVersions(store: Store): (id: string, spec: StudySpec) => Promise<GlobalVersion> {
  const cache = new Map<string, GlobalVersion>();
  return async (id, spec) => {
    let v = cache.get(id);
    if (!v) {
      const mv = await store.getModelVersion(id);
      if (!mv) throw new Error(`model version ${id} is missing`);
      const header = await blobHeader(store.blobs, mv.digest, mv.size);
      const rules = rulesOf(spec, header.tensors.map((t) => t.name));
      v = { digest: mv.digest, header, layout: updateLayout(headerLayout(header), rules), rules };
      if (cache.size > 64) cache.delete(cache.keys().next().value!);
      cache.set(id, v);
    }
    return v;
  };
}

/** 413 for an update (announced or sent) over its study's maxUpdateBytes, naming the limit; before any of it is read. */
export function refuseOversized(spec: StudySpec, bytes: number): void {
  const limit = maxUpdateBytesOf(spec);
  if (Number.isFinite(bytes) && bytes > limit) {
    throw new HttpError(413, 'update_too_large', `the update is ${bytes} bytes, over study ${spec.name}'s maxUpdateBytes limit of ${limit} bytes`);
  }
}

export type Refuse = (status: number, code: string, reason: string) => Promise<never>;

/**
 * The refusal of one task's result: one refusal row per (task, code) counting the attempts and an audit entry
 * for the 1st, 2nd, 4th, 8th… of them, with the digest of what was sent, in one transaction; then the HTTP error.
 */
export function refuser(ctx: RouteContext, task: TaskRow, site: SiteRow, sentDigest: string | null): Refuse {
  return async (status, code, reason) => {
    const t = ctx.now();
    await ctx.store.transaction(async (tx) => {
      const count = await tx.countRefusal({ study_id: task.study_id, round: task.round, site_id: site.id, task_id: task.id, code, reason, at: t });
      if (auditsRefusal(count)) await appendAudit(tx, ctx.audit.key, { ts: t, actor: site.id, kind: 'update.refused', subject: task.id, data: { study: task.study_id, round: task.round, code, reason, digest: sentDigest, count } });
    });
    ctx.bus.emit({ type: 'update.refused', studyId: task.study_id, round: task.round, siteId: site.id, reason });
    throw new HttpError(status, code, reason);
  };
}

/** Checks a fit update and returns its result metadata (or refuses). Reads `src` a chunk at a time. */
export async function checkFitUpdate(src: UpdateSource, global: GlobalVersion, blobs: BlobStore, spec: StudySpec, refuse: Refuse): Promise<ResultMeta> {
  // The header first: the update's tensors are checked against the study's (names, shapes, dtypes) before any
  // value is read, so a wrong or oversized layout costs no decoding.
  let header: SafetensorsHeader;
  try {
    header = await headerFrom((s, e) => src.read(s, e), src.size);
  } catch (e) {
    if (e instanceof SafetensorsError) return await refuse(400, 'malformed_update', `malformed safetensors: ${e.message}`);
    throw e;
  }
  // Under an F16/BF16 transport an F32 tensor may arrive narrowed (it is accumulated in float32 or wider).
  const mismatch = layoutDifference(inModelDtypes(headerLayout(header), global.layout, transportDtypes(spec)), global.layout);
  if (mismatch) return await refuse(400, 'wrong_shape', `update does not match the study's model: ${mismatch}`);
  const rawMeta = Object.hasOwn(header.metadata, RESULT_META_KEY) ? header.metadata[RESULT_META_KEY] : undefined;
  if (rawMeta === undefined) return await refuse(400, 'malformed_update', `safetensors metadata lacks "${RESULT_META_KEY}"`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(rawMeta);
  } catch {
    return await refuse(400, 'malformed_update', `"${RESULT_META_KEY}" metadata is not JSON`);
  }
  const problems = checkValue(ResultMetaSchema, parsed);
  if (problems.length) return await refuse(400, 'malformed_update', `result metadata: ${problems.join('; ')}`);
  const meta = parsed as ResultMeta;
  // Every value, tensor by tensor and chunk by chunk: finite, and (with a bound) its distance from the global model.
  // (`return await refuse`: the stream being left must not hold an unobserved rejection while it closes.)
  const globalOf = new Map(global.header.tensors.map((t) => [t.name, t]));
  let ss = 0;
  for (const e of header.tensors) {
    const g = globalOf.get(e.name)!;
    let at = 0;
    try {
      for await (const chunk of src.stream(header.dataStart + e.begin, header.dataStart + e.end)) {
        const values = valuesOf(chunk, e.dtype, e.name);
        const first = at / elementBytes(e);
        const i = indexOfNonFinite(values);
        if (i >= 0) return await refuse(400, 'non_finite', `update refused: tensor "${e.name}" has a non-finite value (${values[i]}) at index ${first + i}`);
        if (spec.maxUpdateNorm !== undefined) {
          // The same elements of the global tensor (its dtype may be wider than a narrowed transport's).
          const start = global.header.dataStart + g.begin + first * elementBytes(g);
          const base = decodeTensorValues(await blobs.read(global.digest, start, start + values.length * elementBytes(g)), g.dtype, g.name);
          for (let i = 0; i < values.length; i++) {
            const d = values[i]! - base[i]!;
            ss += d * d;
          }
        }
        at += chunk.length;
      }
    } catch (err) {
      if (err instanceof SafetensorsError) return await refuse(400, 'malformed_update', `malformed safetensors: ${err.message}`);
      throw err;
    }
  }
  if (meta.numExamples < 1) return await refuse(400, 'implausible_update', 'a fit result must come from at least one training example');
  if (spec.maxUpdateNorm !== undefined) {
    const norm = Math.sqrt(ss);
    if (!(norm <= spec.maxUpdateNorm)) return await refuse(400, 'update_norm', `update L2 norm ${norm.toPrecision(6)} exceeds the study's bound ${spec.maxUpdateNorm}`);
  }
  return meta;
}

const elementBytes = (e: TensorEntry) => (e.end - e.begin) / Math.max(1, e.shape.reduce((a, b) => a * b, 1));

/**
 * The checks every result passes after its own (a fit update's above, an evaluation's or analytics answer's
 * schema), then its acceptance: the update row (`blob`: where its bytes are, or how to store them once every check
 * passed; null when it has none), the
 * audit entry and the privacy ledger's row in one transaction (`inTx`: what else commits with it, e.g. the upload
 * row's removal). Answers the route's reply.
 */
export async function acceptResult(
  ctx: RouteContext,
  a: { task: TaskRow; site: SiteRow; spec: StudySpec; meta: ResultMeta; blob: BlobInfo | null | (() => Promise<BlobInfo>); sentDigest: string | null; refuse: Refuse; inTx?: (tx: Store) => Promise<void> },
): Promise<{ accepted: true; taskId: string; received: number; expected: number }> {
  const { store, audit, bus, engine, now } = ctx;
  const { task, site, spec, meta, refuse } = a;
  if (meta.taskId !== task.id) return refuse(400, 'wrong_task', `result names task ${meta.taskId} but was sent for ${task.id}`);
  if (task.kind === 'analytics') {
    // The answer's schema, and every count against the minimum the site states (analytics-rounds.ts).
    const why = analyticsAnswerProblem(task, meta);
    if (why) return refuse(400, 'analytics_answer', `site ${site.name}: ${why}`);
  }
  if (task.kind === 'fit') {
    // A DP study's result must say what it cost the site; under SecAgg+ it must come masked (routes/secagg.ts).
    if (spec.privacy?.secagg) return refuse(409, 'secagg_required', `study ${spec.name} aggregates under SecAgg+: send the masked update through /v1/agent/secagg/${task.id}/…`);
    const sp = spendProblem(spec, meta.privacy);
    if (sp) return refuse(400, 'privacy_report', sp);
  }
  // The example count must be plausible: no more than the cohort the site declared for this dataset.
  // And never more than it had declared when the study started: a cohort raised mid-study (audited, routes/sites.ts)
  // cannot buy a larger FedAvg weight in a running study.
  const cohort = await store.cohortSize(site.id, spec.dataset);
  if (cohort === undefined) return refuse(400, 'no_cohort', `site ${site.name} has declared no cohort size for dataset "${spec.dataset}" (PUT /v1/agent/cohorts)`);
  if (meta.numExamples > cohort) return refuse(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${cohort} examples site ${site.name} declared for "${spec.dataset}"`);
  const atStart = await studyCohortsOf(store).get(task.study_id, site.id);
  if (atStart !== undefined && meta.numExamples > atStart) {
    return refuse(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${atStart} examples site ${site.name} declared for "${spec.dataset}" when study ${spec.name} started`);
  }
  for (const [k, v] of Object.entries({ ...meta.trainMetrics, ...meta.evalMetrics })) {
    if (!Number.isFinite(v)) return refuse(400, 'non_finite', `metric ${k} is not finite`);
  }
  // The task's compute usage, when the result carries it: checked as the usage route checks it, recorded with the
  // update (once per task: a usage already posted on its own, or a result sent again, records nothing more).
  let usage: UsageToRecord | undefined;
  if (meta.usage) {
    try {
      usage = await usageRecordOf(store, site, task, meta.usage, now());
    } catch (e) {
      if (e instanceof HttpError) return refuse(e.status, e.code, e.message);
      throw e;
    }
  }
  const { usage: _usage, ...stored } = meta;
  try {
    // Bytes still in memory are stored only now, once every check passed: a refused result stores nothing.
    const blob = typeof a.blob === 'function' ? await a.blob() : a.blob;
    const t = now();
    const digest = blob?.digest ?? null;
    await store.acceptUpdate(
      { task_id: task.id, study_id: task.study_id, round: task.round, site_id: site.id, digest, size: blob?.size ?? null, num_examples: meta.numExamples, metrics: JSON.stringify(stored), received_at: t },
      async (tx) => {
        await appendAudit(tx, audit.key, { ts: t, actor: site.id, kind: 'update.accepted', subject: task.id, data: { study: task.study_id, round: task.round, kind: task.kind, digest: digest ?? a.sentDigest, numExamples: meta.numExamples } });
        // The privacy ledger moves with the accepted update, in the same transaction.
        if ((task.kind === 'fit' || task.kind === 'analytics') && meta.privacy) await recordSpendInTx(tx, audit.key, { taskId: task.id, studyId: task.study_id, siteId: site.id, round: task.round, spend: meta.privacy, at: t });
        if (usage) await recordUsageInTx(tx, { ...usage, row: { ...usage.row, recordedAt: t } });
        if (a.inTx) await a.inTx(tx);
      },
    );
  } catch (e) {
    if (e instanceof StoreConflict) throw new HttpError(409, 'conflict', e.message);
    throw e;
  }
  // Counts, not rows: reading the round's tasks after every upload made a round of N sites cost N² rows; and the
  // counts themselves at most once a second, or when this result may close the round (round-tally.ts).
  const progress = await roundTallyOf(store, now).accepted(task.study_id, task.round);
  const { updates: received, tasks: expected } = progress;
  bus.emit({ type: 'update.accepted', studyId: task.study_id, round: task.round, siteId: site.id, received, expected });
  // The engine at once when this answer may close the round (or fill an asynchronous study's buffer); otherwise its
  // own ticks suffice (a tick per upload was a sixth of a round's statements).
  if (spec.async || progress.updates + progress.closedWithoutResult >= progress.tasks) engine.roundReady(task.study_id);
  return { accepted: true, taskId: task.id, received, expected };
}
