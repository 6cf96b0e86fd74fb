/**
 * Facts → the study's table: one row per patient in the cohort, one column per mapping column, every
 * cell text or null (missing), exactly the shape the CSV reader returns, so the schema check, the
 * prepare round and the encoding downstream are the ones CSV files go through.
 *
 * What happens to awkward facts, by rule (each counted, and logged with its ref and field):
 * - no fact for a column: the cell is missing (`missing-value`); the schema's `missing` rule decides the row;
 * - duplicates: `latest` takes the latest dated fact; two different values on that date conflict
 *   (`conflicting-values`) and the cell is missing;
 * - a unit that UCUM cannot convert to the column's unit: that fact is left out (`unit-not-convertible`);
 * - a coded value not in the column's `map`: that fact is left out (`unmapped-code`);
 * - a fact outside the window or with another code: not selected (not a problem).
 */
import type { Fact, DropReason } from './facts.js';
import { Issues } from './facts.js';
import type { Code, Column, FactColumn, Mapping } from './mapping.js';
import { convertUnit } from './units.js';

export interface ExtractedTable {
  /** Shaped like the CSV reader's table (`CsvTable`): `file` is set by whoever writes it down. */
  header: string[];
  rows: Array<Array<string | null>>;
  /** 1-based line of each row in the table written as CSV (header on line 1). */
  lines: number[];
  /** The source's patient key of each row: site-local, for the site's log only. */
  patients: string[];
  /** Why each null cell is null. */
  why: Array<Array<DropReason | null>>;
}

const DAY = 86_400_000;

/** Milliseconds of a date's calendar day (UTC), or NaN. Times and zones are ignored: windows are in days. */
export function dayOf(date: string | undefined): number {
  const m = date ? /^(\d{4})-(\d{2})-(\d{2})/.exec(date) : null;
  return m ? Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!) : NaN;
}

/** Whole years from birth to `at` (both ISO dates). */
export function ageInYears(birth: string, at: string): number {
  const b = /^(\d{4})-(\d{2})-(\d{2})/.exec(birth)!, a = /^(\d{4})-(\d{2})-(\d{2})/.exec(at)!;
  let years = +a[1]! - +b[1]!;
  if (+a[2]! < +b[2]! || (+a[2]! === +b[2]! && +a[3]! < +b[3]!)) years--;
  return years;
}

function matches(f: Fact, kind: string, codes: Code[] | undefined): Code | null | undefined {
  if (f.kind !== kind) return undefined;
  if (!codes) return null;
  return codes.find((c) => c.code === f.code && (c.system === undefined || c.system === f.system));
}

