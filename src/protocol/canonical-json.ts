/**
 * Deterministic JSON for hashing and signing, and a strict JSON parser for untrusted headers.
 *
 * `canonicalJson` writes object keys sorted by UTF-16 code unit (what `Array.prototype.sort` does),
 * no whitespace, and refuses anything that would not round-trip exactly: non-finite numbers,
 * `undefined`, functions, symbols, bigints, cycles, and non-plain objects (Date, Map, typed arrays),
 * because a hash over a lossy serialisation would not prove what was hashed.
 *
 * `parseJsonStrict` exists because `JSON.parse` silently keeps the last of two duplicate keys and turns
 * a `"__proto__"` key into a prototype change; both would let two readers disagree about one document.
 */

export class CanonicalJsonError extends Error {
  override name = 'CanonicalJsonError';
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

/** Serialise `value` deterministically. Throws CanonicalJsonError naming the path of the offending value. */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  write(value, '$', out, new Set());
  return out.join('');
}

function write(v: unknown, path: string, out: string[], stack: Set<object>): void {
  if (v === null) { out.push('null'); return; }
  switch (typeof v) {
    case 'boolean': out.push(v ? 'true' : 'false'); return;
    case 'string': out.push(JSON.stringify(v)); return;
    case 'number':
      if (!Number.isFinite(v)) throw new CanonicalJsonError(`${path}: non-finite number ${v} has no JSON form`);
      // -0 and 0 must hash the same: JSON.stringify(-0) is "0" already.
      out.push(JSON.stringify(v));
      return;
    case 'object': break;
    default: throw new CanonicalJsonError(`${path}: a ${typeof v} has no JSON form`);
  }
  const obj = v as object;
  if (stack.has(obj)) throw new CanonicalJsonError(`${path}: cyclic reference`);
  stack.add(obj);
  if (Array.isArray(obj)) {
    out.push('[');
    for (let i = 0; i < obj.length; i++) {
      if (i > 0) out.push(',');
      // Holes would serialise as null and hide a difference; refuse them.
      if (!(i in obj)) throw new CanonicalJsonError(`${path}[${i}]: sparse array hole`);
      write(obj[i], `${path}[${i}]`, out, stack);
    }
    out.push(']');
  } else {
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      throw new CanonicalJsonError(`${path}: only plain objects are allowed, got ${proto?.constructor?.name ?? 'unknown'}`);
    }
    const rec = obj as Record<string, unknown>;
    const keys = Object.keys(rec).sort();
    out.push('{');
    let first = true;
    for (const k of keys) {
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(k), ':');
      write(rec[k], `${path}.${k}`, out, stack);
    }
    out.push('}');
  }
  stack.delete(obj);
}

export interface StrictParseOptions {
  /** Deepest nesting accepted; bounded so hostile input cannot exhaust the stack. Default 64. */
  maxDepth?: number;
}

/**
 * Parse RFC 8259 JSON, refusing duplicate object keys (at any depth) and nesting beyond `maxDepth`.
 * Objects come back as ordinary objects whose keys (including "__proto__") are own data properties.
 * Throws CanonicalJsonError with the character offset of the problem.
 */
export function parseJsonStrict(text: string, opts: StrictParseOptions = {}): JsonValue {
  const p = new Parser(text, opts.maxDepth ?? 64);
  p.ws();
  const v = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail('unexpected trailing characters');
  return v;
}

const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

class Parser {
  i = 0;
  constructor(readonly s: string, readonly maxDepth: number) {}

  fail(msg: string): never {
    throw new CanonicalJsonError(`invalid JSON at offset ${this.i}: ${msg}`);
  }

  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else break;
    }
  }

  value(depth: number): JsonValue {
    if (depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth}`);
    const c = this.s[this.i];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (c === 't') return this.literal('true', true);
    if (c === 'f') return this.literal('false', false);
    if (c === 'n') return this.literal('null', null);
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    return this.fail(c === undefined ? 'unexpected end of input' : `unexpected character ${JSON.stringify(c)}`);
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (this.s.startsWith(word, this.i)) { this.i += word.length; return v; }
    return this.fail(`expected ${word}`);
  }

  number(): number {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m) return this.fail('malformed number');
    this.i += m[0].length;
    const n = Number(m[0]);
    // 1e400 parses to Infinity, which JSON cannot represent; refuse rather than invent a value.
    if (!Number.isFinite(n)) this.fail(`number ${m[0]} is out of range`);
    return n;
  }

  string(): string {
    const s = this.s;
    this.i++; // opening quote
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) { out += s.slice(start, this.i); this.i++; return out; }
      if (c < 0x20) this.fail('control character in string');
      if (c !== 0x5c) { this.i++; continue; }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const hex = s.slice(this.i, this.i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('bad \\u escape');
          out += String.fromCharCode(parseInt(hex, 16));
          this.i += 4;
          break;
        }
        default: this.i -= 2; this.fail('bad escape');
      }
      start = this.i;
    }
  }

  array(depth: number): JsonValue[] {
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === ']') { this.i++; return out; }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i];
      if (c === ',') { this.i++; continue; }
      if (c === ']') { this.i++; return out; }
      this.fail("expected ',' or ']'");
    }
  }

  object(depth: number): { [k: string]: JsonValue } {
    this.i++;
    const out: { [k: string]: JsonValue } = {};
    this.ws();
    if (this.s[this.i] === '}') { this.i++; return out; }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a string key');
      const keyAt = this.i;
      const k = this.string();
      if (Object.prototype.hasOwnProperty.call(out, k)) {
        this.i = keyAt;
        this.fail(`duplicate key ${JSON.stringify(k)}`);
      }
      this.ws();
      if (this.s[this.i] !== ':') this.fail("expected ':'");
      this.i++;
      this.ws();
      const v = this.value(depth + 1);
      // defineProperty, not assignment: assignment to "__proto__" would change the prototype.
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
      this.ws();
      const c = this.s[this.i];
      if (c === ',') { this.i++; continue; }
      if (c === '}') { this.i++; return out; }
      this.fail("expected ',' or '}'");
    }
  }
}
