/**
 * SS-MIX2 messages → facts, through the mapping's `ss-mix2` block: declarative views over HL7 v2.5
 * segments, the counterpart of FHIR's ViewDefinitions. Each view names the fact kind it yields, the
 * data types it reads, the segment each fact comes from (one fact per such segment), filters
 * (`where`) and, per fact field, where the value lies:
 *
 *   - name: result                      # fact kind
 *     dataTypes: [OML-11]               # OUL^R22 lab results
 *     segment: OBX
 *     where: [{ path: OBX-11, in: [F, C] }]       # final and corrected results only
 *     facts:
 *       - { system: OBX-3.3, code: OBX-3.1, value: OBX-5.1, valueSystem: OBX-5.3, unit: OBX-6.1, date: [OBX-14, OBR-7, $date] }
 *
 * A path is `SEG-field[.component[.subcomponent]]` (the first repetition). It reads the view's own
 * segment, or for another segment id the nearest one before it in the message (the OBR an OBX belongs
 * to, the ORC of an RXE; MSH and PID head every message). A list gives alternatives, the first
 * non-empty wins; `$date` is the file's care date folder; `'text'` is a literal. `date` fields, and
 * values marked `{ path, as: date }`, are HL7 timestamps turned into ISO dates. Coding-system names
 * (OBX-3.3's `JC10`) become the URIs the mapping's codes use through `codingSystems`.
 *
 * What the reader checks before any view runs (each case reported with file, line and field, and
 * counted): a message that does not decode or parse (`malformed-record`), a broken segment (left out,
 * `broken-segment`), a message type that the data type does not hold or another HL7 version
 * (`unknown-profile`, MSH-9 / MSH-12), a PID-3 that is not the patient of the folder (`invalid-value`),
 * a numeric result (OBX-2 NM) that is not a number or a timestamp that is not one (`invalid-value`).
 */
import { readFileSync } from 'node:fs';
import { Type, type Static } from '@sinclair/typebox';
import type { Fact, Issues } from '../facts.js';
import { MappingError, sourceBlock, type Mapping } from '../mapping.js';
import type { SourceFacts } from '../extract.js';
import { decodeText, ENCODINGS, type Ss2Encoding } from './charset.js';
import { parseHl7, parseHl7Path, valueAt, type Hl7Message, type Hl7Path, type Hl7Segment } from './hl7.js';
import { DATA_TYPES, walkStorage, ymdToIso, type StoredFile } from './storage.js';

const strict = { additionalProperties: false } as const;
const Source = Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })]);
const FactTemplateSchema = Type.Object(
  {
    system: Type.Optional(Source),
    code: Type.Optional(Source),
    value: Type.Optional(Type.Union([Source, Type.Object({ path: Source, as: Type.Literal('date') }, strict)])),
    valueSystem: Type.Optional(Source),
    unit: Type.Optional(Source),
    date: Type.Optional(Source),
  },
  strict,
);
export const Ss2ViewSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_-]*$' }),
    description: Type.Optional(Type.String()),
    dataTypes: Type.Array(Type.Union(Object.keys(DATA_TYPES).map((k) => Type.Literal(k))), { minItems: 1 }),
    segment: Type.String({ pattern: '^[A-Z][A-Z0-9]{2}$' }),
    where: Type.Optional(Type.Array(Type.Object({ path: Type.String({ minLength: 1 }), in: Type.Array(Type.String(), { minItems: 1 }) }, strict))),
    facts: Type.Array(FactTemplateSchema, { minItems: 1 }),
  },
  strict,
);
export const Ss2MappingSchema = Type.Object(
  {
    /** HL7 version of the messages (MSH-12); SS-MIX2 stores 2.5. */
    hl7Version: Type.Literal('2.5'),
    /** HL7 coding-system names (CWE.3: JC10, JC11, LN, HOT9, 99zzz…) → the code system URIs the mapping's codes use. */
    codingSystems: Type.Record(Type.String({ minLength: 1 }), Type.String({ minLength: 1 })),
    views: Type.Array(Ss2ViewSchema, { minItems: 1 }),
  },
  strict,
);
export type Ss2Mapping = Static<typeof Ss2MappingSchema>;
export type Ss2View = Static<typeof Ss2ViewSchema>;
type FactField = keyof Static<typeof FactTemplateSchema>;
const FACT_FIELDS: FactField[] = ['system', 'code', 'value', 'valueSystem', 'unit', 'date'];

type Ref = { kind: 'path'; path: Hl7Path; text: string } | { kind: 'date' } | { kind: 'literal'; value: string };

