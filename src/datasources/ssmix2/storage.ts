/**
 * The SS-MIX2 standard storage tree (標準化ストレージ, JAMI's specification, ISO/TS 24289):
 *
 *   <root>/<patient id 1–3>/<patient id 4–6>/<patient id>/<care date YYYYMMDD, or "-">/<data type>/<file>
 *   file: <patient id>_<care date>_<data type>_<order no>_<sent YYYYMMDDHHMMSSfff>_<department>_<condition>
 *
 * The first two levels are slices of the patient id (so a tree of millions of patients stays shallow);
 * "-" is the date of records that have none (demographics). The condition flag is 1 for the current
 * version of a record, 2 for an older version kept as history and 0 for a deleted one: only current
 * files are read. Each data type holds the HL7 v2.5 messages the specification assigns it (`DATA_TYPES`).
 * Anything else in the tree is reported with its path; the walk never stops for it.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Issues } from '../facts.js';

/** Data types of the standard storage and the message types (MSH-9 code^trigger) each holds. */
export const DATA_TYPES: Record<string, readonly string[]> = {
  'ADT-00': ['ADT^A08', 'ADT^A23'], // patient demographics: update, delete
  'ADT-01': ['ADT^A54', 'ADT^A55'], // attending doctor: change, cancel
  'ADT-12': ['ADT^A04'], // outpatient visit registered
  'ADT-21': ['ADT^A14', 'ADT^A27'], // admission planned, cancelled
  'ADT-22': ['ADT^A01', 'ADT^A11'], // admitted, cancelled
  'ADT-31': ['ADT^A21', 'ADT^A52'], // leave of absence
  'ADT-32': ['ADT^A22', 'ADT^A53'], // back from leave
  'ADT-41': ['ADT^A15', 'ADT^A26'], // transfer planned
  'ADT-42': ['ADT^A02', 'ADT^A12'], // transferred
  'ADT-51': ['ADT^A16', 'ADT^A25'], // discharge planned
  'ADT-52': ['ADT^A03', 'ADT^A13'], // discharged
  'ADT-61': ['ADT^A60'], // allergies
  'PPR-01': ['PPR^ZD1'], // diagnoses
  OMD: ['OMD^O03'], // diet order
  'OMP-01': ['RDE^O11'], // prescription order
  'OMP-11': ['RAS^O17'], // prescription administered
  'OMP-02': ['RDE^O11'], // injection order
  'OMP-12': ['RAS^O17'], // injection administered
  'OML-01': ['OML^O33'], // specimen test order
  'OML-11': ['OUL^R22'], // specimen test results
  'OMG-01': ['OMG^O19'], // radiology order
  'OMG-11': ['OMI^Z23'], // radiology performed
  'OMG-02': ['OMG^O19'], // endoscopy order
  'OMG-12': ['OMI^Z23'], // endoscopy performed
  'OMG-03': ['OMG^O19'], // physiological test order
  'OMG-13': ['ORU^R01'], // physiological test results
};

export interface StoredFile {
  path: string;
  patient: string;
  /** ISO date of the care date folder; undefined for "-". */
  date?: string;
  dataType: string;
}

function list(dir: string): string[] {
  return readdirSync(dir).sort();
}

const isDir = (p: string) => statSync(p).isDirectory();

/** ISO date of a YYYYMMDD that is a real calendar day, else null. */
export function ymdToIso(s: string): string | null {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(s);
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!));
  return d.getUTCFullYear() === +m[1]! && d.getUTCMonth() === +m[2]! - 1 && d.getUTCDate() === +m[3]! ? `${m[1]}-${m[2]}-${m[3]}` : null;
}

/**
 * The current files of the data types asked for, in path order; what does not follow the layout is
 * reported (`malformed-record` with the path and the part at fault) and skipped.
 */
export function walkStorage(root: string, dataTypes: ReadonlySet<string>, issues: Issues): StoredFile[] {
  let level1: string[];
  try {
    level1 = list(root);
  } catch (e) {
    throw new Error(`cannot read the SS-MIX2 storage root ${root}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out: StoredFile[] = [];
  const bad = (path: string, field: string, detail: string) => issues.add('malformed-record', path, field, detail);
  for (const a of level1) {
    const pa = join(root, a);
    if (!isDir(pa)) continue; // index files and the like beside the tree
    for (const b of list(pa)) {
      const pb = join(pa, b);
      if (!isDir(pb)) continue;
      for (const patient of list(pb)) {
        const pp = join(pb, patient);
        if (!isDir(pp)) continue;
        if (patient.slice(0, 3) !== a || patient.slice(3, 6) !== b) {
          bad(pp, 'patient folder', `patient ${patient} belongs under ${patient.slice(0, 3)}/${patient.slice(3, 6)}/, not ${a}/${b}/`);
          continue;
        }
        for (const day of list(pp)) {
          const pd = join(pp, day);
          if (!isDir(pd)) continue;
          const date = day === '-' ? undefined : ymdToIso(day);
          if (date === null) {
            bad(pd, 'care date folder', `${JSON.stringify(day)} is neither a date (YYYYMMDD) nor "-"`);
            continue;
          }
          for (const type of list(pd)) {
            const pt = join(pd, type);
            if (!isDir(pt)) continue;
            if (!DATA_TYPES[type]) {
              bad(pt, 'data type folder', `${JSON.stringify(type)} is not an SS-MIX2 standard storage data type (${Object.keys(DATA_TYPES).join(', ')})`);
              continue;
            }
            if (!dataTypes.has(type)) continue;
            for (const name of list(pt)) {
              const path = join(pt, name);
              const f = fileName(name);
              if ('error' in f) bad(path, 'file name', f.error);
              else if (f.patient !== patient || f.day !== day || f.dataType !== type) bad(path, 'file name', `names patient ${f.patient}, date ${f.day} and data type ${f.dataType}, but lies in ${patient}/${day}/${type}/`);
              else if (f.condition === '1') out.push({ path, patient, ...(date ? { date } : {}), dataType: type });
            }
          }
        }
      }
    }
  }
  return out;
}

interface FileName {
  patient: string;
  day: string;
  dataType: string;
  condition: '0' | '1' | '2';
}

/** The parts of a standard storage file name (an extension such as .hl7 is allowed). */
export function fileName(name: string): FileName | { error: string } {
  const parts = name.replace(/\.[A-Za-z0-9]+$/, '').split('_');
  if (parts.length !== 7) return { error: `${JSON.stringify(name)} is not <patient>_<date>_<data type>_<order no>_<sent time>_<department>_<condition> (${parts.length} parts)` };
  const [patient, day, dataType, , sent, , condition] = parts as [string, string, string, string, string, string, string];
  if (!/^\d{17}$/.test(sent)) return { error: `the sent time ${JSON.stringify(sent)} is not YYYYMMDDHHMMSSfff` };
  if (condition !== '0' && condition !== '1' && condition !== '2') return { error: `the condition flag ${JSON.stringify(condition)} is not 0 (deleted), 1 (current) or 2 (history)` };
  return { patient, day, dataType, condition };
}

/** Where a file of the storage lies, for the converter: the folders and the name. */
export function storagePath(patient: string, day: string, dataType: string, orderNo: string, sent: string, department: string, condition: '0' | '1' | '2' = '1'): string {
  return join(patient.slice(0, 3), patient.slice(3, 6), patient, day, dataType, `${patient}_${day}_${dataType}_${orderNo}_${sent}_${department}_${condition}`);
}
