/**
 * Wire types of the coordinator's public API, as TypeBox schemas: the same objects validate requests
 * (Fastify), validate files (study specs, via `checkValue`), document the API (OpenAPI) and give the
 * TypeScript types (Static<>). Every object schema refuses unknown properties.
 */
import { AuditCheckpointSchema } from './audit-checkpoint-schema.js';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value, ValueErrorType } from '@sinclair/typebox/value';
import { DataSchemaT, NormStatsSchema, PrepareReportSchema } from './data-schema.js';
import { AnalyticsResultSchema, AnalyticsSpecSchema, AnalyticsTaskSchema } from './analytics.js';

const strict = { additionalProperties: false } as const;
const Id = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$' });
const Name = Type.String({ minLength: 1, maxLength: 200 });
const Activation = Type.Union([Type.Literal('relu'), Type.Literal('tanh')]);
const Dim = Type.Integer({ minimum: 1, maximum: 1_000_000 });

/**
 * The longest an agent waits between tries to reach the coordinator (site/http.ts). After an outage a site may
 * first call again up to this long after the coordinator is back, so the engine gives an open round this much on
 * top of the time it lost (coordinator/engine.ts catchUp).
 */
export const AGENT_MAX_RETRY_DELAY_MS = 15_000;

export const ModelSpecSchema = Type.Union([
  Type.Object({ kind: Type.Literal('logistic'), inputDim: Dim }, strict),
  Type.Object(
    { kind: Type.Literal('mlp'), inputDim: Dim, hidden: Type.Array(Dim, { minItems: 1, maxItems: 16 }), activation: Activation, dropout: Type.Optional(Type.Number({ minimum: 0, maximum: 0.95 })) },
    strict,
  ),
  Type.Object(
    {
      kind: Type.Literal('cox'),
      inputDim: Dim,
      hidden: Type.Optional(Type.Array(Dim, { maxItems: 16 })),
      activation: Type.Optional(Activation),
      ties: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('breslow')])),
      /** What the partial log-likelihood of a batch is divided by: its observed events (default; pycox, DeepSurv) or its rows (FLamby's Fed-TCGA-BRCA loss). */
      normalise: Type.Optional(Type.Union([Type.Literal('events'), Type.Literal('batch')])),
    },
    strict,
  ),
  /**
   * A model defined by its initial weights (any tensor names, shapes and dtypes), trained by each site's own code
   * through the external-trainer contract (docs/external-trainer.md). The study lead uploads the weights to the
   * draft study (PUT /v1/studies/:id/initial-weights) before it starts.
   */
  Type.Object(
    {
      kind: Type.Literal('custom'),
      /** What the sites' trainers build, e.g. "wdbc-mlp" or "resnet18"; shown in the model card. */
      name: Type.String({ minLength: 1, maxLength: 200 }),
      description: Type.Optional(Type.String({ maxLength: 10_000 })),
    },
    strict,
  ),
]);
export type StudyModelSpec = Static<typeof ModelSpecSchema>;

export const OptimizerSchema = Type.Object(
  {
    kind: Type.Union([Type.Literal('sgd'), Type.Literal('adam')]),
    lr: Type.Number({ exclusiveMinimum: 0, maximum: 100 }),
    momentum: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    betas: Type.Optional(Type.Tuple([Type.Number({ minimum: 0, maximum: 1 }), Type.Number({ minimum: 0, maximum: 1 })])),
    eps: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  },
  strict,
);

export const FitConfigSchema = Type.Object(
  {
    localSteps: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    epochs: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
    batchSize: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    optimizer: OptimizerSchema,
    proximalMu: Type.Optional(Type.Number({ minimum: 0 })),
    extra: Type.Optional(Type.Record(Type.String(), Type.Union([Type.Number(), Type.String(), Type.Boolean()]))),
  },
  strict,
);

