/**
 * What every route of the coordinator's API takes in its path and query string and what it answers, as TypeBox
 * schemas (the request bodies are in api.ts, the read views in views.ts). Every route declares them, so
 * `/openapi.json` describes the whole API; a test (coordinator/openapi.test.ts) fails on a route without them.
 *
 * Replies are written with JSON.stringify, never through a schema (coordinator/plugins/replies.ts), so no field a
 * route answers is ever dropped or coerced; under test every reply is checked against its schema instead. Reply
 * objects are therefore open (they may carry more than they document), and what they document must be true.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { DpSpecSchema, SecAggSpecSchema, UsageBody } from './api.js';

const open = { additionalProperties: true } as const;
const strict = { additionalProperties: false } as const;
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Ms = (description = 'ms since the epoch') => Type.Number({ description });

// ---------------------------------------------------------------- paths, query strings, bodies that are not JSON

/** A path segment naming an object (an id or a name). */
const Segment = Type.String({ minLength: 1, maxLength: 256 });
export const IdParams = Type.Object({ id: Segment }, strict);
export const TaskIdParams = Type.Object({ taskId: Segment }, strict);
/** A route that reads no query string refuses one. */
export const NoQuery = Type.Object({}, strict);
/** Query values arrive as text; a pattern does the integer check (bodies are never coerced, nor are queries). */
export const WaitQuery = Type.Object({ waitMs: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$', description: 'long-poll up to this many ms (capped by the coordinator)' })) }, strict);

/**
 * A raw body (a safetensors file). It validates as what the parser hands over (a Buffer: a JSON-schema object) and
 * is documented as `string`/`binary` (`contentMediaType` marks it for coordinator/routes/web.ts).
 */
export const BinaryBody = Type.Unsafe<Uint8Array>({ type: 'object', contentMediaType: 'application/octet-stream', description: 'the raw bytes (a safetensors file)' });
/** A raw reply: documented only (replies that are bytes or text are not serialised). */
export const BinaryReply = Type.Unsafe<Uint8Array>({ type: 'string', format: 'binary', description: 'the raw bytes (a safetensors file)' });
export const TextReply = (description: string) => Type.String({ description });

/** Marks a JSON body a route may also be sent without (coordinator/routes/web.ts documents it as not required). */
export const OPTIONAL_BODY = 'setu: optional body';
/**
 * A JSON body that may be left out. Declared per content type, Fastify validates it only when one is sent as
 * application/json (the only JSON type read); a required body is declared as the schema itself, which Fastify
 * validates whatever arrives, nothing included.
 */
export function optionalJsonBody<T extends TSchema>(schema: T): { content: Record<string, { schema: TSchema }> } {
  return { content: { 'application/json': { schema: { ...schema, $comment: OPTIONAL_BODY } } } };
}
/** A route that takes no body: none, or an empty JSON object. */
export const NoBody = optionalJsonBody(Type.Object({}, strict));
export const binaryBody = { content: { 'application/octet-stream': { schema: BinaryBody } } };

// ---------------------------------------------------------------- small answers

export const OkReply = Type.Object({ ok: Type.Literal(true) }, open);
export const RecordedReply = Type.Object({ recorded: Type.Literal(true) }, open);
export const NoContent = Type.Null({ description: 'nothing happened before the wait ended: ask again' });
export const RevokedReply = Type.Object({ id: Type.String(), name: Type.String(), status: Type.Literal('revoked') }, open);

// ---------------------------------------------------------------- identities

export const CohortsReply = Type.Object({ siteId: Type.String(), cohorts: Type.Record(Type.String(), Type.Number()) }, open);
export const UserViewSchema = Type.Object({ id: Type.String(), name: Type.String(), role: Type.String(), institution: Nullable(Type.String()), status: Type.String(), createdAt: Ms() }, open);
export const WhoAmISchema = Type.Object(
  {
    kind: Type.Union([Type.Literal('site'), Type.Literal('user')]),
    id: Type.String(),
    name: Type.String(),
    role: Type.String(),
    institution: Type.Optional(Nullable(Type.String())),
    actions: Type.Array(Type.String(), { description: 'what this identity may do (governance/roles.ts)' }),
  },
  open,
);
export type WhoAmI = Static<typeof WhoAmISchema>;
export const KeyRotatedReply = Type.Object({ id: Type.String(), publicKey: Type.String() }, open);

// ---------------------------------------------------------------- audit

export const AuditQuery = Type.Object(
  { after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'entries after this seq' })), limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,7}$' })) },
  strict,
);
export const ChainVerdictSchema = Type.Union([
  Type.Object({ ok: Type.Literal(true), head: Type.String(), count: Type.Integer() }, open),
  Type.Object({ ok: Type.Literal(false), firstBad: Type.Object({ index: Type.Integer(), seq: Nullable(Type.Integer()) }, open), reason: Type.String() }, open),
]);

