/**
 * Test helper: hostile HTTP requests generated from the coordinator's own OpenAPI document and route table
 * (fast-check arbitraries). For each route: path parameters, query strings, bodies and headers that are
 * sometimes valid (so the request reaches the route's own code, with ids of real objects) and mostly not:
 * NUL bytes, lone surrogates, bad percent-encoding, very long and odd unicode text, prototype keys, wrong
 * types, missing and extra fields, deep nesting, garbage bytes, other content types; signed by a real
 * identity, unsigned, or signed wrongly (another key, a stale clock, a body other than the one signed).
 */
import fc from 'fast-check';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';
import { RESULT_META_KEY } from '../protocol/api.js';
import type { Identity } from './inject.js';

export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  nullable?: boolean;
}

/** The API: what /openapi.json must describe (not the document itself, nor the dashboard's files). */
export const API_PATH = /^\/(v1\/|healthz$|readyz$|metrics$)/;

export interface FuzzRoute {
  method: string;
  /** Fastify's pattern, e.g. /v1/studies/:id */
  url: string;
  body?: JsonSchema;
  query?: { name: string; schema: JsonSchema }[];
  documented: boolean;
}

export interface FuzzPools {
  /** Ids and names of real objects (studies, sites, users, tasks, models, institutions). */
  ids: string[];
  /** Identities that sign most requests. */
  signers: Identity[];
  /** Identities that sign (and ids that are targeted by) requests that may revoke or re-key them. */
  sacrificial: Identity[];
}

export interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
  route: FuzzRoute;
  /** How it was signed, for the report. */
  auth: string;
}

interface OpenApiDoc {
  paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema?: JsonSchema }> }; parameters?: { in: string; name: string; schema?: JsonSchema }[] }>>;
}

/** The routes to walk: every documented operation, and every route in Fastify's table that is not documented. */
export function fuzzRoutes(openapi: OpenApiDoc, table: { method: string; url: string }[]): FuzzRoute[] {
  const routes: FuzzRoute[] = [];
  const seen = new Set<string>();
  for (const [path, ops] of Object.entries(openapi.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const url = path.replace(/\{([^}]+)\}/g, ':$1');
      const m = method.toUpperCase();
      seen.add(`${m} ${url}`);
      const body = op.requestBody?.content?.['application/json']?.schema;
      const query = (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => ({ name: p.name, schema: p.schema ?? {} }));
      routes.push({ method: m, url, ...(body ? { body } : {}), ...(query.length ? { query } : {}), documented: true });
    }
  }
  for (const r of table) if (!seen.has(`${r.method} ${r.url}`)) routes.push({ method: r.method, url: r.url, documented: false });
  return routes;
}

const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'];