/**
 * A per-tensor rule of a study: `aggregate` (the default: the strategy combines it), `local` (never leaves the
 * site; each site keeps its own copy across rounds, FedBN-style personalised layers) or `skip` (frozen at its
 * initial value). `match` is a tensor name or a pattern in which `*` matches any run of characters; the first
 * rule that matches a tensor decides, and every rule must match at least one tensor of the model.
 */
export const TensorRuleSchema = Type.Object(
  { match: Type.String({ minLength: 1, maxLength: 500 }), rule: Type.Union([Type.Literal('aggregate'), Type.Literal('local'), Type.Literal('skip')]) },
  strict,
);

/**
 * A study's privacy settings (see src/privacy/README.md). `dp.level`: 'sample' = DP-SGD inside each site's local
 * training (per-example clipping to clipNorm, Gaussian noise); 'client' = DP-FedAvg (each site clips its update
 * to clipNorm; the noise is added centrally by the coordinator or, 'distributed', by the sites under SecAgg+).
 * (epsilon, delta) is the target for the whole study; without noiseMultiplier the accountant derives σ from it.
 * `secagg`: SecAgg+ in every fit round (the coordinator only ever sees masked vectors and their sum).
 */
export const DpSpecSchema = Type.Object(
  {
    level: Type.Union([Type.Literal('sample'), Type.Literal('client')]),
    epsilon: Type.Number({ exclusiveMinimum: 0, maximum: 1000 }),
    delta: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }),
    clipNorm: Type.Number({ exclusiveMinimum: 0, maximum: 1e6 }),
    noiseMultiplier: Type.Optional(Type.Number({ minimum: 0, maximum: 1e6 })),
    mode: Type.Optional(Type.Union([Type.Literal('central'), Type.Literal('distributed')])),
  },
  strict,
);
export type DpSpec = Static<typeof DpSpecSchema>;
export const SecAggSpecSchema = Type.Object(
  {
    degree: Type.Optional(Type.Integer({ minimum: 2, maximum: 1 << 20 })),
    threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 << 20 })),
    quantBits: Type.Optional(Type.Integer({ minimum: 1, maximum: 31 })),
    /** Update values (differences from the global model) are clamped to ±clipRange before quantisation (default 4, or clipNorm under client-level DP). */
    clipRange: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1e6 })),
    /** How long each stage after the first waits for sites before treating the missing ones as dropped (default 30). */
    stageTimeoutSeconds: Type.Optional(Type.Number({ minimum: 0.1, maximum: 86400 })),
  },
  strict,
);
export type SecAggSpec = Static<typeof SecAggSpecSchema>;
export const StudyPrivacySchema = Type.Object({ dp: Type.Optional(DpSpecSchema), secagg: Type.Optional(SecAggSpecSchema) }, strict);
export type StudyPrivacy = Static<typeof StudyPrivacySchema>;

/**
 * An asynchronous study (FedBuff, Nguyen et al. 2022): sites train whenever they are free on the latest version
 * they can get, and the coordinator folds every `bufferSize` arriving updates into a new version, each update's
 * delta weighted by its staleness s (versions committed since the one it trained from): `polynomial` (1+s)^-a
 * (a = `stalenessExponent`, default 0.5, FedBuff's choice), `constant` 1, or `hinge` 1 up to `hingeAfter` (b,
 * default 4) then 1/(`hingeSlope`·(s−b)+1) (FedAsync's, slope default 10). Updates more than `maxStaleness`
 * versions behind are refused. The study's `rounds` is the number of versions it makes.
 * See coordinator/async-rounds.ts.
 */
export const AsyncSpecSchema = Type.Object(
  {
    bufferSize: Type.Integer({ minimum: 1, maximum: 100_000 }),
    stalenessWeight: Type.Optional(Type.Union([Type.Literal('polynomial'), Type.Literal('constant'), Type.Literal('hinge')])),
    stalenessExponent: Type.Optional(Type.Number({ minimum: 0, maximum: 10 })),
    hingeAfter: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
    hingeSlope: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1000 })),
    maxStaleness: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
    /** Server learning rate η: version v+1 = v + η · (weighted mean delta); default 1. */
    serverLr: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100 })),
  },
  strict,
);
export type AsyncSpec = Static<typeof AsyncSpecSchema>;