// ---------------------------------------------------------------- studies

export const StudyCreatedReply = Type.Object({ id: Type.String(), status: Type.String(), next: Type.Optional(Type.String({ description: 'what the lead must do next (a custom model: upload its initial weights)' })) }, open);
export const StudyStatusReply = Type.Object({ id: Type.String(), status: Type.String() }, open);
export const StopBody = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 2000 })) }, strict);
export const ExportQuery = Type.Object({ format: Type.Optional(Type.Union([Type.Literal('csv'), Type.Literal('json')])) }, strict);
export const ModelQuery = Type.Object({ round: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$', description: 'the model after this fit round (0: the initial model)' })) }, strict);
export const StudyExportSchema = Type.Object({ study: Type.Object({ id: Type.String() }, open), columns: Type.Unknown(), rows: Type.Array(Type.Unknown()) }, open);
export const ModelCardQuery = Type.Object({ format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('markdown')])) }, strict);
export const ModelCardSchema = Type.Object({}, { ...open, description: 'the model card (governance/model-card.ts)' });

// ---------------------------------------------------------------- governance

export const TermsSchema = Type.Object(
  {
    purpose: Type.String({ minLength: 1, maxLength: 2000 }),
    conditions: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 2000 }), { maxItems: 50 })),
    expiresAt: Type.Optional(Type.Number()),
  },
  strict,
);
export const ApproveBody = Type.Object({ site: Type.String({ minLength: 1 }), terms: TermsSchema }, strict);
export const SignoffBody = Type.Object({ site: Type.Optional(Type.String({ minLength: 1 })) }, strict);
export const ReasonBody = Type.Object({ site: Type.String({ minLength: 1 }), reason: Type.String({ minLength: 1, maxLength: 2000 }) }, strict);
export type ApproveRequest = Static<typeof ApproveBody>;
export type SignoffRequest = Static<typeof SignoffBody>;
export type ReasonRequest = Static<typeof ReasonBody>;

const ApprovalView = Type.Object({ site: Type.String(), status: Type.String(), terms: Type.Optional(Type.Unknown()), reason: Type.Optional(Type.String()), by: Type.Optional(Type.String()), at: Type.Optional(Type.Number()), fromRound: Type.Optional(Type.Integer()) }, open);
export const LifecycleViewSchema = Type.Object({ id: Type.String(), state: Type.String(), approvals: Type.Array(ApprovalView), eligible: Type.Array(Type.String()) }, open);
export const GovernanceViewSchema = Type.Object(
  {
    status: Type.String({ description: "the study's own status (it can be failed, which the lifecycle does not model)" }),
    id: Type.String(),
    state: Type.String({ description: "the lifecycle's state" }),
    approvals: Type.Array(ApprovalView),
    eligible: Type.Array(Type.String()),
    events: Type.Array(Type.Object({ kind: Type.String(), actor: Type.String(), data: Type.Unknown(), at: Ms() }, open)),
  },
  open,
);
const ViolationSchema = Type.Object({ jurisdiction: Type.String(), site: Nullable(Type.String()), rule: Type.String(), source: Type.String(), message: Type.String() }, open);
const SignoffSchema = Type.Object({ role: Type.String(), by: Type.String(), jurisdiction: Type.String(), site: Type.Optional(Type.String()) }, open);
export const SignoffReply = Type.Object({ signoff: SignoffSchema, missing: Type.Array(ViolationSchema) }, open);
export const ReleaseStateSchema = Type.Object({ released: Type.Boolean(), signoffs: Type.Array(SignoffSchema), missing: Type.Array(ViolationSchema) }, open);
export const ReleasedReply = Type.Object({ released: Type.Literal(true), model: Nullable(Type.String()), digest: Nullable(Type.String()) }, open);
export const PoliciesSchema = Type.Object(
  { dir: Type.String(), coordinatorJurisdiction: Nullable(Type.String()), policies: Type.Array(Type.Object({ jurisdiction: Type.String(), name: Type.String(), version: Type.Number() }, open)) },
  open,
);
export const PolicyCheckSchema = Type.Object(
  {
    ok: Type.Boolean({ description: 'true only when start would succeed now' }),
    violations: Type.Array(ViolationSchema),
    remaining: Type.Array(Type.Object({ site: Nullable(Type.String()), what: Type.String() }, open)),
    approvals: Type.Array(Type.Object({ site: Type.String(), status: Type.String() }, open)),
    plan: Type.Unknown(),
    sites: Type.Unknown(),
    placements: Type.Unknown(),
    unchecked: Type.Unknown(),
  },
  open,
);
export const StartedReply = Type.Object(
  { id: Type.String(), status: Type.Literal('running'), participants: Type.Integer(), placements: Type.Unknown(), unchecked: Type.Unknown() },
  open,
);

