/**
 * The site agent's configuration file (YAML or JSON). It names the coordinator, where the agent keeps
 * its credential and state, and which local files back each dataset key a study may ask for. A
 * malformed file is refused with the file name and the field at fault.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import YAML from 'yaml';
import { checkValue } from '../protocol/api.js';
import { ExtractedDatasetSchemas } from '../datasources/config.js';
import { AnalyticsPolicySchema } from '../protocol/analytics.js';

const strict = { additionalProperties: false } as const;

export const DatasetSourceSchema = Type.Union([
  Type.Object(
    {
      format: Type.Literal('fed-heart-disease'),
      /** Directory holding processed.<center>.data and heart_split.csv (default: the bundled copy). */
      dir: Type.Optional(Type.String({ minLength: 1 })),
      center: Type.Integer({ minimum: 0, maximum: 3 }),
    },
    strict,
  ),
  Type.Object(
    {
      format: Type.Literal('csv'),
      /** This site's CSV file. The study's data schema says which columns it must have and how to encode them. */
      path: Type.String({ minLength: 1 }),
    },
    strict,
  ),
  // FHIR and OMOP sources with a mapping to the study's columns (src/datasources).
  ...ExtractedDatasetSchemas,
]);
export type DatasetSource = Static<typeof DatasetSourceSchema>;

const Budget = Type.Object({ epsilon: Type.Number({ exclusiveMinimum: 0, maximum: 1000 }), delta: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }) }, strict);

export const SiteConfigSchema = Type.Object(
  {
    coordinator: Type.String({ pattern: '^https?://' }),
    /** Where the credential and per-study state live (default: `<config dir>/state`). */
    stateDir: Type.Optional(Type.String({ minLength: 1 })),
    datasets: Type.Record(Type.String({ minLength: 1 }), DatasetSourceSchema, { minProperties: 1 }),
    trainer: Type.Optional(
      Type.Union([
        Type.Object({ kind: Type.Literal('builtin') }, strict),
        Type.Object(
          {
            kind: Type.Literal('external'),
            /** argv, run without a shell in the task's work directory; an argument starting with ./ or ../ is a path relative to this file. */
            command: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
            /** Wall-clock limit per task (default 1800). */
            timeoutSeconds: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
            /** Between SIGTERM and SIGKILL when a task is stopped (default 5). */
            killGraceSeconds: Type.Optional(Type.Number({ minimum: 0, maximum: 3600 })),
            /** Extra environment for the trainer (it inherits none of the agent's but PATH, HOME, locale, TMPDIR, CUDA_VISIBLE_DEVICES). */
            env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String())),
            /** Parent of the per-task work directories (default the OS temp dir), relative to this file. */
            workDir: Type.Optional(Type.String({ minLength: 1 })),
            keepWorkDir: Type.Optional(Type.Boolean()),
            /** Model kinds the trainer trains (default: custom, a model defined by its initial weights). */
            models: Type.Optional(Type.Array(Type.Union([Type.Literal('logistic'), Type.Literal('mlp'), Type.Literal('cox'), Type.Literal('custom')]), { minItems: 1, uniqueItems: true })),
            /** What the trainer itself applies when a task asks: FedProx's proximal term, sample-level DP-SGD by the agent's plan. */
            features: Type.Optional(Type.Array(Type.Union([Type.Literal('fedprox'), Type.Literal('dp-sgd')]), { uniqueItems: true })),
          },
          strict,
        ),
      ]),
    ),
    /** Long-poll length in ms (default 20000). */
    pollWaitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60000 })),
    /** CA certificate (PEM path) to trust for an HTTPS coordinator with a private CA. */
    caFile: Type.Optional(Type.String()),
    /** The site's own policy file (site-local rules, see policies/README); it wins over its jurisdiction's policy. */
    policy: Type.Optional(Type.String({ minLength: 1 })),
    /**
     * This site's differential-privacy budgets: the (ε, δ) it will spend on one study at most, by default and
     * per study (keyed by study id or study name). Without any, a DP study is capped at its own target (ε, δ).
     * The agent refuses a task whose DP release would take the study's total past the cap.
     */
    privacy: Type.Optional(
      Type.Object(
        {
          budget: Type.Optional(Budget),
          studies: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Budget)),
        },
        strict,
      ),
    ),
    /**
     * This site's analytics policy (protocol/analytics.ts AnalyticsPolicySchema; docs/site-config.md): the minimum cell
     * count below which nothing leaves, the query kinds it answers, DP noise charged to `privacy` budgets. Default
     * `{ minCellCount: 5 }` (site/analytics-task.ts).
     */
    analytics: Type.Optional(AnalyticsPolicySchema),
    /**
     * Test knobs, never for production: `fitDelayMs` makes the agent wait that long before each fit (a deliberately
     * slow site, for the asynchronous-federation benchmark and tests: `npm run bench -- async-heart`).
     * `chunkDelayMs` waits that long before each chunk of a chunked upload (a slow uplink: `bench big-train --kill-agent`).
     */
    testing: Type.Optional(Type.Object({ fitDelayMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })), chunkDelayMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })) }, strict)),
    /** Where this site's data is held (ISO country code): "same" in its local policy means this. */
    jurisdiction: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
    /**
     * Where training runs: `own` (this machine, the default) or `placed` (the coordinator places each fit task on
     * registered compute in the data's jurisdiction; the agent submits it there as a job and collects it).
     */
    compute: Type.Optional(
      Type.Union([
        Type.Object({ mode: Type.Literal('own') }, strict),
        Type.Object(
          {
            mode: Type.Literal('placed'),
            cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
            gpus: Type.Optional(Type.Integer({ minimum: 0, maximum: 1024 })),
            ramGiB: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000 })),
            minGpuMemoryGiB: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
            /** A GPU type every GPU must be: a resource's Slurm GRES type (`a100`) or model name. */
            gpuType: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' })),
          },
          strict,
        ),
      ]),
    ),
  },
  strict,
);
export type SiteConfig = Static<typeof SiteConfigSchema> & { configDir: string; stateDirAbs: string };

export class ConfigError extends Error {}

export function parseSiteConfig(text: string, file: string): SiteConfig {
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid YAML/JSON: ${(e as Error).message}`);
  }
  const problems = checkValue(SiteConfigSchema, raw);
  if (problems.length) throw new ConfigError(`${file}: ${problems.join('; ')}`);
  const cfg = raw as Static<typeof SiteConfigSchema>;
  const pc = cfg.compute?.mode === 'placed' ? cfg.compute : undefined;
  for (const k of ['gpuType', 'minGpuMemoryGiB'] as const) {
    if (pc?.[k] !== undefined && !(pc.gpus && pc.gpus > 0)) throw new ConfigError(`${file}: /compute/${k}: applies to GPUs, but /compute/gpus is ${pc.gpus ?? 'not set (0)'}; set /compute/gpus to 1 or more, or remove ${k}`);
  }
  const configDir = dirname(resolve(file));
  return { ...cfg, configDir, stateDirAbs: resolve(configDir, cfg.stateDir ?? 'state') };
}

export function loadSiteConfig(file: string): SiteConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read site config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSiteConfig(text, file);
}
