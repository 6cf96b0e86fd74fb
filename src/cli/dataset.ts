/**
 * `setu site dataset check|preview|explain --config site.yaml --dataset KEY`: the site's integration
 * engineer's view of one dataset, before any study asks for it. Everything runs here, read-only: the
 * source is read as the agent would read it at a prepare round, nothing is written to the state
 * directory and nothing is sent anywhere.
 *
 *   check    extraction (and the study's schema check with --study): rows, kept, left out by reason,
 *            and the first issues with file, line or resource id and field
 *   preview  the first rows of the extracted table: a table, --json or --csv
 *   explain  what will run: the SQL (OMOP), the ViewDefinitions and FHIRPath (FHIR), the segment and
 *            field paths (SS-MIX2), and how the mapping makes each column
 */
import { resolve } from 'node:path';
import YAML from 'yaml';
import { ConfigError, loadSiteConfig, type SiteConfig } from '../site/config.js';
import { extractionReport, isExtracted } from '../site/datasets.js';
import { readCsv, type CsvTable } from '../site/data/csv.js';
import { checkSchema, parseDataSchema } from '../site/data/schema.js';
import { asCsvTable, extract, tableCsv, type Extraction } from '../datasources/extract.js';
import { formatIssue } from '../datasources/facts.js';
import { loadMapping, type Mapping } from '../datasources/mapping.js';
import { fhirBlock } from '../datasources/fhir/facts.js';
import { omopQueries } from '../datasources/omop/sql.js';
import { ssmix2Explain } from '../datasources/ssmix2/facts.js';
import { UsageError, intFlag, parse } from './args.js';
import { readStudyFile } from './operator.js';
import { table } from './table.js';

const FLAGS = {
  config: { type: 'string', value: 'FILE', text: 'the site config (site.yaml) that names the dataset' },
  dataset: { type: 'string', value: 'KEY', text: 'the dataset key under datasets: in the site config' },
  study: { type: 'string', value: 'FILE', text: 'also check the table against this study file\'s data schema' },
  issues: { type: 'string', value: 'N', text: 'how many issues to list in full (default 20; all are counted)' },
  rows: { type: 'string', value: 'N', text: 'how many rows (default 10)' },
  json: { type: 'boolean', text: 'print JSON' },
  csv: { type: 'boolean', text: 'print the rows as CSV' },
  help: { type: 'boolean', text: 'show this help' },
} as const;

const SUBCOMMANDS: Record<string, { summary: string; flags: Array<keyof typeof FLAGS> }> = {
  check: { summary: 'read the source as the agent will (and check it against a study\'s schema): counts by reason, the first issues in full', flags: ['config', 'dataset', 'study', 'issues', 'json'] },
  preview: { summary: 'the first rows of the table the source becomes', flags: ['config', 'dataset', 'rows', 'json', 'csv'] },
  explain: { summary: 'what will run against the source: SQL, ViewDefinitions and FHIRPath, HL7 segment and field paths; how each column is made', flags: ['config', 'dataset'] },
};

function help(sub?: string): string {
  if (!sub || !SUBCOMMANDS[sub]) {
    return ['Usage: setu site dataset <check|preview|explain> [options]', '', ...Object.entries(SUBCOMMANDS).map(([k, v]) => `  ${k.padEnd(8)} ${v.summary}`), '', 'Runs at the site, read-only: nothing is written or sent. setu site dataset <command> --help lists its options.'].join('\n');
  }
  const s = SUBCOMMANDS[sub]!;
  const flag = (f: keyof typeof FLAGS) => { const x = FLAGS[f]; return `--${f}${'value' in x ? ' ' + x.value : ''}`; };
  return [`Usage: setu site dataset ${sub} ${s.flags.map((f) => (f === 'config' || f === 'dataset' ? flag(f) : `[${flag(f)}]`)).join(' ')}`, '', s.summary, '', ...[...s.flags, 'help' as const].map((f) => `  ${flag(f).padEnd(20)} ${FLAGS[f].text}`)].join('\n');
}

const out = (s: string) => process.stdout.write(s + '\n');

interface Loaded {
  cfg: SiteConfig;
  key: string;
  table: CsvTable;
  extraction?: Extraction;
}

