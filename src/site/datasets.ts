/**
 * Resolves a study's dataset key to this site's own data, as its config names it, and loads the
 * train/test split. Nothing here ever leaves the site; a prepare task reports only the schema check,
 * column sums and counts of what was left out.
 *
 * Sources: the bundled heart files, a CSV file, or an extracted source (FHIR, OMOP through a
 * mapping, src/datasources). An extracted source is read at the study's prepare round and its table
 * written down in the site's state directory (`tables/<study>/<key>.csv`, mode 600), so training reads
 * exactly the table the prepare round checked, an external trainer reads it as a CSV file, and a
 * restarted agent does not query the hospital's systems again.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Dataset } from '../learning/types.js';
import type { ExtractionReport, PrepareReport } from '../protocol/data-schema.js';
import type { TaskMessage } from '../protocol/api.js';
import { defaultHeartDir, loadHeartCenter } from './data/heart.js';
import { readCsv, type CsvTable } from './data/csv.js';
import { checkSchema, parseDataSchema, usedColumns, type DataSchema } from './data/schema.js';
import { loadTabular, normaliseTabular } from './data/tabular.js';
import { localSums } from './data/global-stats.js';
import type { SiteConfig } from './config.js';
import { writeAtomic } from './state.js';
import { EXTRACTED_FORMATS, type ExtractedDataset } from '../datasources/config.js';
import { asCsvTable, extract, rowDropReason, tableCsv, type Extraction } from '../datasources/extract.js';
import { formatIssue, type DropReason } from '../datasources/facts.js';

export interface SiteData {
  train: Dataset;
  test: Dataset;
  description: string;
  /** The file an external trainer should read. */
  file: string;
}

type TaskRef = Pick<TaskMessage, 'dataset' | 'dataSchema' | 'normStats'> & { studyId?: string };

function source(cfg: SiteConfig, key: string) {
  const src = cfg.datasets[key];
  if (!src) throw new Error(`this site has no dataset "${key}" in its config (it has: ${Object.keys(cfg.datasets).join(', ')})`);
  return src;
}

