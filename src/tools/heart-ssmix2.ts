/**
 * Fed-Heart-Disease hospitals as SS-MIX2 standard storage: per hospital a tree of HL7 v2.5 messages in
 * ISO-2022-JP, as a Japanese hospital's gateway files them, plus the study's enrolment list. Each UCI
 * row is a patient (a ten-digit id: hospital digit, then the row) with
 *   - ADT-00 (ADT^A08): sex and birth date (so that the age at the visit is the row's age), care date "-";
 *   - ADT-12 (ADT^A04): the outpatient visit, the cohort's index date (a day per row from 1987-01-02);
 *   - OML-11 (OUL^R22): serum total cholesterol under its JLAC10 code (3F050000002327101, mg/dL) and the
 *     fasting blood sugar flag (HL7 table 0136 yes/no);
 *   - OMG-13 (ORU^R01): the physiological test report: systolic blood pressure (LOINC 8480-6, mmHg),
 *     the exercise test items, the resting ECG, chest-pain type and the angiography result under local
 *     99-codes (HL7's convention for a hospital's own coding systems).
 * Display names are Japanese, as real messages carry them. A missing UCI value is simply not recorded.
 */
import type { HeartCenter } from '../site/data/heart.js';
import { encodeIso2022jp } from '../datasources/ssmix2/charset.js';
import { escapeHl7 } from '../datasources/ssmix2/hl7.js';
import { storagePath } from '../datasources/ssmix2/storage.js';
import { heartRecords, type HeartRecord } from './heart-csv.js';
import { birthDate, visitDate } from './heart-fhir.js';

/** The ten-digit SS-MIX2 patient id of row `line` of hospital `center`. */
export function ssmix2PatientId(center: HeartCenter, line: number): string {
  return `${center + 1}${String(line).padStart(9, '0')}`;
}

const HOSPITAL = ['CLEVELAND', 'HUNGARIAN', 'SWITZERLAND', 'VA'];
const RESTECG = ['正常', 'ST-T異常', '左室肥大'];
const CP = ['定型狭心症', '非定型狭心症', '非狭心症性胸痛', '胸痛なし'];
const yesNo = (v: string) => (Number(v) === 1 ? 'Y^はい^HL70136' : 'N^いいえ^HL70136');

/** One message: segments (fields already escaped where they hold text) joined with CR, as the storage keeps them. */
function message(type: string, center: HeartCenter, sent: string, control: string, segments: string[][]): string {
  const msh = ['MSH', '^~\\&', 'HIS', HOSPITAL[center]!, 'GW', 'RCV', sent, '', type, control, 'P', '2.5', '', '', '', '', '', '~ISO IR87', '', 'ISO 2022-1994', 'SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO'];
  return [msh.join('|'), ...segments.map((s) => s.join('|'))].join('\r') + '\r';
}

function pid(id: string, r: HeartRecord, date: string, updated?: string): string[] {
  const dob = r.cells.age === null ? '' : birthDate(date, Number(r.cells.age)).replace(/-/g, '');
  const sex = r.cells.sex === null ? '' : Number(r.cells.sex) === 1 ? 'M' : 'F';
  const f = ['PID', '0001', '', `${id}^^^^PI`, '', `患者^${r.line}^^^^^L^I~カンジャ^${r.line}^^^^^L^P`, '', dob, sex];
  if (updated) f.push(...Array(24).fill(''), updated);
  return f;
}

const obx = (n: number, type: string, code: string, value: string, unit: string, at: string) => ['OBX', String(n), type, code, '', value, unit, '', '', '', '', 'F', '', '', at];