/** Strings that have broken servers: NUL, lone surrogates, huge, odd unicode, prototype names, paths, numbers. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('a\u0000b', '\u0000', '\ud800', 'x\udfffy', '\ud83d', '\u202etxt.exe', '\ufeff', '\uffff', 'e\u0301\u0301\u0301', '😀👩‍👩‍👧', '日本語テキスト', 'हिन्दी', '', ' ', '..', '../../etc/passwd', '%', '%00', "' or 1=1 --", '-1', '1e309', 'NaN', 'null', '{"a":1}', '\r\n', '<script>'),
  fc.constantFrom(...PROTO_KEYS),
  fc.integer({ min: 1, max: 3 }).map((k) => 'x'.repeat([300, 5000, 70_000][k - 1]!)),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 3 }),
  fc.string({ unit: fc.integer({ min: 0, max: 31 }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 5 }),
);

const wrongType: fc.Arbitrary<unknown> = fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), fc.constant([]), fc.constant({}), fc.array(fc.jsonValue(), { maxLength: 3 }), nastyString);

function safeRegex(pattern: string): RegExp | undefined {
  try {
    return new RegExp(pattern);
  } catch {
    return undefined;
  }
}

/** Values that satisfy a JSON schema (as far as fast-check can), with real ids for the strings that name objects. */
export function fromSchema(s: JsonSchema, ids: string[], depth = 0): fc.Arbitrary<unknown> {
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.enum) return fc.constantFrom(...s.enum);
  const alts = s.anyOf ?? s.oneOf;
  if (alts?.length) return fc.oneof(...alts.map((a) => fromSchema(a, ids, depth + 1)));
  if (s.allOf?.length) return fromSchema(s.allOf[0]!, ids, depth + 1);
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  if (depth > 6) return fc.constant(null);
  switch (type) {
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      const record = fc.record(Object.fromEntries(props.map(([k, v]) => [k, fromSchema(v, ids, depth + 1)])), { requiredKeys: (s.required ?? []).filter((k) => props.some(([p]) => p === k)) });
      if (props.length > 0 || s.additionalProperties === false) return record;
      return fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 });
    }
    case 'array':
      return fc.array(fromSchema(s.items ?? {}, ids, depth + 1), { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 4, 4) });
    case 'string': {
      const re = s.pattern ? safeRegex(s.pattern) : undefined;
      const own = re ? fc.stringMatching(re).filter((v) => v.length <= (s.maxLength ?? 10_000) && v.length >= (s.minLength ?? 0)) : fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 30, 30) });
      return ids.length ? fc.oneof(own, fc.constantFrom(...ids)) : own;
    }
    case 'integer':
      return fc.integer({ min: Math.ceil(s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : -1000)), max: Math.floor(s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum - 1 : 100_000)) });
    case 'number': {
      const min = s.minimum ?? s.exclusiveMinimum ?? -1000;
      const max = s.maximum ?? s.exclusiveMaximum ?? 100_000;
      return fc.double({ min, max, noNaN: true, noDefaultInfinity: true, minExcluded: s.exclusiveMinimum !== undefined, maxExcluded: s.exclusiveMaximum !== undefined });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

/** A valid value made hostile at one place: a leaf replaced, a required field dropped, a prototype key added. */
function mutate(value: unknown): fc.Arbitrary<unknown> {
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, at: (string | number)[]) => {
    paths.push(at);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...at, i]));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, [...at, k]);
  };
  walk(value, []);
  return fc.tuple(fc.constantFrom(...paths), fc.constantFrom('replace', 'drop', 'proto', 'deep'), wrongType, fc.constantFrom(...PROTO_KEYS)).map(([path, how, bad, key]) => {
    const copy = structuredClone(value) as unknown;
    if (path.length === 0) return how === 'deep' ? deepNest(copy, 2000) : bad;
    let parent = copy as Record<string | number, unknown>;
    for (const p of path.slice(0, -1)) parent = parent[p] as Record<string | number, unknown>;
    const last = path[path.length - 1]!;
    if (how === 'drop') delete parent[last];
    else if (how === 'proto') Object.defineProperty(parent, key, { value: bad, enumerable: true, configurable: true, writable: true });
    else if (how === 'deep') parent[last] = deepNest(parent[last], 200);
    else parent[last] = bad;
    return copy;
  });
}

function deepNest(v: unknown, n: number): unknown {
  let out = v;
  for (let i = 0; i < n; i++) out = { a: out };
  return out;
}

/** A path segment as a client might send it: encoded, or raw bytes no decoder accepts. */
const segment = (ids: string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 4, arbitrary: ids.length ? fc.constantFrom(...ids).map(encodeURIComponent) : fc.constant('x') },
    { weight: 4, arbitrary: nastyString.map(encodeSegment) },
    { weight: 1, arbitrary: fc.constantFrom('%00', '%ff', '%e0%80', '%ed%a0%80', '%', '%zz', '%2F', '..', '.', 'a%00b', '%c0%af') },
  );

function encodeSegment(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    // A lone surrogate has no UTF-8 form; send what a broken client would: its CESU-8 bytes.
    return [...s].map((ch) => (/[\ud800-\udfff]/.test(ch) ? '%ed%a0%80' : encodeURIComponent(ch))).join('');
  }
}

const queryValue = (schema: JsonSchema, ids: string[]): fc.Arbitrary<string> =>
  fc.oneof(
    fromSchema(schema, ids).map((v) => (typeof v === 'string' ? v : JSON.stringify(v) ?? '')),
    nastyString,
    fc.constantFrom(...(ids.length ? ids : ['x'])),
  );

