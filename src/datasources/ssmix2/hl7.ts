/**
 * A strict HL7 v2 (ER7, the `|^~\&` encoding) message parser, for SS-MIX2 files. Strict where the
 * packages on npm are not (they accept malformed segment ids or leave escape sequences encoded):
 *
 * - the message starts with MSH; MSH-1 and MSH-2 declare five distinct delimiters (v2.5: four encoding
 *   characters), none a letter, digit, space or line break; a broken MSH is a broken message;
 * - every other segment has an id of three capitals or digits starting with a capital (`OBX`, `ZPI`);
 *   a segment with another id, a control character in a field, an escape sequence HL7 does not define,
 *   or an unterminated one is reported with its line and field and left out, the rest of the message kept;
 * - escape sequences are decoded after splitting: \F\ \S\ \T\ \R\ \E\ (the delimiters), \Xhh…\ (bytes,
 *   even-length hex), \H\ \N\ (highlighting: nothing), \.br\ \.sp\ (a line break), the other formatting
 *   commands (.fi .nf .in .ti .sk .ce: nothing); \C…\ \M…\ (in-line character-set switches) and \Z…\
 *   (locally defined) cannot be read here and are reported.
 *
 * Segments end with CR (the standard), CRLF or LF (files edited by hand); blank lines are ignored.
 * `""` (HL7's explicit null) is kept as written: callers decide what it means. Text arrives decoded
 * (ISO-2022-JP in SS-MIX2): splitting bytes first would break on JIS X 0208 characters whose bytes are `|`.
 */

/** SEG-n's value: repetitions → components → subcomponents, each decoded. */
export type Hl7Field = string[][][];

export interface Hl7Segment {
  id: string;
  /** 1-based line of the segment in the message (its place for the site's log). */
  line: number;
  /** fields[n] is SEG-n; fields[0] holds the id. For MSH, fields[1] is the field separator and fields[2] the encoding characters, as written. */
  fields: Hl7Field[];
}

export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export interface Hl7Message {
  delimiters: Delimiters;
  segments: Hl7Segment[];
}

/** Something in the message that does not parse: `field` names the HL7 position (`OBX-5`, `segment id`). */
export interface Hl7Problem {
  line: number;
  field: string;
  message: string;
}

export interface Hl7Parse {
  /** null when the MSH itself is broken (then nothing of the message can be read). */
  message: Hl7Message | null;
  /** Broken segments, each left out of `message`. */
  problems: Hl7Problem[];
}

const SEGMENT_ID = /^[A-Z][A-Z0-9]{2}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const FORMATTING = new Map([['.br', '\r'], ['.sp', '\r'], ['.fi', ''], ['.nf', ''], ['.in', ''], ['.ti', ''], ['.sk', ''], ['.ce', ''], ['H', ''], ['N', '']]);

class SegmentError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function readDelimiters(first: string): Delimiters {
  if (!first.startsWith('MSH')) throw new SegmentError('segment id', `a message starts with MSH, this one with ${JSON.stringify(first.slice(0, 3))}`);
  const field = first[3];
  const enc = field === undefined ? '' : first.slice(4, first.indexOf(field, 4) < 0 ? undefined : first.indexOf(field, 4));
  if (field === undefined || enc.length !== 4) throw new SegmentError('MSH-2', `MSH-1 and MSH-2 must give the field separator and four encoding characters (component, repetition, escape, subcomponent), got ${JSON.stringify(first.slice(3, 9))}`);
  const d: Delimiters = { field, component: enc[0]!, repetition: enc[1]!, escape: enc[2]!, subcomponent: enc[3]! };
  const all = Object.values(d);
  if (new Set(all).size !== 5 || all.some((c) => /[A-Za-z0-9\s]/.test(c))) throw new SegmentError('MSH-2', `the five delimiters must be distinct and neither letters, digits nor spaces, got ${JSON.stringify(field + enc)}`);
  return d;
}

/** One subcomponent's text with its escape sequences decoded; `where` names the field for errors. */
export function unescapeHl7(s: string, d: Delimiters, where: string): string {
  if (!s.includes(d.escape)) return s;
  let out = '';
  for (let i = 0; i < s.length; ) {
    const c = s[i]!;
    if (c !== d.escape) {
      out += c;
      i++;
      continue;
    }
    const end = s.indexOf(d.escape, i + 1);
    if (end < 0) throw new SegmentError(where, `an escape sequence starts at character ${i + 1} and never ends (a literal ${d.escape} is written ${d.escape}E${d.escape})`);
    const seq = s.slice(i + 1, end);
    const simple = { F: d.field, S: d.component, T: d.subcomponent, R: d.repetition, E: d.escape }[seq];
    if (simple !== undefined) out += simple;
    else if (FORMATTING.has(seq)) out += FORMATTING.get(seq);
    else if (seq.startsWith('X')) {
      const hex = seq.slice(1);
      if (hex.length === 0 || hex.length % 2 || !/^[0-9A-Fa-f]+$/.test(hex)) throw new SegmentError(where, `${d.escape}${seq}${d.escape}: hexadecimal data needs pairs of hex digits`);
      for (let k = 0; k < hex.length; k += 2) out += String.fromCharCode(parseInt(hex.slice(k, k + 2), 16));
    } else if (/^[CM]/.test(seq)) throw new SegmentError(where, `${d.escape}${seq}${d.escape}: in-line character-set escapes are not supported (SS-MIX2 switches character sets with ISO 2022 escapes in the bytes)`);
    else throw new SegmentError(where, `${d.escape}${seq}${d.escape} is not an HL7 escape sequence (known: F S T R E Xhh H N .br .sp …)`);
    i = end + 1;
  }
  return out;
}