function target(v: { config?: string | undefined; dataset?: string | undefined }, sub: string): { cfg: SiteConfig; key: string } {
  if (!v.config || !v.dataset) throw new UsageError(`setu site dataset ${sub} needs --config site.yaml and --dataset KEY`);
  const cfg = loadSiteConfig(v.config);
  if (!cfg.datasets[v.dataset]) throw new UsageError(`${v.config}: no dataset "${v.dataset}" (it has: ${Object.keys(cfg.datasets).join(', ')})`);
  return { cfg, key: v.dataset };
}

async function load(cfg: SiteConfig, key: string): Promise<Loaded> {
  const src = cfg.datasets[key]!;
  if (src.format === 'fed-heart-disease') throw new UsageError(`dataset "${key}" is the bundled fed-heart-disease loader, not a table a mapping makes; nothing to check`);
  if (!isExtracted(src)) return { cfg, key, table: readCsv(resolve(cfg.configDir, src.path)) };
  const extraction = await extract(src, { configDir: cfg.configDir });
  return { cfg, key, table: asCsvTable(extraction.table, `${src.format} source`), extraction };
}

async function check(v: Record<string, string | boolean | undefined>): Promise<number> {
  const { cfg, key } = target(v, 'check');
  const l = await load(cfg, key);
  const issues = l.extraction?.issues.list ?? [];
  const schema = typeof v.study === 'string' ? parseDataSchema((readStudyFile(v.study) as { dataSchema?: unknown }).dataSchema ?? failNoSchema(v.study)) : undefined;
  const problems = schema ? checkSchema(l.table, schema) : [];
  const report = schema && problems.length === 0 ? extractionReport(l.table, schema, l.extraction) : undefined;
  const result = {
    dataset: key,
    format: cfg.datasets[key]!.format,
    ...(l.extraction ? { mapping: `${l.extraction.mapping.mapping} v${l.extraction.mapping.version}`, records: l.extraction.records } : {}),
    rows: l.table.rows.length,
    columns: l.table.header,
    skipped: l.extraction?.issues.counts() ?? [],
    ...(schema ? { schema: { problems, ...(report ? { kept: report.kept, dropped: report.dropped } : {}) } } : {}),
    issues: issues.slice(0, intFlag(v.issues as string | undefined, 'issues', 20)),
  };
  if (v.json) out(JSON.stringify(result));
  else {
    out(`dataset ${key} (${result.format}${l.extraction ? `, mapping ${result.mapping}, ${l.extraction.records} source records` : ''}): ${result.rows} rows × ${result.columns.length} columns`);
    if (result.skipped.length) out('\n' + table(['left out by the extraction', 'count'], result.skipped.map((s) => [s.reason, s.count])));
    else if (l.extraction) out('nothing left out by the extraction');
    if (schema) {
      if (problems.length) out('\nthe study\'s schema check fails:\n' + problems.map((p) => `  ${p.column}: ${p.message}`).join('\n'));
      else {
        out(`\nthe study's schema check passes: ${report!.kept} of ${report!.rows} rows complete in every column the study uses`);
        if (report!.dropped.length) out(table(['rows dropped', 'first missing column', 'count'], report!.dropped.map((d) => [d.reason, d.column, d.count])));
      }
    }
    if (issues.length) out(`\n${issues.length} issue(s)${issues.length > result.issues.length ? `, the first ${result.issues.length}` : ''}:\n` + result.issues.map((i) => '  ' + formatIssue(i)).join('\n'));
  }
  return problems.length ? 1 : 0;
}

function failNoSchema(file: string): never {
  throw new UsageError(`${file}: the study declares no dataSchema, so there is nothing to check the table against`);
}

async function preview(v: Record<string, string | boolean | undefined>): Promise<number> {
  const { cfg, key } = target(v, 'preview');
  if (v.json && v.csv) throw new UsageError('give --json or --csv, not both');
  const n = intFlag(v.rows as string | undefined, 'rows', 10);
  if (n < 1) throw new UsageError(`--rows must be at least 1, got ${n}`);
  const l = await load(cfg, key);
  const rows = l.table.rows.slice(0, n);
  if (v.json) out(JSON.stringify(rows.map((r) => Object.fromEntries(l.table.header.map((h, j) => [h, r[j] ?? null])))));
  else if (v.csv) process.stdout.write(tableCsv({ header: l.table.header, rows, lines: [], patients: [], why: [] }));
  else {
    out(table(l.table.header, rows.map((r) => r.map((c) => c ?? '–')), l.table.header.map(() => 'r')));
    out(`${rows.length} of ${l.table.rows.length} rows (– is a missing value)`);
  }
  return 0;
}