export const StudySpecSchema = Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String({ maxLength: 10_000 })),
    /** The dataset key each site maps to a local file in its own config. */
    dataset: Type.String({ minLength: 1, maxLength: 100 }),
    model: ModelSpecSchema,
    strategy: Type.Object({ name: Type.String({ minLength: 1 }), params: Type.Optional(Type.Record(Type.String(), Type.Unknown())) }, strict),
    rounds: Type.Integer({ minimum: 1, maximum: 100_000 }),
    fit: FitConfigSchema,
    /** Site names taking part; default: every active site when the study starts. */
    sites: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, uniqueItems: true })),
    /** Fewest results a round may aggregate once its deadline passes (default: all its sites). */
    minSites: Type.Optional(Type.Integer({ minimum: 1 })),
    roundTimeoutSeconds: Type.Optional(Type.Number({ minimum: 1, maximum: 7 * 86400 })),
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 })),
    /**
     * The data every site must hold, for CSV datasets: columns, task, preprocessing, split. With it,
     * the study begins with a prepare round in which each site checks its file (the study refuses to
     * start, naming the site and the column, on any mismatch) and, for global normalisation, reports
     * its column sums.
     */
    dataSchema: Type.Optional(DataSchemaT),
    /** Largest L2 norm of an update (its difference from the global model it started from); larger ones are refused. */
    maxUpdateNorm: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    /**
     * Largest update a site may send, bytes (default DEFAULT_MAX_UPDATE_BYTES, 2 GiB): a larger one, announced or
     * sent, is refused with 413 before its body is read.
     */
    maxUpdateBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: Number.MAX_SAFE_INTEGER })),
    /** Differential privacy and secure aggregation (validated further at creation: see coordinator/privacy.ts). */
    privacy: Type.Optional(StudyPrivacySchema),
    /** Per-tensor rules (aggregate, local, skip), checked against the model's tensors when its weights are known. */
    tensorRules: Type.Optional(Type.Array(TensorRuleSchema, { maxItems: 1000 })),
    /**
     * How updates travel: with `updateDtype` F16 or BF16 the agent sends each F32 tensor of its update in that dtype
     * (half the bytes) and the coordinator accumulates in float32 or wider; F32 (the default) sends them as they are.
     * Not with SecAgg+ or differential privacy (refused at creation: see coordinator/study-model.ts).
     */
    transport: Type.Optional(Type.Object({ updateDtype: Type.Optional(Type.Union([Type.Literal('F32'), Type.Literal('F16'), Type.Literal('BF16')])) }, strict)),
    /**
     * An analytics study: its queries run instead of training (protocol/analytics.ts), one round each (a Cox fit: one
     * round per Newton step), through the same approvals, agents, privacy ledger and audit. Needs a dataSchema.
     */
    analytics: Type.Optional(AnalyticsSpecSchema),
    /** Asynchronous federation (FedBuff) instead of rounds: `rounds` then counts the versions it makes (AsyncSpecSchema). */
    async: Type.Optional(AsyncSpecSchema),
  },
  strict,
);
export type StudySpec = Static<typeof StudySpecSchema>;

/** A study's largest update when its spec names none: 2 GiB (a 500M-parameter float32 model). */
export const DEFAULT_MAX_UPDATE_BYTES = 2 * 1024 ** 3;
export const maxUpdateBytesOf = (spec: Pick<StudySpec, 'maxUpdateBytes'>): number => spec.maxUpdateBytes ?? DEFAULT_MAX_UPDATE_BYTES;