function splitField(raw: string, d: Delimiters, where: string): Hl7Field {
  return raw.split(d.repetition).map((rep) => rep.split(d.component).map((comp) => comp.split(d.subcomponent).map((sub) => unescapeHl7(sub, d, where))));
}

function parseSegment(raw: string, line: number, d: Delimiters): Hl7Segment {
  const id = raw.slice(0, 3);
  if (!SEGMENT_ID.test(id) || (raw.length > 3 && raw[3] !== d.field)) throw new SegmentError('segment id', `${JSON.stringify(raw.slice(0, 8))} does not start with a segment id (three capitals or digits, the first a capital) and the field separator`);
  const isMsh = id === 'MSH';
  // MSH-1 is the separator itself and MSH-2 the encoding characters: neither is split nor unescaped.
  const parts = isMsh ? [id, d.field, ...raw.slice(4).split(d.field)] : raw.split(d.field);
  const fields: Hl7Field[] = parts.map((p, n) => {
    const where = `${id}-${n}`;
    const bad = CONTROL.exec(p);
    if (bad) throw new SegmentError(where, `holds the control character U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()}`);
    return n === 0 || (isMsh && n <= 2) ? [[[p]]] : splitField(p, d, where);
  });
  return { id, line, fields };
}

/** Parses one message; broken segments are left out and listed, a broken MSH gives no message. */
export function parseHl7(text: string): Hl7Parse {
  const lines = text.split(/\r\n|\r|\n/);
  const firstAt = lines.findIndex((l) => l !== '');
  const problems: Hl7Problem[] = [];
  if (firstAt < 0) return { message: null, problems: [{ line: 1, field: 'MSH', message: 'the file holds no segments' }] };
  let d: Delimiters;
  try {
    d = readDelimiters(lines[firstAt]!);
  } catch (e) {
    const err = e as SegmentError;
    return { message: null, problems: [{ line: firstAt + 1, field: err.field, message: err.message }] };
  }
  const segments: Hl7Segment[] = [];
  lines.forEach((raw, i) => {
    if (raw === '') return;
    try {
      const s = parseSegment(raw, i + 1, d);
      if (s.id === 'MSH' && segments.length > 0) throw new SegmentError('segment id', 'a second MSH: an SS-MIX2 file holds one message');
      segments.push(s);
    } catch (e) {
      if (!(e instanceof SegmentError)) throw e;
      problems.push({ line: i + 1, field: e.field, message: e.message });
    }
  });
  // A broken MSH line itself: no message, its problem says why.
  if (segments[0]?.id !== 'MSH') return { message: null, problems };
  return { message: { delimiters: d, segments }, problems };
}

/**
 * A position in a segment: `PID-7`, `OBX-3.1` (component), `RXE-2.1.1` (subcomponent); the first
 * repetition. Returns '' where the message has nothing there.
 */
export interface Hl7Path {
  segment: string;
  field: number;
  component: number;
  subcomponent: number;
}

const PATH = /^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$/;

export function parseHl7Path(p: string): Hl7Path | null {
  const m = PATH.exec(p);
  if (!m || Number(m[2]) < 1 || (m[3] !== undefined && Number(m[3]) < 1) || (m[4] !== undefined && Number(m[4]) < 1)) return null;
  return { segment: m[1]!, field: Number(m[2]), component: Number(m[3] ?? 1), subcomponent: Number(m[4] ?? 1) };
}

export function valueAt(s: Hl7Segment, p: Pick<Hl7Path, 'field' | 'component' | 'subcomponent'>): string {
  return s.fields[p.field]?.[0]?.[p.component - 1]?.[p.subcomponent - 1] ?? '';
}

/** Text written into a field with the standard delimiters escaped (the inverse of `unescapeHl7` for them). */
export function escapeHl7(s: string): string {
  return s.replace(/[\\|^~&]/g, (c) => `\\${({ '\\': 'E', '|': 'F', '^': 'S', '~': 'R', '&': 'T' } as Record<string, string>)[c]}\\`);
}
