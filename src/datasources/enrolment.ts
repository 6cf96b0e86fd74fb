/**
 * A site-local enrolment list as facts: the study coordinator's CSV of enrolled patients (one row each,
 * keyed by the source's patient id), every other column a fact of kind `enrolment` coded by its name.
 * The train/test assignment of a study usually lives in such a list, not in the clinical record.
 */
import { readCsv } from './csv.js';
import type { Fact } from './facts.js';

export function enrolmentFacts(file: string, patientColumn: string): Fact[] {
  const t = readCsv(file);
  const key = t.header.indexOf(patientColumn);
  if (key < 0) throw new Error(`${file}: no column "${patientColumn}" (the enrolment's patient column); it has ${t.header.join(', ')}`);
  const out: Fact[] = [];
  t.rows.forEach((r, i) => {
    const patient = r[key];
    if (!patient) return;
    t.header.forEach((h, j) => {
      if (j !== key && r[j] !== null) out.push({ patient, kind: 'enrolment', code: h, value: r[j]!, ref: `${file}:${t.lines[i]}` });
    });
  });
  return out;
}