/** Answer of PUT /v1/studies/:id/initial-weights: what the study's model now is. */
export const InitialWeightsResponseSchema = Type.Object({
  id: Type.String(),
  modelVersionId: Type.String(),
  digest: Type.String({ description: 'sha256 hex of the safetensors file as stored' }),
  tensors: Type.Integer(),
  parameters: Type.Integer(),
  bytes: Type.Integer(),
});
export type InitialWeightsResponse = Static<typeof InitialWeightsResponseSchema>;

/**
 * What a site's trainer can do, declared by its agent (PUT /v1/agent/trainer) like its cohorts and compute, so a
 * study it cannot serve is refused when it starts, with the reason, never at task time.
 * `models`: the model kinds it trains (`custom` = a model defined by its initial weights). `features`: `evaluate`
 * (reports metrics of given weights), `fedprox` (applies the proximal term), `scaffold` (SCAFFOLD's control
 * variates), `dp-sgd` (sample-level DP-SGD by the agent's plan), `dp-client` (the agent clips and noises the
 * update for client-level DP), `secagg` (the agent masks the update for SecAgg+), `tensor-rules` (the agent keeps
 * `local` tensors at the site and leaves `local` and `skip` tensors out of the upload).
 */
export const TRAINER_FEATURES = ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'] as const;
export type TrainerFeature = (typeof TRAINER_FEATURES)[number];
export const TrainerDeclarationSchema = Type.Object(
  {
    kind: Type.Union([Type.Literal('builtin'), Type.Literal('external'), Type.Literal('placed')]),
    /** For people: "external (python3 train.py)". */
    description: Type.String({ maxLength: 500 }),
    models: Type.Array(Type.Union([Type.Literal('logistic'), Type.Literal('mlp'), Type.Literal('cox'), Type.Literal('custom')]), { uniqueItems: true, maxItems: 16 }),
    features: Type.Array(Type.Union(TRAINER_FEATURES.map((f) => Type.Literal(f))), { uniqueItems: true, maxItems: 32 }),
  },
  strict,
);
export type TrainerDeclaration = Static<typeof TrainerDeclarationSchema>;

/** A progress line a site's trainer printed, forwarded by its agent (POST /v1/agent/tasks/:id/progress). */
export const TaskProgressSchema = Type.Object(
  {
    step: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e12 })),
    of: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e12 })),
    metrics: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z][A-Za-z0-9_.-]*$' }), Type.Number(), { maxProperties: 16, additionalProperties: false })),
    message: Type.Optional(Type.String({ maxLength: 500 })),
  },
  strict,
);
export type TaskProgress = Static<typeof TaskProgressSchema>;

export const InviteRequestSchema = Type.Object(
  {
    siteName: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._-]+$' }),
    institution: Type.Optional(Name),
    jurisdiction: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
    ttlHours: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 24 * 30 })),
  },
  strict,
);
export type InviteRequest = Static<typeof InviteRequestSchema>;
export const InviteResponseSchema = Type.Object({ token: Type.String(), siteName: Type.String(), expiresAt: Type.Number() });
export type InviteResponse = Static<typeof InviteResponseSchema>;

/** Training examples a site holds per dataset key: a fit result may not claim more than its cohort. */
export const CohortsSchema = Type.Record(Type.String({ minLength: 1, maxLength: 100 }), Type.Integer({ minimum: 1, maximum: 1_000_000_000 }), { maxProperties: 100 });
export type Cohorts = Static<typeof CohortsSchema>;

/** Raw Ed25519 public key, 32 bytes in unpadded base64url. */
const PublicKeyRaw = Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' });

export const EnrolRequestSchema = Type.Object(
  { token: Type.String({ minLength: 16, maxLength: 256 }), publicKey: PublicKeyRaw, cohorts: Type.Optional(CohortsSchema) },
  strict,
);
export type EnrolRequest = Static<typeof EnrolRequestSchema>;
/** The site signs every later request with the key it registered, under key id = siteId. */
export const EnrolResponseSchema = Type.Object({ siteId: Type.String(), siteName: Type.String() });
export type EnrolResponse = Static<typeof EnrolResponseSchema>;