function encodeQuery(pairs: [string, string][]): string {
  if (pairs.length === 0) return '';
  return '?' + pairs.map(([k, v]) => `${encodeSegment(k)}=${encodeSegment(v)}`).join('&');
}

type Body = { payload?: string | Buffer; type?: string };

/**
 * Safetensors files (as an update upload), written by hand so that they can be wrong anywhere: tensor names
 * of the model and hostile ones (prototype keys, NUL), shapes right or not, other dtypes, offsets that do not
 * add up, non-finite values, result metadata that is right, missing or odd.
 */
function safetensors(ids: string[]): fc.Arbitrary<Buffer> {
  const name = fc.oneof(fc.constantFrom('weight', 'bias', 'weight', 'bias', ...PROTO_KEYS, '__metadata__', ''), nastyString.map((x) => x.slice(0, 100)));
  const shape = fc.oneof(fc.constantFrom([1, 13], [1], [13], [1, 12], [], [0], [2 ** 31, 2 ** 31]), fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 3 }));
  const tensor = fc.record({ name, shape, dtype: fc.constantFrom('F32', 'F32', 'F32', 'F16', 'I64', 'BOOL', 'X'), skew: fc.constantFrom(0, 0, 0, 4, -4), fill: fc.constantFrom(0, 0.01, Number.NaN, Number.POSITIVE_INFINITY, 1e30) });
  const meta = fc.oneof(
    fc.record({ taskId: ids.length ? fc.constantFrom(...ids) : fc.string(), numExamples: fc.oneof(fc.integer({ min: 0, max: 1000 }), wrongType) }).map((m) => ({ [RESULT_META_KEY]: JSON.stringify(m) })),
    fc.constant({}),
    fc.dictionary(nastyString.map((x) => x.slice(0, 30)), nastyString.map((x) => x.slice(0, 100)), { maxKeys: 3 }),
  );
  return fc.tuple(fc.array(tensor, { minLength: 1, maxLength: 4 }), meta).map(([tensors, metadata]) => {
    const header: Record<string, unknown> = Object.create(null);
    header['__metadata__'] = metadata;
    const chunks: Buffer[] = [];
    let offset = 0;
    for (const t of tensors) {
      const n = (t.shape as number[]).reduce((a: number, b: number) => a * b, 1);
      const count = Number.isSafeInteger(n) && n < 4096 ? n : 1;
      const data = Buffer.from(new Float32Array(count).fill(t.fill).buffer);
      chunks.push(data);
      header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + data.length + t.skew] };
      offset += data.length;
    }
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, ...chunks]);
  });
}