// ---------------------------------------------------------------- consortium and compute

export const LinkSiteBody = Type.Object({ site: Type.String({ minLength: 1, maxLength: 100 }) }, strict);
export const InstitutionViewSchema = Type.Object(
  { id: Type.String(), name: Type.String(), kind: Type.String(), jurisdiction: Type.String(), createdAt: Ms(), sites: Type.Optional(Type.Array(Type.String())), resources: Type.Optional(Type.Array(Type.String())) },
  open,
);
export const SiteLinkedReply = Type.Object({ site: Type.String(), institution: Type.String(), jurisdiction: Type.String() }, open);

export const ComputeProfileBody = Type.Object(
  {
    mode: Type.Union([Type.Literal('own'), Type.Literal('placed')]),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    gpus: Type.Optional(Type.Integer({ minimum: 0, maximum: 1024 })),
    ramGiB: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000 })),
    minGpuMemoryGiB: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    gpuType: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' })),
  },
  strict,
);
export const JobBody = Type.Object({ jobId: Type.String({ minLength: 1, maxLength: 200 }), state: Type.String({ minLength: 1, maxLength: 40 }) }, strict);
/** A task's compute usage (POST /v1/agent/tasks/:id/usage); defined beside ResultMeta, which may carry it too. */
export { UsageBody } from './api.js';
export const RefuseBody = Type.Object({ reason: Type.String({ minLength: 1, maxLength: 4000 }) }, strict);
export type ComputeProfileRequest = Static<typeof ComputeProfileBody>;
export type JobRequest = Static<typeof JobBody>;
export type UsageRequest = Static<typeof UsageBody>;
export type RefuseRequest = Static<typeof RefuseBody>;

const ResourceView = Type.Object({ id: Type.String(), name: Type.String(), institution: Type.String(), jurisdiction: Type.String(), scheduler: Type.String(), capacity: Type.Unknown() }, open);
export const ResourceRegisteredReply = Type.Composite([ResourceView, Type.Object({ outcome: Type.String({ description: 'created, updated or unchanged' }) })], open);
export const ResourceListSchema = Type.Array(Type.Composite([ResourceView, Type.Object({ status: Type.String(), free: Type.Unknown(), activeTasks: Type.Integer() })], open));
export const QueuesSchema = Type.Array(
  Type.Object(
    {
      resource: Type.String(),
      scheduler: Type.String(),
      jurisdiction: Type.String(),
      active: Type.Array(Type.Object({ task: Type.String(), site: Type.String(), state: Type.String(), jobId: Nullable(Type.String()), placedAt: Ms() }, open)),
      finished: Type.Integer(),
    },
    open,
  ),
);
export const UsageQuery = Type.Object({ study: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) }, strict);
export const LedgerQuery = Type.Object({ study: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })), countries: Type.Optional(Type.String({ maxLength: 200, description: 'comma-separated ISO codes (default IN,JP)' })) }, strict);
export const UsageReply = Type.Object({ records: Type.Array(Type.Object({ taskId: Type.String(), studyId: Type.String(), siteId: Type.String(), resourceId: Type.String() }, open)), summary: Type.Unknown() }, open);
export const LedgerReply = Type.Object({ summary: Type.Unknown(), contribution: Type.Unknown() }, open);
export const ComputeProfileReply = Type.Object({ site: Type.String(), compute: Type.Unknown() }, open);
const PlacementSchema = Type.Object({ taskId: Type.String(), studyId: Type.String(), siteId: Type.String(), resourceId: Type.String(), reason: Type.String(), placedAt: Ms(), jobId: Nullable(Type.String()), state: Type.String() }, open);
export const PlacementReply = Type.Object({ placement: PlacementSchema, resource: Type.Unknown({ description: 'the resource it was placed on, as registered' }) }, open);