export const CohortsRequestSchema = Type.Object({ cohorts: CohortsSchema }, strict);
export type CohortsRequest = Static<typeof CohortsRequestSchema>;

export const UserInviteRequestSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._@-]+$' }),
    role: Type.Union([Type.Literal('consortium_admin'), Type.Literal('study_lead'), Type.Literal('site_admin'), Type.Literal('auditor')]),
    institution: Type.Optional(Name),
    ttlHours: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 24 * 30 })),
  },
  strict,
);
export type UserInviteRequest = Static<typeof UserInviteRequestSchema>;
export const UserInviteResponseSchema = Type.Object({ token: Type.String(), userId: Type.String(), name: Type.String(), role: Type.String(), expiresAt: Type.Number() });
export type UserInviteResponse = Static<typeof UserInviteResponseSchema>;

export const UserEnrolRequestSchema = Type.Object({ token: Type.String({ minLength: 16, maxLength: 256 }), publicKey: PublicKeyRaw }, strict);
export type UserEnrolRequest = Static<typeof UserEnrolRequestSchema>;
export const UserEnrolResponseSchema = Type.Object({ userId: Type.String(), name: Type.String(), role: Type.String() });
export type UserEnrolResponse = Static<typeof UserEnrolResponseSchema>;

/** What a site's long-poll returns: one task. Weights are fetched separately as safetensors. */
/** The largest model a task carries inline (`TaskMessage.modelInline`); larger ones are downloaded. */
export const MODEL_INLINE_MAX_BYTES = 64 * 1024;

export const TaskSchema = Type.Object({
  taskId: Type.String(),
  studyId: Type.String(),
  round: Type.Integer(),
  kind: Type.Union([Type.Literal('fit'), Type.Literal('evaluate'), Type.Literal('prepare'), Type.Literal('analytics')]),
  modelVersionId: Type.String(),
  /**
   * The global model's safetensors bytes, base64, when they are at most MODEL_INLINE_MAX_BYTES: a tiny model costs
   * its site no download request. Absent for larger models, which the agent downloads (GET /v1/agent/models/:id).
   */
  modelInline: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: Math.ceil(MODEL_INLINE_MAX_BYTES / 3) * 4 })),
  /** Analytics tasks: the query to answer (and a Cox fit's β). */
  analytics: Type.Optional(AnalyticsTaskSchema),
  dataSchema: Type.Optional(DataSchemaT),
  /** Federated normalisation statistics, when the schema asks for global normalisation. */
  normStats: Type.Optional(NormStatsSchema),
  dataset: Type.String(),
  model: ModelSpecSchema,
  fit: Type.Optional(FitConfigSchema),
  /** The study's tensor rules resolved to names: `local` tensors stay at the site, `skip` tensors are frozen; both are left out of the upload. */
  tensorRules: Type.Optional(Type.Object({ local: Type.Array(Type.String()), skip: Type.Array(Type.String()) })),
  strategy: Type.String(),
  /** Fit tasks of a study with `transport.updateDtype` F16/BF16: the agent sends each F32 tensor of its update in this dtype. */
  updateDtype: Type.Optional(Type.Union([Type.Literal('F16'), Type.Literal('BF16')])),
  seed: Type.Integer(),
  deadlineAt: Type.Number(),
  /** Fit tasks of a private study: the DP settings and the study's round count (the site plans its spend), and whether the result goes through SecAgg+. */
  privacy: Type.Optional(Type.Object({ dp: Type.Optional(DpSpecSchema), rounds: Type.Integer(), clientsPerRound: Type.Integer(), secagg: Type.Boolean() })),
  /** The coordinator's signed checkpoint of its audit head when it handed out this task; the agent keeps the newest as a witness. */
  auditCheckpoint: Type.Optional(AuditCheckpointSchema),
});
export type TaskMessage = Static<typeof TaskSchema>;

const MetricsSchema = Type.Record(Type.String({ maxLength: 64 }), Type.Number(), { maxProperties: 64 });