/** How the mapping makes each column, one line each. */
function columnLines(m: Mapping): string[] {
  return Object.entries(m.columns).map(([name, c]) => {
    if ('ageAt' in c) return `  ${name}: whole years from the birth date (${c.kind ?? 'patient'} ${c.code ?? 'birthDate'}) to the index date`;
    const codes = c.codes?.map((k) => (k.system ? `${k.system}|${k.code}` : k.code)).join(', ') ?? 'any code';
    const extra = [c.unit && `in ${c.unit}`, c.window && `within ${c.window.beforeDays ?? 0} days before / ${c.window.afterDays ?? 0} after the index date`, `pick ${c.pick ?? 'latest'}`, c.map && `mapped ${Object.entries(c.map).map(([k, x]) => `${k} → ${x}`).join(', ')}`].filter(Boolean);
    return `  ${name}: ${c.kind} facts with ${codes}${c.field === 'date' ? ' (their date)' : ''}; ${extra.join('; ')}`;
  });
}

async function explain(v: Record<string, string | boolean | undefined>): Promise<number> {
  const { cfg, key } = target(v, 'explain');
  const src = cfg.datasets[key]!;
  if (src.format === 'fed-heart-disease') throw new UsageError(`dataset "${key}" is the bundled fed-heart-disease loader; there is no mapping to explain`);
  if (!isExtracted(src)) {
    out(`dataset ${key}: the CSV file ${resolve(cfg.configDir, src.path)} is read as it is (one row per line, the header names the columns); the study's data schema says which columns it uses.`);
    return 0;
  }
  const m = loadMapping(src.mapping, cfg.configDir);
  out(`dataset ${key}: ${src.format} through mapping ${m.mapping} v${m.version} (${m.file})`);
  out(`cohort: one row per patient with a ${m.cohort.index.kind} fact${m.cohort.index.codes ? ` (${m.cohort.index.codes.map((c) => c.code).join(', ')})` : ''}; the ${m.cohort.index.pick ?? 'earliest'} one is the index date`);
  out('\ncolumns:\n' + columnLines(m).join('\n'));
  if (src.enrolment) out(`  (facts of kind enrolment come from ${src.enrolment.file}, keyed by its column ${src.enrolment.patient})`);
  out('');
  if (src.format === 'omop') for (const q of omopQueries(m)) out(`-- ${q.kind} (${q.table})\n${q.sql};\n`);
  else if (src.format === 'fhir') {
    const b = fhirBlock(m);
    if (b.profiles) out('accepted profiles:\n' + Object.entries(b.profiles).map(([t, ps]) => `  ${t}: ${ps.join(', ')}`).join('\n') + '\n');
    out('SQL-on-FHIR ViewDefinitions (FHIRPath):\n' + YAML.stringify(b.views));
  } else out(ssmix2Explain(m).join('\n'));
  return 0;
}

export async function siteDatasetCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process[sub === undefined ? 'stderr' : 'stdout'].write(help() + '\n');
    return sub === undefined ? 2 : 0;
  }
  const spec = SUBCOMMANDS[sub];
  if (!spec) throw new UsageError(`unknown: setu site dataset ${sub} (check, preview, explain)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    out(help(sub));
    return 0;
  }
  const options = Object.fromEntries(spec.flags.map((f) => [f, { type: FLAGS[f].type }])) as Record<string, { type: 'string' | 'boolean' }>;
  const { values } = parse(rest, options);
  const v = values as Record<string, string | boolean | undefined>;
  try {
    return await (sub === 'check' ? check(v) : sub === 'preview' ? preview(v) : explain(v));
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) throw e;
    // A source that cannot be read (a missing folder, a bad mapping, a database that refuses): one line, no stack.
    process.stderr.write(`setu: dataset ${v.dataset}: ${(e as Error).message}\n`);
    return 1;
  }
}