/** Digit strings compare as numbers, everything else by code units: a stable row order whatever the source's order. */
export function comparePatients(a: string, b: string): number {
  if (/^\d+$/.test(a) && /^\d+$/.test(b) && a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

export function factsToTable(facts: readonly Fact[], m: Mapping, issues: Issues): ExtractedTable {
  const byPatient = new Map<string, Fact[]>();
  for (const f of facts) {
    let l = byPatient.get(f.patient);
    if (!l) byPatient.set(f.patient, (l = []));
    l.push(f);
  }
  const header = Object.keys(m.columns);
  const out: ExtractedTable = { header, rows: [], lines: [], patients: [], why: [] };
  const aliases = m.unitAliases ?? {};
  const idx = m.cohort.index;
  for (const patient of [...byPatient.keys()].sort(comparePatients)) {
    const mine = byPatient.get(patient)!;
    if (!mine.some((f) => f.kind === 'patient')) {
      for (const f of mine) issues.add('no-patient', f.ref, 'subject', `refers to patient ${patient}, of whom the source has no demographic record`);
      continue;
    }
    const dates = mine.filter((f) => matches(f, idx.kind, idx.codes) !== undefined).map((f) => ({ f, t: dayOf(f.date) }));
    if (dates.length === 0) continue; // not in the cohort
    const dated = dates.filter((d) => !Number.isNaN(d.t));
    for (const d of dates) if (Number.isNaN(d.t)) issues.add('invalid-value', d.f.ref, 'date', `index ${idx.kind} has no usable date (${JSON.stringify(d.f.date ?? null)})`);
    if (dated.length === 0) continue;
    dated.sort((a, b) => a.t - b.t);
    const index = (idx.pick === 'latest' ? dated[dated.length - 1]! : dated[0]!).f.date!;
    const row: Array<string | null> = [], why: Array<DropReason | null> = [];
    for (const name of header) {
      const r = cell(mine, m.columns[name]!, name, index, aliases, issues);
      row.push(r.value);
      why.push(r.value === null ? r.why : null);
    }
    out.rows.push(row);
    out.why.push(why);
    out.patients.push(patient);
    out.lines.push(out.rows.length + 1);
  }
  return out;
}

interface Cell {
  value: string | null;
  why: DropReason;
}

function cell(facts: Fact[], col: Column, name: string, index: string, aliases: Record<string, string>, issues: Issues): Cell {
  if ('ageAt' in col) {
    const kind = col.kind ?? 'patient', code = col.code ?? 'birthDate';
    const b = facts.find((f) => f.kind === kind && f.code === code && f.value);
    if (!b) return { value: null, why: 'missing-value' };
    if (Number.isNaN(dayOf(b.value!))) {
      issues.add('invalid-value', b.ref, name, `birth date ${JSON.stringify(b.value)} is not a date`);
      return { value: null, why: 'invalid-value' };
    }
    return { value: String(ageInYears(b.value!, index)), why: 'missing-value' };
  }
  return factCell(facts, col, name, index, aliases, issues);
}

function factCell(facts: Fact[], col: FactColumn, name: string, index: string, aliases: Record<string, string>, issues: Issues): Cell {
  const t0 = dayOf(index);
  const chosen: Array<{ f: Fact; code: Code | null }> = [];
  for (const f of facts) {
    const code = matches(f, col.kind, col.codes);
    if (code === undefined) continue;
    if (col.window) {
      const t = dayOf(f.date);
      if (Number.isNaN(t) || t < t0 - (col.window.beforeDays ?? 0) * DAY || t > t0 + (col.window.afterDays ?? 0) * DAY) continue;
    }
    chosen.push({ f, code });
  }
  const pick = col.pick ?? 'latest';
  if (pick === 'exists') return { value: chosen.length ? '1' : '0', why: 'missing-value' };
  if (pick === 'count') return { value: String(chosen.length), why: 'missing-value' };
  let firstWhy: DropReason | null = null;
  const values: Array<{ v: string; t: number; ref: string }> = [];
  for (const { f, code } of chosen) {
    let v = col.field === 'date' ? f.date ?? null : f.value ?? null;
    if (v === null || v === '') continue;
    if (col.map) {
      const keyed = f.valueSystem !== undefined ? `${f.valueSystem}|${v}` : v;
      const mapped = col.map[keyed] ?? (f.valueSystem === undefined ? undefined : col.map[v]);
      if (mapped === undefined) {
        issues.add('unmapped-code', f.ref, name, `value ${JSON.stringify(keyed)} is not in the mapping (known: ${Object.keys(col.map).join(', ')})`);
        firstWhy ??= 'unmapped-code';
        continue;
      }
      v = mapped;
    }
    if (col.unit) {
      const from = f.unit ? aliases[f.unit] ?? f.unit : undefined;
      const r = from === undefined ? { error: 'the value has no unit' } : convertUnit(v, from, col.unit, code?.molecularWeight);
      if ('error' in r) {
        issues.add('unit-not-convertible', f.ref, name, `${JSON.stringify(f.unit ?? null)} → ${col.unit}: ${r.error}`);
        firstWhy ??= 'unit-not-convertible';
        continue;
      }
      v = r.value;
    }
    values.push({ v, t: dayOf(f.date), ref: f.ref });
  }
  if (values.length === 0) return { value: null, why: firstWhy ?? 'missing-value' };
  let candidates = values;
  if (pick === 'latest' || pick === 'earliest') {
    const ts = values.map((x) => (Number.isNaN(x.t) ? -Infinity : x.t));
    const best = pick === 'latest' ? Math.max(...ts) : Math.min(...values.map((x) => (Number.isNaN(x.t) ? Infinity : x.t)));
    candidates = values.filter((x) => (Number.isNaN(x.t) ? (pick === 'latest' ? -Infinity : Infinity) : x.t) === best);
  }
  const distinct = new Set(candidates.map((x) => Number.isFinite(Number(x.v)) && x.v.trim() !== '' ? String(Number(x.v)) : x.v));
  if (distinct.size > 1) {
    issues.add('conflicting-values', candidates.map((x) => x.ref).join(', '), name, `${candidates.length} values ${[...distinct].map((d) => JSON.stringify(d)).join(', ')} ${pick === 'only' ? 'disagree' : 'share the ' + pick + ' date'}`);
    return { value: null, why: 'conflicting-values' };
  }
  return { value: candidates[0]!.v, why: 'missing-value' };
}
