/**
 * One extraction layer: a dataset's source and mapping → the study's table (the CSV reader's shape),
 * with every left-out record and value counted by reason and detailed for the site's log.
 */
import { resolve } from 'node:path';
import { isMissing, type CsvTable } from './csv.js';
import type { ExtractedDataset } from './config.js';
import { enrolmentFacts } from './enrolment.js';
import { Issues, type DropReason, type Fact } from './facts.js';
import { factsToTable, type ExtractedTable } from './features.js';
import { checkLicences, loadMapping, type Mapping } from './mapping.js';
import { fhirBlock, FhirFacts, resourceTypes } from './fhir/facts.js';
import { readBundleDir, readNdjsonDir } from './fhir/files.js';
import { FhirClient } from './fhir/server.js';
import { readOmop } from './omop/read.js';

export interface Extraction {
  table: ExtractedTable;
  issues: Issues;
  /** Source records read (resources, messages, database rows). */
  records: number;
  mapping: Pick<Mapping, 'mapping' | 'version' | 'file'>;
}

export interface ExtractOptions {
  configDir: string;
  log?: (m: string) => void;
}

/** Facts of one source, before the mapping's columns. */
export interface SourceFacts {
  facts: Fact[];
  records: number;
}

export async function extract(ds: ExtractedDataset, opts: ExtractOptions): Promise<Extraction> {
  const log = opts.log ?? (() => {});
  const m = loadMapping(ds.mapping, opts.configDir);
  checkLicences(m, ds.licences ?? []);
  const issues = new Issues();
  const at = (p: string) => resolve(opts.configDir, p);
  let got: SourceFacts;
  switch (ds.format) {
    case 'fhir': {
      const block = fhirBlock(m);
      const out = new FhirFacts(block, issues);
      const s = ds.source;
      if (s.kind === 'ndjson') readNdjsonDir(at(s.dir), out, issues);
      else if (s.kind === 'bundles') readBundleDir(at(s.dir), out, issues);
      else {
        const client = new FhirClient({ ...s, ...(s.auth ? { auth: { ...s.auth, privateKeyFile: at(s.auth.privateKeyFile) } } : {}) }, log);
        if (s.mode === 'bulk') await client.bulkExport(resourceTypes(block), out, issues);
        else for (const t of resourceTypes(block)) log(`fhir: ${t}: ${await client.search(t, out)} page(s)`);
      }
      got = out;
      break;
    }
    case 'omop':
      got = await readOmop('sqlite' in ds.database ? { sqlite: at(ds.database.sqlite) } : ds.database, m, issues, log);
      break;
  }
  const facts = ds.enrolment ? [...got.facts, ...enrolmentFacts(at(ds.enrolment.file), ds.enrolment.patient)] : got.facts;
  const table = factsToTable(facts, m, issues);
  return { table, issues, records: got.records, mapping: { mapping: m.mapping, version: m.version, file: m.file } };
}

/** The table as the CSV reader would have read it from `file`. */
export function asCsvTable(t: ExtractedTable, file: string): CsvTable {
  return { file, header: t.header, rows: t.rows, lines: t.lines };
}

function csvField(v: string | null): string {
  if (v === null) return '';
  // Quoted, a value the reader would take for a missing marker ("NA", "?") or trim stays what it is.
  return isMissing(v) || /[",\n\r]|^\s|\s$/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** CSV text that reads back (readCsv) as the same table. */
export function tableCsv(t: ExtractedTable): string {
  return [t.header, ...t.rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

/** Why a row would be dropped: the reason for its first null cell among `used` columns, or null if complete. */
export function rowDropReason(t: ExtractedTable, row: number, used: readonly number[]): { reason: DropReason; column: string } | null {
  for (const j of used) if (t.rows[row]![j] === null) return { reason: t.why[row]![j] ?? 'missing-value', column: t.header[j]! };
  return null;
}
