/**
 * What the coordinator's read routes answer (sites, studies, study detail) and what its live event
 * stream carries, as TypeBox schemas. The routes declare them as response schemas, so they appear in
 * `/openapi.json`; the dashboard imports the static types (types only, no runtime code).
 *
 * Response objects allow additional properties: Fastify serialises responses through these schemas and
 * would otherwise silently drop a field a route adds before its schema here is updated.
 */
import { Type, type Static } from '@sinclair/typebox';
import { StudySpecSchema, type TaskProgress } from './api.js';
import { TaskErrorViewSchema } from './task-errors.js';

const open = { additionalProperties: true } as const;
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const NullableNumber = Type.Union([Type.Number(), Type.Null()]);

export const SiteViewSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    institution: Nullable(Type.String()),
    jurisdiction: Nullable(Type.String({ description: 'ISO country code of the data, e.g. IN or JP' })),
    status: Type.String(),
    createdAt: Type.Number(),
    lastSeenAt: NullableNumber,
    online: Type.Boolean(),
    /** What its agent declared about its trainer (PUT /v1/agent/trainer); null before its agent first ran. */
    trainer: Type.Optional(Type.Union([Type.Object({ kind: Type.String(), description: Type.String(), models: Type.Array(Type.String()), features: Type.Array(Type.String()) }, open), Type.Null()])),
  },
  open,
);
export type SiteView = Static<typeof SiteViewSchema>;

export const StudySummarySchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.String(),
    round: Type.Integer({ description: 'the last committed round' }),
    rounds: Type.Integer(),
    strategy: Type.String(),
    createdAt: Type.Number(),
    updatedAt: Type.Number(),
    error: Nullable(Type.String()),
  },
  open,
);
export type StudySummary = Static<typeof StudySummarySchema>;

export const MetricViewSchema = Type.Object(
  {
    round: Type.Integer(),
    site: Nullable(Type.String({ description: 'site name; null for the global (aggregated) value' })),
    phase: Type.String({ description: "'fit' (training) or 'evaluate' (the incoming global model on each site's test split)" }),
    name: Type.String(),
    value: Type.Number(),
  },
  open,
);
export type MetricView = Static<typeof MetricViewSchema>;

/** An asynchronous study's progress (coordinator/async-rounds.ts asyncView). */
export const AsyncViewSchema = Type.Object(
  {
    version: Type.Integer({ description: 'versions committed so far' }),
    versions: Type.Integer({ description: 'versions the study makes (its rounds)' }),
    bufferSize: Type.Integer(),
    buffered: Type.Integer({ description: 'updates accepted and waiting for the next fold' }),
    inFlight: Type.Array(Type.Object({ site: Type.String(), baseVersion: Type.Integer() }, open)),
    staleness: Type.Object({
      histogram: Type.Array(Type.Object({ staleness: Type.Integer(), count: Type.Integer() }, open), { description: 'folded updates by staleness (versions behind when folded)' }),
      mean: NullableNumber,
      max: NullableNumber,
      refused: Type.Integer({ description: 'updates refused as staler than maxStaleness' }),
    }, open),
    versionTimes: Type.Array(Type.Object({ version: Type.Integer(), at: Type.Number() }, open)),
  },
  open,
);
export type AsyncView = Static<typeof AsyncViewSchema>;

export const StudyDetailSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.String(),
    error: Nullable(Type.String()),
    spec: StudySpecSchema,
    round: Type.Integer(),
    participants: Type.Array(Type.Object({ id: Type.String(), name: Type.String() }, open)),
    openRound: Type.Union([
      Type.Object(
        {
          round: Type.Integer(),
          kind: Type.String(),
          deadlineAt: NullableNumber,
          received: Type.Integer(),
          expected: Type.Integer(),
          /** Tasks of this round its sites refused (policy, budget) or could not run (task errors): answered, without a result. */
          refused: Type.Optional(Type.Integer()),
          failed: Type.Optional(Type.Integer()),
          /** The latest progress line of each running task (site names), as its trainer printed it. */
          progress: Type.Optional(Type.Array(Type.Object({ site: Type.String(), taskId: Type.String(), at: Type.Number(), step: Type.Optional(Type.Integer()), of: Type.Optional(Type.Integer()),
            metrics: Type.Optional(Type.Record(Type.String(), Type.Number())), message: Type.Optional(Type.String()) }, open))),
        },
        open,
      ),
      Type.Null(),
    ]),
    /** The model's tensors (name, dtype, shape, rule) from its latest version; null before a custom model's initial weights arrive. */
    model: Type.Optional(Type.Union([
      Type.Object({
        version: Type.String(),
        digest: Type.String(),
        parameters: Type.Integer(),
        tensors: Type.Array(Type.Object({ name: Type.String(), dtype: Type.String(), shape: Type.Array(Type.Integer()), rule: Type.String() }, open)),
      }, open),
      Type.Null(),
    ])),
    rounds: Type.Array(
      Type.Object(
        { round: Type.Integer(), kind: Type.String(), status: Type.String(), openedAt: NullableNumber, committedAt: NullableNumber, modelVersionId: Nullable(Type.String()) },
        open,
      ),
    ),
    metrics: Type.Array(MetricViewSchema),
    refusals: Type.Array(Type.Object({ round: Type.Union([Type.Integer(), Type.Null()]), site: Nullable(Type.String()), reason: Type.String(), at: Type.Number() }, open)),
    /** Tasks a site could not run (reason code and message), oldest first; the latest per site is what it is stuck on. */
    taskErrors: Type.Optional(Type.Array(TaskErrorViewSchema)),
    /** An asynchronous study (spec.async): versions made, the buffer, tasks out and the staleness of folded updates. */
    async: Type.Optional(AsyncViewSchema),
  },
  open,
);
export type StudyDetail = Static<typeof StudyDetailSchema>;

/** Events on `GET /v1/events` (Server-Sent Events; the SSE event name equals `type`). */
export type StreamEvent =
  | { type: 'ready'; role: string; study: string | null; expiresAt: number }
  | { type: 'round.opened'; studyId: string; round: number; kind: string; sites: number }
  | { type: 'update.accepted'; studyId: string; round: number; siteId: string; received: number; expected: number }
  | { type: 'update.refused'; studyId: string | null; round: number | null; siteId: string | null; reason: string }
  | { type: 'round.committed'; studyId: string; round: number; kind: string; metrics: Record<string, number> }
  | { type: 'study.status'; studyId: string; status: string; error?: string | null }
  /** A progress line of a site's trainer (step of steps, running metrics, a message), forwarded by its agent. */
  | { type: 'task.progress'; studyId: string; round: number; siteId: string; taskId: string; progress: TaskProgress }
  /** A site could not run its task: its reason code (TASK_ERROR_CODES) and message, at once. */
  | { type: 'task.failed'; studyId: string; round: number; siteId: string; site: string; taskId: string; code: string; message: string }
  | { type: 'expired'; at: number }
  /** The token's holder was revoked, its key rotated or its role changed: the stream ends; do not reconnect with the same key. */
  | { type: 'revoked'; reason: string };
export const STREAM_EVENT_TYPES = ['ready', 'round.opened', 'update.accepted', 'update.refused', 'round.committed', 'study.status', 'task.progress', 'task.failed', 'expired', 'revoked'] as const;