function compileRef(s: string, where: string): Ref {
  if (s === '$date') return { kind: 'date' };
  const lit = /^'([^']*)'$/.exec(s);
  if (lit) return { kind: 'literal', value: lit[1]! };
  const path = parseHl7Path(s);
  if (!path) throw new MappingError(`${where}: ${JSON.stringify(s)} is not an HL7 path (SEG-field[.component[.subcomponent]], e.g. OBX-5.1), $date or a 'literal'`);
  return { kind: 'path', path, text: s };
}

interface CompiledView {
  view: Ss2View;
  where: Array<{ ref: Ref; in: string[] }>;
  facts: Array<Partial<Record<FactField, { refs: Ref[]; asDate: boolean }>>>;
}

export function ssmix2Block(m: Mapping): Ss2Mapping {
  const b = sourceBlock(m, 'ss-mix2', Ss2MappingSchema);
  compileViews(b, m.file);
  return b;
}

function compileViews(b: Ss2Mapping, file: string): CompiledView[] {
  return b.views.map((view, i) => {
    const at = `${file}: /ss-mix2/views/${i}`;
    return {
      view,
      where: (view.where ?? []).map((w, k) => ({ ref: compileRef(w.path, `${at}/where/${k}/path`), in: w.in })),
      facts: view.facts.map((t, j) => {
        const out: CompiledView['facts'][number] = {};
        for (const f of FACT_FIELDS) {
          const src = t[f];
          if (src === undefined) continue;
          const asDate = f === 'date' || (typeof src === 'object' && !Array.isArray(src));
          const list = typeof src === 'object' && !Array.isArray(src) ? src.path : src;
          out[f] = { refs: (Array.isArray(list) ? list : [list]).map((s) => compileRef(s, `${at}/facts/${j}/${f}`)), asDate };
        }
        return out;
      }),
    };
  });
}

/** HL7 TS/DT (YYYYMMDD[HHMM[SS[.S…]]][±ZZZZ]) → ISO date or date-time; null when it is not one. */
export function hl7Date(ts: string): string | null {
  const m = /^(\d{8})(?:(\d{2})(\d{2})(?:(\d{2})(?:\.\d{1,4})?)?)?(?:[+-]\d{4})?$/.exec(ts);
  const day = m ? ymdToIso(m[1]!) : null;
  if (!m || !day) return null;
  if (m[2] === undefined) return day;
  if (+m[2] > 23 || +m[3]! > 59 || +(m[4] ?? 0) > 59) return null;
  return `${day}T${m[2]}:${m[3]}:${m[4] ?? '00'}`;
}

const NM = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/** The messages' segments indexed for "nearest preceding segment of this id". */
function preceding(msg: Hl7Message, i: number, id: string): Hl7Segment | undefined {
  for (let k = i; k >= 0; k--) if (msg.segments[k]!.id === id) return msg.segments[k];
  return undefined;
}

export class Ss2Facts implements SourceFacts {
  readonly facts: Fact[] = [];
  records = 0;
  private readonly views: CompiledView[];
  private readonly byType = new Map<string, CompiledView[]>();
  constructor(
    private readonly block: Ss2Mapping,
    private readonly issues: Issues,
    file: string,
  ) {
    this.views = compileViews(block, file);
    for (const v of this.views) for (const t of v.view.dataTypes) this.byType.set(t, [...(this.byType.get(t) ?? []), v]);
  }

  dataTypes(): Set<string> {
    return new Set(this.byType.keys());
  }

  /** Reads one stored file (its bytes in `encoding`) into facts. */
  addFile(f: StoredFile, bytes: Uint8Array, encoding: Ss2Encoding): void {
    this.records++;
    let text: string;
    try {
      text = decodeText(bytes, encoding);
    } catch {
      return this.issues.add('malformed-record', f.path, 'encoding', `is not valid ${encoding} text (SS-MIX2 files are ISO-2022-JP; a gateway that writes another encoding is configured with source.encoding)`);
    }
    const { message, problems } = parseHl7(text);
    for (const p of problems) this.issues.add(message ? 'broken-segment' : 'malformed-record', `${f.path}:${p.line}`, p.field, p.message);
    if (!message) return;
    const msh = message.segments[0]!;
    const type = `${valueAt(msh, { field: 9, component: 1, subcomponent: 1 })}^${valueAt(msh, { field: 9, component: 2, subcomponent: 1 })}`;
    if (!DATA_TYPES[f.dataType]!.includes(type)) return this.issues.add('unknown-profile', `${f.path}:${msh.line}`, 'MSH-9', `is ${type}; SS-MIX2 ${f.dataType} holds ${DATA_TYPES[f.dataType]!.join(', ')}`);
    const version = valueAt(msh, { field: 12, component: 1, subcomponent: 1 });
    if (version !== this.block.hl7Version && !version.startsWith(`${this.block.hl7Version}.`)) return this.issues.add('unknown-profile', `${f.path}:${msh.line}`, 'MSH-12', `is HL7 version ${JSON.stringify(version)}; the mapping reads ${this.block.hl7Version}`);
    const pid = message.segments.find((s) => s.id === 'PID');
    const pid3 = pid ? valueAt(pid, { field: 3, component: 1, subcomponent: 1 }) : '';
    if (pid && pid3 !== f.patient) return this.issues.add('invalid-value', `${f.path}:${pid.line}`, 'PID-3', `names patient ${JSON.stringify(pid3)} but the file lies in patient ${f.patient}'s folder`);
    for (const v of this.byType.get(f.dataType) ?? []) this.runView(v, message, f);
  }

