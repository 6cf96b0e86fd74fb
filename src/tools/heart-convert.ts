#!/usr/bin/env node
/**
 * `node dist/tools/heart-convert.js <form> --out DIR`: the bundled Fed-Heart-Disease hospitals written
 * as a hospital would hold them. Forms: csv (one CSV per hospital and the study file, committed under
 * examples/heart-csv/ and compared by the tests), fhir-nrces / fhir-jpcore (a Bulk Data NDJSON export per
 * hospital), fhir-bundles (ABDM document Bundles per hospital), omop (a CDM v5.4 SQL script and the
 * enrolment list per hospital).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { heartStudySpec } from '../cli/demo.js';
import { HEART_CENTERS, type HeartCenter } from '../site/data/heart.js';
import { HEART_DATA_SCHEMA, heartCsv } from './heart-csv.js';
import { heartBundles, heartNdjson } from './heart-fhir.js';
import { heartOmopEnrolment, heartOmopSql } from './heart-omop.js';
import { parse, UsageError } from '../cli/args.js';

/** The heart study over a CSV-shaped dataset: the demo's FLamby protocol plus the data schema. */
export function heartCsvStudy(seed = 42, rounds = 15) {
  return { ...heartStudySpec(seed, rounds), name: 'Fed-Heart-Disease FedAvg from site tables (FLamby protocol)', dataSchema: HEART_DATA_SCHEMA };
}

export const STUDY_HEADER = '# The Fed-Heart-Disease study over site tables (CSV, FHIR, OMOP): FLamby\'s protocol; written by\n# node dist/tools/heart-convert.js. `setu study create --file study.yaml` submits it.\n';

/** Files of one form, by path relative to the output directory. */
export function heartCsvFiles(): Record<string, string> {
  const out: Record<string, string> = { 'study.yaml': STUDY_HEADER + YAML.stringify(heartCsvStudy()) };
  HEART_CENTERS.forEach((name, c) => (out[`${name}.csv`] = heartCsv(c as HeartCenter)));
  return out;
}

export function writeFiles(dir: string, files: Record<string, string | Uint8Array>): void {
  for (const [rel, body] of Object.entries(files)) {
    const p = join(dir, rel);
    mkdirSync(resolve(p, '..'), { recursive: true });
    writeFileSync(p, body);
  }
}

/** Every hospital's files of one per-hospital form, under <hospital>/. */
function perHospital(f: (c: HeartCenter) => Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  HEART_CENTERS.forEach((name, c) => {
    for (const [rel, body] of Object.entries(f(c as HeartCenter))) out[`${name}/${rel}`] = body;
  });
  return out;
}

export const FORMS: Record<string, () => Record<string, string>> = {
  csv: heartCsvFiles,
  'fhir-nrces': () => perHospital((c) => heartNdjson(c, 'nrces')),
  'fhir-jpcore': () => perHospital((c) => heartNdjson(c, 'jpcore')),
  'fhir-bundles': () => perHospital((c) => heartBundles(c, 'nrces')),
  // Run omop.sql with sqlite3 or psql to make the hospital's CDM database.
  omop: () => perHospital((c) => ({ 'omop.sql': heartOmopSql(c), 'enrolment.csv': heartOmopEnrolment(c) })),
};

const HELP = `node dist/tools/heart-convert.js <${Object.keys(FORMS).join('|')}> --out DIR

Writes the bundled Fed-Heart-Disease hospitals (cleveland, hungarian, switzerland, va) in the given form.`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { out: { type: 'string' }, help: { type: 'boolean' } }, true);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const form = positionals[0];
  if (!form || !FORMS[form]) throw new UsageError(`form must be one of ${Object.keys(FORMS).join(', ')}${form ? `, got "${form}"` : ''}\n${HELP}`);
  if (!values.out) throw new UsageError('--out DIR is required');
  writeFiles(resolve(values.out), FORMS[form]!());
  process.stderr.write(`wrote the ${form} form of the four heart hospitals to ${values.out}\n`);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`heart-convert: ${e instanceof UsageError ? e.message : (e as Error).stack}\n`);
      process.exitCode = e instanceof UsageError ? 2 : 1;
    },
  );
}