/** A site's report of one DP release (the mechanism of this task) and its total for the study afterwards. */
export const PrivacySpendSchema = Type.Object(
  {
    mechanism: Type.Union([
      Type.Literal('dp-sgd'),
      Type.Literal('dp-fedavg'),
      /** Analytics queries (src/analytics/dp.ts): `steps` Laplace releases of scale `noiseMultiplier` per unit sensitivity, sampleRate 1. */
      Type.Literal('laplace'),
      /** Analytics queries: `steps` Gaussian releases of noise multiplier `noiseMultiplier`, sampleRate 1. */
      Type.Literal('gaussian'),
    ]),
    sampleRate: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
    noiseMultiplier: Type.Number({ minimum: 0, maximum: 1e6 }),
    steps: Type.Integer({ minimum: 0, maximum: 1e9 }),
    /** ε spent by this site on this study so far, including this release, at its budget's δ. */
    epsilon: Type.Number({ minimum: 0 }),
    delta: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }),
    budgetEpsilon: Type.Number({ exclusiveMinimum: 0 }),
    budgetDelta: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }),
  },
  strict,
);
export type PrivacySpend = Static<typeof PrivacySpendSchema>;

/**
 * A task's compute usage, for the coordinator's ledger: posted on its own (POST /v1/agent/tasks/:id/usage) or
 * carried in the task's result metadata (`ResultMeta.usage`), which saves a request per task.
 */
export const UsageBody = Type.Object(
  {
    resourceId: Type.String({ minLength: 1, maxLength: 200 }),
    scheduler: Type.Union([Type.Literal('local'), Type.Literal('slurm'), Type.Literal('kubernetes'), Type.Literal('in-process')]),
    cpuSeconds: Type.Number({ minimum: 0 }),
    gpuSeconds: Type.Number({ minimum: 0 }),
    wallSeconds: Type.Number({ minimum: 0 }),
    cpuBasis: Type.Union([Type.Literal('measured'), Type.Literal('allocated')]),
    jobId: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  strict,
);
/**
 * Metadata of a task result. For fit results it travels inside the safetensors header
 * (`__metadata__["setu.result"]`, a JSON string) so one body, and one signature, cover both.
 */
export const ResultMetaSchema = Type.Object(
  {
    taskId: Id,
    numExamples: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }),
    /** Metrics of local training (e.g. mean train loss). */
    trainMetrics: Type.Optional(MetricsSchema),
    /** Metrics of the incoming global model on the site's own test split. */
    evalMetrics: Type.Optional(MetricsSchema),
    evalExamples: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 })),
    /** Opaque per-site client state digest; never the state itself. */
    durationMs: Type.Optional(Type.Number({ minimum: 0 })),
    /** Prepare tasks only: the site's schema check and column sums. */
    prepare: Type.Optional(PrepareReportSchema),
    /** DP studies: what releasing this result cost the site, and its account for the study after it. */
    privacy: Type.Optional(PrivacySpendSchema),
    /** Analytics tasks: the site's answer (checked at the coordinator by analytics/query.ts answerProblems). */
    analytics: Type.Optional(AnalyticsResultSchema),
    /** The task's compute usage, recorded in the ledger with the result (the same checks as POST …/usage; a task's usage is recorded once). */
    usage: Type.Optional(UsageBody),
  },
  strict,
);
export type ResultMeta = Static<typeof ResultMetaSchema>;
export const RESULT_META_KEY = 'setu.result';

export const ErrorSchema = Type.Object({ error: Type.String(), message: Type.String() });

/**
 * Validates `value` against `schema`; returns readable problems naming each field (`/fit/lr: …`). A union says what
 * it allows: the literals (`must be one of sgd, adam, got "sgdd"`), or, for objects told apart by a field such as
 * `kind`, that field's allowed values or the problems of the variant the value names. An unknown field lists the
 * fields its object takes.
 */
