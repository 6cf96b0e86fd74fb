/**
 * What every source turns its records into before the mapping makes columns of them: facts, one per
 * demographic attribute, observation, condition, prescription or visit, each tied to a patient and to
 * where it came from (file and line, or resource id) for the site's own log. Nothing here leaves the site.
 */

export interface Fact {
  /** The source's own patient key (site-local; never sent). */
  patient: string;
  /** Which kind of record: a FHIR view's name, an OMOP domain ('patient' holds demographics). */
  kind: string;
  /** Code system URI of `code` (LOINC, ICD-10, SNOMED CT, JLAC10, a hospital's local system…). */
  system?: string;
  code?: string;
  /** The value as text (a number, a date, a code); for a coded value, `valueSystem` names its system. */
  value?: string | null;
  valueSystem?: string;
  unit?: string;
  /** ISO date or date-time the fact applies to. */
  date?: string;
  /** Where it came from: `file:line`, `Observation/abc`, `measurement:42`. Logged at the site only. */
  ref: string;
}

// Why a record or value was left out: fixed words shared with the prepare report, so counts say nothing else.
import { DROP_REASONS, type DropReason } from '../protocol/data-schema.js';
export { DROP_REASONS, type DropReason };

/** One problem found while extracting, with enough detail for the site's integration engineer. */
export interface Issue {
  reason: DropReason;
  /** file:line, resource id, table:row id. */
  ref: string;
  /** The field or column at fault. */
  field: string;
  detail: string;
}

/** Collects issues; the counts go to the prepare report, the details to the site's log. */
export class Issues {
  readonly list: Issue[] = [];
  add(reason: DropReason, ref: string, field: string, detail: string): void {
    this.list.push({ reason, ref, field, detail });
  }
  counts(): Array<{ reason: DropReason; count: number }> {
    const m = new Map<DropReason, number>();
    for (const i of this.list) m.set(i.reason, (m.get(i.reason) ?? 0) + 1);
    return DROP_REASONS.filter((r) => m.has(r)).map((reason) => ({ reason, count: m.get(reason)! }));
  }
}

export function formatIssue(i: Issue): string {
  return `${i.ref}: ${i.field}: ${i.reason}: ${i.detail}`;
}
