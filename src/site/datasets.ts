/**
 * Resolves a study's dataset key to this site's own files, as its config names them, and loads the
 * train/test split. Nothing here ever leaves the site; a prepare task reports only the schema check
 * and column sums.
 */
import { join, resolve } from 'node:path';
import type { Dataset } from '../learning/types.js';
import type { PrepareReport } from '../protocol/data-schema.js';
import type { TaskMessage } from '../protocol/api.js';
import { defaultHeartDir, loadHeartCenter } from './data/heart.js';
import { readCsv } from './data/csv.js';
import { checkSchema, parseDataSchema } from './data/schema.js';
import { loadTabular, normaliseTabular } from './data/tabular.js';
import { localSums } from './data/global-stats.js';
import type { SiteConfig } from './config.js';

export interface SiteData {
  train: Dataset;
  test: Dataset;
  description: string;
  /** The file an external trainer should read. */
  file: string;
}

function source(cfg: SiteConfig, key: string) {
  const src = cfg.datasets[key];
  if (!src) throw new Error(`this site has no dataset "${key}" in its config (it has: ${Object.keys(cfg.datasets).join(', ')})`);
  return src;
}

export function loadSiteDataset(cfg: SiteConfig, task: Pick<TaskMessage, 'dataset' | 'dataSchema' | 'normStats'>): SiteData {
  const src = source(cfg, task.dataset);
  switch (src.format) {
    case 'fed-heart-disease': {
      const dir = src.dir ? resolve(cfg.configDir, src.dir) : undefined;
      const d = loadHeartCenter(dir, src.center);
      return { train: d.train, test: d.test, description: `Fed-Heart-Disease ${d.name}`, file: join(dir ?? defaultHeartDir(), `processed.${d.name}.data`) };
    }
    case 'csv': {
      if (!task.dataSchema) throw new Error(`dataset "${task.dataset}" is a CSV file; the study must declare a data schema`);
      const file = resolve(cfg.configDir, src.path);
      const schema = parseDataSchema(task.dataSchema);
      const { train, test } = normaliseTabular(loadTabular(readCsv(file), schema), schema, task.normStats);
      return { train, test, description: `CSV ${file}`, file };
    }
  }
}

/** The file behind a dataset key, for a trainer that reads it itself (an external trainer); nothing is loaded here. */
export function datasetFile(cfg: SiteConfig, key: string): string {
  const src = source(cfg, key);
  if (src.format === 'csv') return resolve(cfg.configDir, src.path);
  return loadSiteDataset(cfg, { dataset: key }).file;
}

/** The prepare task: check this site's file against the study's schema and, for global normalisation, sum its columns. */
export function prepareReport(cfg: SiteConfig, task: Pick<TaskMessage, 'dataset' | 'dataSchema'>): { report: PrepareReport; examples: number } {
  const src = source(cfg, task.dataset);
  if (src.format !== 'csv') return { report: { problems: [{ column: '*', message: `dataset "${task.dataset}" at this site is ${src.format}, not a CSV file the schema can describe` }] }, examples: 0 };
  if (!task.dataSchema) return { report: { problems: [{ column: '*', message: 'the study declares no data schema' }] }, examples: 0 };
  const schema = parseDataSchema(task.dataSchema);
  const table = readCsv(resolve(cfg.configDir, src.path));
  const problems = checkSchema(table, schema);
  if (problems.length) return { report: { problems: problems.map((p) => ({ column: p.column, message: p.message })) }, examples: 0 };
  const data = loadTabular(table, schema);
  const sums = schema.preprocessing?.normalise === 'global' ? localSums(data.train) : undefined;
  return { report: { problems: [], ...(sums ? { sums } : {}) }, examples: data.train.n };
}

/**
 * The cohort a site declares for a dataset key: training rows for the bundled heart data, data rows
 * of the CSV file otherwise (an upper bound on any split of it). Updates claiming more are refused.
 */
export function declaredCohort(cfg: SiteConfig, key: string): number {
  const src = source(cfg, key);
  if (src.format === 'fed-heart-disease') return loadSiteDataset(cfg, { dataset: key }).train.n;
  // At least 1: a cohort is declared as a positive count; an empty file trains nothing anyway.
  return Math.max(1, readCsv(resolve(cfg.configDir, src.path)).rows.length);
}