// ---------------------------------------------------------------- agents

// ---------------------------------------------------------------- chunked uploads of fit results (coordinator/routes/uploads.ts)

const Sha256Hex = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'sha256 of the whole update, lowercase hex' });
/** POST /v1/agent/tasks/:id/uploads: the update the site is about to send. */
export const UploadStartBody = Type.Object({ size: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'bytes of the whole update (a safetensors file)' }), digest: Sha256Hex }, strict);
export const UploadReply = Type.Object({
  uploadId: Type.String(),
  taskId: Type.String(),
  size: Type.Integer(),
  digest: Type.String(),
  received: Type.Integer({ description: 'bytes the coordinator holds: send the next chunk at this offset' }),
  chunkBytes: Type.Integer({ description: 'the largest chunk one PUT may carry' }),
}, open);
export const ChunkQuery = Type.Object({ offset: Type.String({ pattern: '^[0-9]{1,16}$', description: 'where this chunk starts in the update (the received count)' }) }, strict);
export const ChunkReply = Type.Object({ uploadId: Type.String(), received: Type.Integer(), size: Type.Integer() }, open);
/** 409 of a chunk sent at another offset than the received count, or of a completion before every byte arrived. */
export const OffsetConflictReply = Type.Object({ error: Type.String(), message: Type.String(), received: Type.Integer() }, open);

export const ResultAcceptedReply = Type.Object({ accepted: Type.Literal(true), taskId: Type.String(), received: Type.Integer(), expected: Type.Integer() }, open);
export const TrainerDeclaredReply = Type.Object({ siteId: Type.String(), trainer: Type.Unknown() }, open);

export const PrivacyQuery = Type.Object({ entries: Type.Optional(Type.Union(['0', '1', 'true', 'false'].map((v) => Type.Literal(v)))) }, strict);
export const StudyPrivacySchema = Type.Object(
  {
    studyId: Type.String(),
    status: Type.String(),
    dp: Nullable(DpSpecSchema),
    secagg: Nullable(SecAggSpecSchema),
    sites: Type.Array(
      Type.Object(
        {
          site: Type.String(),
          siteId: Type.String(),
          spent: Type.Object({ epsilon: Type.Number(), delta: Type.Number() }, open),
          budget: Type.Object({ epsilon: Type.Number(), delta: Type.Number() }, open),
          remaining: Type.Number({ description: 'ε left under the budget' }),
        },
        open,
      ),
    ),
    entries: Type.Optional(Type.Array(Type.Object({ round: Type.Integer(), site: Type.String(), taskId: Type.String(), mechanism: Type.String(), steps: Type.Integer(), epsilon: Type.Number(), delta: Type.Number(), at: Ms() }, open))),
  },
  open,
);

/** The SecAgg+ stages (privacy/secagg/wire.ts encodes and decodes `msg`). */
export const SecAggBody = Type.Object({ session: Type.String({ minLength: 1, maxLength: 256 }), msg: Type.Unknown(), meta: Type.Optional(Type.Unknown({ description: 'masked stage only: the result metadata (ResultMeta)' })) }, strict);
export type SecAggRequest = Static<typeof SecAggBody>;
export const SecAggPollQuery = Type.Object({ session: Type.Optional(Type.String({ maxLength: 256 })), waitMs: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$' })) }, strict);
export const SecAggSetupReply = Type.Object({ session: Type.String(), setup: Type.Unknown() }, open);
export const SecAggStageReply = Type.Unknown({ description: 'the stage message for this site (privacy/secagg/wire.ts)' });

/** POST /v1/keys/rotate: the new raw Ed25519 public key (the request is signed with the old one). */
export const RotateKeyBody = Type.Object({ publicKey: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }) }, strict);
export type RotateKeyRequest = Static<typeof RotateKeyBody>;
export type StopRequest = Static<typeof StopBody>;