/** One hospital's storage: file path (relative to the root) → ISO-2022-JP bytes, and enrolment.csv. */
export function heartSsmix2(center: HeartCenter): Record<string, Uint8Array | string> {
  const out: Record<string, Uint8Array | string> = {};
  const put = (path: string, text: string) => (out[path] = encodeIso2022jp(text));
  const enrolment = ['patient_id,set'];
  for (const r of heartRecords(center)) {
    const id = ssmix2PatientId(center, r.line), iso = visitDate(r.line), day = iso.replace(/-/g, ''), c = r.cells;
    const sent = (hh: string) => `${day}${hh}0000000`;
    const ts = (hh: string) => `${day}${hh}0000`; // to the second, as MSH-7 must be
    const control = (k: number) => `${id}${k}`;
    put(`ssmix2/${storagePath(id, '-', 'ADT-00', '-', sent('08'), '-')}`, message('ADT^A08^ADT_A01', center, ts('08'), control(0), [['EVN', '', ts('08')], pid(id, r, iso, ts('08')), ['PV1', '0001', 'O']]));
    put(`ssmix2/${storagePath(id, day, 'ADT-12', '-', sent('09'), '01')}`, message('ADT^A04^ADT_A01', center, ts('09'), control(1), [['EVN', '', ts('09')], pid(id, r, iso), ['PV1', '0001', 'O', '01^^^^^C', ...Array(40).fill(''), ts('09')]]));
    const order = `${day}${String(r.line).padStart(6, '0')}`; // + one digit: the 15-digit order number
    const labs: string[][] = [];
    if (c.chol !== null) labs.push(obx(labs.length + 1, 'NM', '3F050000002327101^総コレステロール^JC10', c.chol, 'mg/dL^mg/dL^ISO+', ts('10')));
    if (c.fbs !== null) labs.push(obx(labs.length + 1, 'CWE', `fbs^${escapeHl7('空腹時血糖>120mg/dL')}^99UCI`, yesNo(c.fbs), '', ts('10')));
    if (labs.length) {
      put(`ssmix2/${storagePath(id, day, 'OML-11', `${order}1`, sent('12'), '01')}`, message('OUL^R22^OUL_R22', center, ts('12'), control(2), [
        pid(id, r, iso), ['PV1', '0001', 'O', '01^^^^^C'],
        ['SPM', '1', `${order}1`, '', '023^血清^JC10', ...Array(12).fill(''), ts('10')],
        ['OBR', '1', `${order}1`, `${order}1`, 'E001^生化学^99O03', '', '', ts('10')],
        ['ORC', 'SC', `${order}1`, `${order}1`, '', 'CM', '', '', '', ts('12')],
        ...labs,
      ]));
    }
    const tests: string[][] = [];
    const add = (type: string, code: string, value: string | null, unit = '', f: (v: string) => string = (v) => v) => value !== null && tests.push(obx(tests.length + 1, type, code, f(value), unit, ts('11')));
    add('NM', '8480-6^収縮期血圧^LN', c.trestbps, 'mmHg^mmHg^ISO+');
    add('NM', 'thalach^最大心拍数^99UCI', c.thalach, '/min^回/分^ISO+');
    add('CWE', 'exang^運動誘発狭心症^99UCI', c.exang, '', yesNo);
    add('NM', 'oldpeak^ST低下^99UCI', c.oldpeak, 'mm^mm^ISO+');
    add('CWE', 'restecg^安静時心電図^99UCI', c.restecg, '', (v) => `${Number(v)}^${RESTECG[Number(v)]}^99ECG`);
    add('CWE', 'cp^胸痛の型^99UCI', c.cp, '', (v) => `${Number(v)}^${CP[Number(v) - 1]}^99CPT`);
    add('NM', 'num^冠動脈造影所見^99UCI', c.num);
    if (tests.length) {
      put(`ssmix2/${storagePath(id, day, 'OMG-13', `${order}2`, sent('13'), '01')}`, message('ORU^R01^ORU_R01', center, ts('13'), control(3), [
        pid(id, r, iso), ['PV1', '0001', 'O', '01^^^^^C'],
        ['ORC', 'SC', `${order}2`, `${order}2`, '', 'CM', '', '', '', ts('13')],
        ['OBR', '1', `${order}2`, `${order}2`, 'ETT^運動負荷心電図^99UCI', '', '', ts('11')],
        ...tests,
      ]));
    }
    if (r.set !== null) enrolment.push(`${id},${r.set}`);
  }
  out['enrolment.csv'] = enrolment.join('\n') + '\n';
  return out;
}