function bodyFor(route: FuzzRoute, ids: string[]): fc.Arbitrary<Body> {
  const bytes = fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b));
  const json = (v: unknown) => ({ payload: JSON.stringify(v) ?? 'null', type: 'application/json' });
  const garbage = fc.oneof(
    fc.constantFrom('{', '{"a":', '[1,2', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}', '"\\ud800"', '{"a":"\\u0000"}', '', 'null', '1e99999', '\ufeff{}').map((p) => ({ payload: p, type: 'application/json' })),
    bytes.map((b) => ({ payload: b, type: 'application/json' })),
    bytes.map((b) => ({ payload: b, type: 'application/octet-stream' })),
    fc.tuple(fc.constantFrom('text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'application/xml', '', 'garbage'), bytes).map(([type, b]) => ({ payload: b, type })),
  );
  if (route.method === 'GET') return fc.oneof({ weight: 9, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: garbage });
  if (route.url.endsWith('/result')) return fc.oneof({ weight: 4, arbitrary: safetensors(ids).map((b) => ({ payload: b, type: 'application/octet-stream' })) }, { weight: 1, arbitrary: garbage });
  const schema = route.body;
  const valid = schema ? fromSchema(schema, ids) : fc.jsonValue({ maxDepth: 3 });
  return fc.oneof(
    { weight: 3, arbitrary: valid.map(json) },
    { weight: 3, arbitrary: valid.chain(mutate).map(json) },
    { weight: 1, arbitrary: fc.jsonValue().map(json) },
    { weight: 2, arbitrary: garbage },
    { weight: 1, arbitrary: fc.constant({}) },
  );
}

type Signing = { kind: 'pool' | 'sacrificial' | 'unsigned' | 'other-key' | 'stale' | 'garbage' | 'other-body' | 'no-digest'; who: number };

const signing: fc.Arbitrary<Signing> = fc.record({
  kind: fc.oneof(
    { weight: 10, arbitrary: fc.constant('pool' as const) },
    { weight: 2, arbitrary: fc.constant('sacrificial' as const) },
    { weight: 3, arbitrary: fc.constant('unsigned' as const) },
    { weight: 1, arbitrary: fc.constantFrom('other-key' as const, 'stale' as const, 'garbage' as const, 'other-body' as const, 'no-digest' as const) },
  ),
  who: fc.nat(),
});

const STRANGER = generateSigningKeys().privateKeyPem;

function sign(s: Signing, pools: FuzzPools, method: string, url: string, payload: string | Buffer | undefined): { headers: Record<string, string>; auth: string } {
  if (s.kind === 'unsigned') return { headers: {}, auth: 'unsigned' };
  const pool = s.kind === 'sacrificial' ? pools.sacrificial : pools.signers;
  const id = pool[s.who % pool.length]!;
  const base = { method, path: url, body: payload, keyId: id.keyId, privateKey: id.privateKey };
  switch (s.kind) {
    case 'other-key':
      return { headers: { ...signRequest({ ...base, privateKey: STRANGER }) }, auth: `${id.keyId} (other key)` };
    case 'stale':
      return { headers: { ...signRequest({ ...base, now: Date.now() - 3_600_000 }) }, auth: `${id.keyId} (stale)` };
    case 'garbage':
      return { headers: { 'x-setu-key-id': id.keyId, 'x-setu-timestamp': 'soon', 'x-setu-nonce': '\u00e9', 'x-setu-signature': 'A'.repeat(86), 'x-setu-content-sha256': 'zz' }, auth: `${id.keyId} (garbage headers)` };
    case 'other-body':
      return { headers: { ...signRequest({ ...base, body: 'something else' }) }, auth: `${id.keyId} (signed another body)` };
    case 'no-digest': {
      const h: Record<string, string> = { ...signRequest(base) };
      delete h['x-setu-content-sha256'];
      return { headers: h, auth: `${id.keyId} (no digest header)` };
    }
    default:
      return { headers: { ...signRequest(base) }, auth: id.keyId };
  }
}

/** Requests for the given routes; ids of real objects go in path parameters, queries and bodies. */
export function fuzzRequests(routes: FuzzRoute[], pools: FuzzPools): fc.Arbitrary<FuzzRequest> {
  return fc.constantFrom(...routes).chain((route) => {
    const names = [...route.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
    // Routes that revoke or re-key their target or caller get the sacrificial identities only.
    const destructive = /\/revoke$|\/keys\/rotate$/.test(route.url);
    const ids = destructive ? pools.sacrificial.map((i) => i.keyId) : pools.ids;
    const known = (route.query ?? []).map((q) => fc.option(fc.tuple(fc.constant(q.name), queryValue(q.schema, ids)), { nil: undefined }));
    const extra = fc.option(fc.tuple(nastyString.map((s) => s.slice(0, 50)), nastyString), { nil: undefined, freq: 4 });
    return fc
      .record({
        params: fc.tuple(...names.map(() => segment(ids))),
        known: fc.tuple(...known),
        extra,
        body: bodyFor(route, ids),
        sig: destructive ? signing.map((s) => (s.kind === 'pool' ? { ...s, kind: 'sacrificial' as const } : s)) : signing,
      })
      .map(({ params, known, extra, body, sig }) => {
        let i = 0;
        const path = route.url.replace(/:([A-Za-z0-9_]+)/g, () => params[i++]!);
        const pairs = [...known.filter((p): p is [string, string] => p !== undefined), ...(extra ? [extra] : [])];
        const url = path + encodeQuery(pairs);
        const { headers, auth } = sign(sig, pools, route.method, url, body.payload);
        if (body.type) headers['content-type'] = body.type;
        return { method: route.method, url, headers, ...(body.payload !== undefined ? { payload: body.payload } : {}), route, auth };
      });
  });
}