export function isExtracted(src: SiteConfig['datasets'][string]): src is ExtractedDataset {
  return (EXTRACTED_FORMATS as readonly string[]).includes(src.format);
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');

/** Where a study's extracted table of dataset `key` is written (`studyId` absent: the site's own checks). */
export function tableFile(cfg: Pick<SiteConfig, 'stateDirAbs'>, key: string, studyId?: string): string {
  if (!cfg.stateDirAbs) throw new Error(`dataset "${key}" is extracted at the site; reading it needs the site's state directory`);
  return join(cfg.stateDirAbs, 'tables', studyId ? safe(studyId) : '_site', `${safe(key)}.csv`);
}

export interface ExtractedSiteTable {
  table: CsvTable;
  extraction: Extraction;
  file: string;
}

/**
 * Reads an extracted source now, writes its table (and every issue, one per line, beside it) and logs
 * what was left out, with file/line/resource id, in the site's own log.
 */
export async function extractSiteDataset(cfg: SiteConfig, key: string, studyId: string | undefined, log: (m: string) => void = () => {}): Promise<ExtractedSiteTable> {
  const src = source(cfg, key);
  if (!isExtracted(src)) throw new Error(`dataset "${key}" is ${src.format}, not an extracted source`);
  const extraction = await extract(src, { configDir: cfg.configDir, log });
  const file = tableFile(cfg, key, studyId);
  mkdirSync(resolve(file, '..'), { recursive: true, mode: 0o700 });
  writeAtomic(file, tableCsv(extraction.table));
  const issues = extraction.issues.list;
  writeAtomic(file.replace(/\.csv$/, '.issues.txt'), issues.map(formatIssue).join('\n') + (issues.length ? '\n' : ''));
  const counts = extraction.issues.counts().map((c) => `${c.count} ${c.reason}`).join(', ');
  log(`dataset ${key}: ${extraction.records} source records → ${extraction.table.rows.length} rows (mapping ${extraction.mapping.mapping} v${extraction.mapping.version})${counts ? `; left out: ${counts}` : ''}; table ${file}`);
  for (const i of issues.slice(0, 200)) log(`dataset ${key}: ${formatIssue(i)}`);
  if (issues.length > 200) log(`dataset ${key}: … ${issues.length - 200} more in ${file.replace(/\.csv$/, '.issues.txt')}`);
  return { table: asCsvTable(extraction.table, file), extraction, file };
}

/** The CSV-shaped table of a CSV or extracted dataset (an extracted one as the study's prepare round wrote it). */
function tableOf(cfg: SiteConfig, key: string, studyId: string | undefined): { table: CsvTable; file: string } {
  const src = source(cfg, key);
  if (src.format === 'csv') {
    const file = resolve(cfg.configDir, src.path);
    return { table: readCsv(file), file };
  }
  const file = tableFile(cfg, key, studyId);
  if (!existsSync(file)) throw new Error(`dataset "${key}" is a ${src.format} source; its table is extracted by the study's prepare round and is not there yet (${file})`);
  return { table: readCsv(file), file };
}

export function loadSiteDataset(cfg: SiteConfig, task: TaskRef): SiteData {
  const src = source(cfg, task.dataset);
  if (src.format === 'fed-heart-disease') {
    const dir = src.dir ? resolve(cfg.configDir, src.dir) : undefined;
    const d = loadHeartCenter(dir, src.center);
    return { train: d.train, test: d.test, description: `Fed-Heart-Disease ${d.name}`, file: join(dir ?? defaultHeartDir(), `processed.${d.name}.data`) };
  }
  if (!task.dataSchema) throw new Error(`dataset "${task.dataset}" is ${src.format === 'csv' ? 'a CSV file' : `a ${src.format} source`}; the study must declare a data schema`);
  const { table, file } = tableOf(cfg, task.dataset, task.studyId);
  const schema = parseDataSchema(task.dataSchema);
  const { train, test } = normaliseTabular(loadTabular(table, schema), schema, task.normStats);
  return { train, test, description: `${src.format === 'csv' ? 'CSV' : `${src.format} table`} ${file}`, file };
}

/** Rows, rows kept and rows dropped by the reason for their first missing used column. */
export function extractionReport(table: CsvTable, schema: DataSchema, why?: Extraction): ExtractionReport {
  const col = new Map(table.header.map((h, i) => [h, i]));
  const used = usedColumns(schema).map((c) => col.get(c)!);
  const dropped = new Map<string, { reason: DropReason; column: string; count: number }>();
  let kept = 0;
  table.rows.forEach((r, k) => {
    const d = why ? rowDropReason(why.table, k, used) : (() => {
      const j = used.find((x) => r[x] === null);
      return j === undefined ? null : { reason: 'missing-value' as const, column: table.header[j]! };
    })();
    if (!d) return void kept++;
    const id = `${d.reason}\u0000${d.column}`;
    const e = dropped.get(id) ?? { ...d, count: 0 };
    e.count++;
    dropped.set(id, e);
  });
  return { rows: table.rows.length, kept, dropped: [...dropped.values()], skipped: why ? why.issues.counts() : [] };
}

/**
 * The prepare task: check this site's table against the study's schema and, for global normalisation,
 * sum its columns. An extracted source is read afresh here and its table written for the study.
 */
export async function prepareReport(cfg: SiteConfig, task: Pick<TaskMessage, 'dataset' | 'dataSchema'> & { studyId?: string }, log: (m: string) => void = () => {}): Promise<{ report: PrepareReport; examples: number }> {
  const src = source(cfg, task.dataset);
  if (src.format === 'fed-heart-disease') return { report: { problems: [{ column: '*', message: `dataset "${task.dataset}" at this site is ${src.format}, not a table the schema can describe` }] }, examples: 0 };
  if (!task.dataSchema) return { report: { problems: [{ column: '*', message: 'the study declares no data schema' }] }, examples: 0 };
  const schema = parseDataSchema(task.dataSchema);
  let table: CsvTable, extraction: Extraction | undefined;
  if (isExtracted(src)) {
    try {
      ({ table, extraction } = await extractSiteDataset(cfg, task.dataset, task.studyId, log));
    } catch (e) {
      // The reason stays here; the coordinator learns only that this site could not read its source.
      log(`dataset ${task.dataset}: extraction failed: ${(e as Error).message}`);
      return { report: { problems: [{ column: '*', message: `this site could not read its ${src.format} source for dataset "${task.dataset}" (the reason is in the site's log)` }] }, examples: 0 };
    }
  } else table = readCsv(resolve(cfg.configDir, src.path));
  const problems = checkSchema(table, schema);
  if (problems.length) return { report: { problems: problems.map((p) => ({ column: p.column, message: p.message })) }, examples: 0 };
  const data = loadTabular(table, schema);
  const sums = schema.preprocessing?.normalise === 'global' ? localSums(data.train) : undefined;
  return { report: { problems: [], ...(sums ? { sums } : {}), extraction: extractionReport(table, schema, extraction) }, examples: data.train.n };
}

/**
 * The cohort a site declares for a dataset key: training rows for the bundled heart data, data rows
 * of the CSV file or of the extracted table otherwise (an upper bound on any split of it). Updates
 * claiming more are refused.
 */
export async function declaredCohort(cfg: SiteConfig, key: string, log?: (m: string) => void): Promise<number> {
  const src = source(cfg, key);
  if (src.format === 'fed-heart-disease') return loadSiteDataset(cfg, { dataset: key }).train.n;
  const rows = isExtracted(src) ? (await extractSiteDataset(cfg, key, undefined, log)).table.rows.length : readCsv(resolve(cfg.configDir, src.path)).rows.length;
  // At least 1: a cohort is declared as a positive count; an empty file trains nothing anyway.
  return Math.max(1, rows);
}