export function checkValue(schema: TSchema, value: unknown): string[] {
  if (Value.Check(schema, value)) return [];
  const out: string[] = [];
  const required = new Set<string>();
  for (const e of Value.Errors(schema, value)) {
    const field = e.path || '/';
    // A missing field is reported once, as missing, not also as being of the wrong type.
    if (required.has(field)) continue;
    if (e.type === ValueErrorType.ObjectRequiredProperty) {
      required.add(field);
      out.push(`${field}: is required`);
    } else if (e.type === ValueErrorType.Union) out.push(...explainUnion(e.schema, e.value, field));
    else if (e.type === ValueErrorType.ObjectAdditionalProperties) {
      const parent = parentSchema(schema, e.path);
      const allowed = parent?.properties ? Object.keys(parent.properties as object) : [];
      out.push(`${field}: unknown field${allowed.length ? ` (allowed here: ${allowed.join(', ')})` : ''}`);
    } else out.push(`${field}: ${e.message}`);
    if (out.length >= 10) break;
  }
  return [...new Set(out)];
}

const literalOf = (s: TSchema): unknown => (s as { const?: unknown }).const;
const show = (v: unknown) => (v === undefined ? 'nothing' : JSON.stringify(v));

function explainUnion(u: TSchema, value: unknown, field: string): string[] {
  const members = ((u as { anyOf?: TSchema[] }).anyOf ?? []) as TSchema[];
  const literals = members.map(literalOf);
  if (members.length && literals.every((l) => l !== undefined)) return [`${field}: must be one of ${literals.map(String).join(', ')}, got ${show(value)}`];
  // Objects told apart by a literal field (model.kind, dataset format, split kind, …).
  const objects = members.filter((m) => (m as { type?: string }).type === 'object');
  const props = objects.length === members.length ? Object.keys((objects[0] as { properties?: object }).properties ?? {}) : [];
  const propOf = (m: TSchema, k: string): TSchema | undefined => (m as unknown as { properties: Record<string, TSchema> }).properties[k];
  const tag = props.find((k) => objects.every((m) => { const p = propOf(m, k); return p !== undefined && literalOf(p) !== undefined; }));
  if (tag && value && typeof value === 'object' && !Array.isArray(value)) {
    const got = (value as Record<string, unknown>)[tag];
    const options = objects.map((m) => literalOf(propOf(m, tag)!));
    const chosen = objects.find((m, i) => options[i] === got);
    if (!chosen) return [`${field}/${tag}: must be one of ${options.map(String).join(', ')}, got ${show(got)}`];
    return checkValue(chosen, value).map((p) => (p.startsWith('/') && p !== '/' ? `${field === '/' ? '' : field}${p}` : `${field}: ${p}`));
  }
  if (members.length && literals.some((l) => l !== undefined)) return [`${field}: must be one of ${literals.filter((l) => l !== undefined).map(String).join(', ')} or another allowed shape, got ${show(value)}`];
  return [`${field}: does not match any allowed form (got ${show(value)})`];
}

/** The object schema holding the field at `path` (for listing its fields). */
function parentSchema(root: TSchema, path: string): TSchema | undefined {
  const parts = path.split('/').slice(1, -1);
  let s: TSchema | undefined = root;
  for (const p of parts) {
    if (!s) return undefined;
    const cur: TSchema = s;
    const props = (cur as { properties?: Record<string, TSchema> }).properties;
    const items = (cur as { items?: TSchema }).items;
    const additional = (cur as { additionalProperties?: TSchema | boolean }).additionalProperties;
    const patterns = (cur as { patternProperties?: Record<string, TSchema> }).patternProperties;
    s = props?.[p] ?? (items && /^\d+$/.test(p) ? items : undefined) ?? (typeof additional === 'object' ? additional : undefined) ?? (patterns ? Object.values(patterns)[0] : undefined);
    if (s && (s as { anyOf?: TSchema[] }).anyOf) return undefined; // inside a union: its own message says more
  }
  return s;
}