  private runView(v: CompiledView, msg: Hl7Message, f: StoredFile): void {
    msg.segments.forEach((seg, i) => {
      if (seg.id !== v.view.segment) return;
      const read = (r: Ref): string => {
        if (r.kind === 'date') return f.date ? f.date.replace(/-/g, '') : '';
        if (r.kind === 'literal') return r.value;
        const s = r.path.segment === seg.id ? seg : preceding(msg, i, r.path.segment);
        const x = s ? valueAt(s, r.path) : '';
        return x === '""' ? '' : x; // HL7's explicit null: no value
      };
      if (!v.where.every((w) => w.in.includes(read(w.ref)))) return;
      const ref = `${f.path}:${seg.line}`;
      for (const t of v.facts) {
        const fact: Fact = { patient: f.patient, kind: v.view.name, ref: `${ref} (${seg.id})` };
        let ok = true;
        for (const field of FACT_FIELDS) {
          const spec = t[field];
          if (!spec) continue;
          const hit = spec.refs.map((r) => ({ r, x: read(r) })).find((h) => h.x !== '');
          if (!hit) continue;
          let x = hit.x;
          const where = hit.r.kind === 'path' ? hit.r.text : hit.r.kind === 'date' ? 'care date folder' : 'literal';
          if (spec.asDate) {
            const iso = hl7Date(x);
            if (iso === null) {
              this.issues.add('invalid-value', ref, where, `${JSON.stringify(x)} is not an HL7 timestamp (YYYYMMDD[HHMM[SS]])`);
              if (field === 'value') ok = false;
              continue;
            }
            x = iso;
          } else if (field === 'system' || field === 'valueSystem') x = this.block.codingSystems[x] ?? x;
          else if (field === 'value' && seg.id === 'OBX' && where.startsWith('OBX-5') && valueAt(seg, { field: 2, component: 1, subcomponent: 1 }) === 'NM' && !NM.test(x)) {
            this.issues.add('invalid-value', ref, where, `OBX-2 says NM (numeric) but the value is ${JSON.stringify(x)}`);
            ok = false;
            continue;
          }
          (fact as unknown as Record<string, string>)[field] = x;
        }
        if (ok) this.facts.push(fact);
      }
    });
  }
}

export interface Ss2Source {
  root: string;
  encoding?: Ss2Encoding;
}

/** Every current file of the data types the mapping reads, as facts. */
export function readSsmix2(src: Ss2Source, m: Mapping, issues: Issues, log: (s: string) => void): SourceFacts {
  const block = ssmix2Block(m);
  const out = new Ss2Facts(block, issues, m.file);
  const files = walkStorage(src.root, out.dataTypes(), issues);
  log(`ss-mix2: ${files.length} current file(s) of ${[...out.dataTypes()].join(', ')} under ${src.root}`);
  for (const f of files) out.addFile(f, readFileSync(f.path), src.encoding ?? ENCODINGS[0]);
  return out;
}

/** What the mapping reads, for the site's integration engineer: per view, its data types, message types, segment, filters and paths. */
export function ssmix2Explain(m: Mapping): string[] {
  const b = ssmix2Block(m);
  const show = (s: unknown): string => (Array.isArray(s) ? s.join(' | ') : typeof s === 'object' && s ? `${show((s as { path: unknown }).path)} (as date)` : String(s));
  const lines = [`HL7 v${b.hl7Version} messages; coding systems: ${Object.entries(b.codingSystems).map(([k, v]) => `${k} = ${v}`).join(', ')}`];
  for (const v of b.views) {
    lines.push('', `facts of kind "${v.name}": one per ${v.segment} segment in ${v.dataTypes.map((t) => `${t} (${DATA_TYPES[t]!.join(', ')})`).join(', ')}`);
    for (const w of v.where ?? []) lines.push(`  where ${w.path} is one of ${w.in.join(', ')}`);
    for (const t of v.facts) lines.push(`  ${FACT_FIELDS.filter((f) => t[f] !== undefined).map((f) => `${f} = ${show(t[f])}`).join('; ')}`);
  }
  return lines;
}
