/**
 * SQL-on-FHIR v2 ViewDefinitions, run with the `fhirpath` engine (the HL7 FHIRPath reference
 * implementation in JavaScript, R4 model): a view flattens resources of one type into rows of named
 * columns. Supported: `resource`, `constant` (as %name), `where`, nested `select` (cross product),
 * `forEach`, `forEachOrNull`, `unionAll`, `column.collection`, and the spec's `getResourceKey()` and
 * `getReferenceKey([type])`. A column that yields more than one value without `collection: true` is an
 * error on that resource, as the spec requires.
 */
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4/index.js';
import { Type, type Static } from '@sinclair/typebox';

const strict = { additionalProperties: false } as const;

export const ViewColumnSchema = Type.Object(
  { name: Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_]*$' }), path: Type.String({ minLength: 1 }), collection: Type.Optional(Type.Boolean()), description: Type.Optional(Type.String()), type: Type.Optional(Type.String()) },
  strict,
);
export interface ViewSelect {
  column?: Array<Static<typeof ViewColumnSchema>>;
  select?: ViewSelect[];
  forEach?: string;
  forEachOrNull?: string;
  unionAll?: ViewSelect[];
}
export const ViewSelectSchema = Type.Recursive((Self) =>
  Type.Object(
    {
      column: Type.Optional(Type.Array(ViewColumnSchema)),
      select: Type.Optional(Type.Array(Self)),
      forEach: Type.Optional(Type.String({ minLength: 1 })),
      forEachOrNull: Type.Optional(Type.String({ minLength: 1 })),
      unionAll: Type.Optional(Type.Array(Self)),
    },
    strict,
  ),
);
const Constant = Type.Object(
  { name: Type.String({ minLength: 1 }), valueString: Type.Optional(Type.String()), valueCode: Type.Optional(Type.String()), valueUri: Type.Optional(Type.String()), valueInteger: Type.Optional(Type.Integer()), valueBoolean: Type.Optional(Type.Boolean()), valueDecimal: Type.Optional(Type.Number()) },
  strict,
);
export const ViewDefinitionSchema = Type.Object(
  {
    resourceType: Type.Optional(Type.Literal('ViewDefinition')),
    name: Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_-]*$' }),
    resource: Type.String({ pattern: '^[A-Z][A-Za-z]+$' }),
    status: Type.Optional(Type.String()),
    description: Type.Optional(Type.String()),
    constant: Type.Optional(Type.Array(Constant)),
    select: Type.Array(ViewSelectSchema, { minItems: 1 }),
    where: Type.Optional(Type.Array(Type.Object({ path: Type.String({ minLength: 1 }), description: Type.Optional(Type.String()) }, strict))),
  },
  strict,
);
export type ViewDefinition = Static<typeof ViewDefinitionSchema>;

export type ViewRow = Record<string, unknown>;

type Resource = { resourceType: string; id?: string; [k: string]: unknown };

const userInvocationTable = {
  getResourceKey: { fn: (inputs: Resource[]) => inputs.map((r) => r.id).filter((x) => x !== undefined), arity: { 0: [] } },
  getReferenceKey: {
    fn: (inputs: Array<{ reference?: string }>, type?: { name?: string }) =>
      inputs.flatMap((ref) => {
        const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([^/]+?)(?:\/_history\/.*)?$/.exec(ref?.reference ?? '');
        if (!m) return [];
        if (type?.name && type.name !== m[1]) return [];
        return [m[2]!];
      }),
    arity: { 0: [], 1: ['TypeSpecifier'] },
  },
};

type Compiled = (resource: unknown, env?: Record<string, unknown>) => unknown[];
const cache = new Map<string, Compiled>();
function compiled(path: string): Compiled {
  let f = cache.get(path);
  if (!f) {
    f = fhirpath.compile(path, r4, { userInvocationTable: userInvocationTable as never }) as unknown as Compiled;
    cache.set(path, f);
  }
  return f;
}

export class ViewError extends Error {}

function constants(v: ViewDefinition): Record<string, unknown> {
  const env: Record<string, unknown> = {};
  for (const c of v.constant ?? []) {
    const key = Object.keys(c).find((k) => k.startsWith('value'));
    if (!key) throw new ViewError(`view ${v.name}: constant ${c.name} has no value`);
    env[c.name] = (c as Record<string, unknown>)[key];
  }
  return env;
}

/** Checks every FHIRPath expression of a view compiles, naming the view and the path at fault. */
export function compileView(v: ViewDefinition): void {
  const paths: string[] = [...(v.where ?? []).map((w) => w.path)];
  const walk = (s: ViewSelect) => {
    for (const c of s.column ?? []) paths.push(c.path);
    if (s.forEach) paths.push(s.forEach);
    if (s.forEachOrNull) paths.push(s.forEachOrNull);
    s.select?.forEach(walk);
    s.unionAll?.forEach(walk);
  };
  v.select.forEach(walk);
  for (const p of paths) {
    try {
      compiled(p);
    } catch (e) {
      throw new ViewError(`view ${v.name}: FHIRPath ${JSON.stringify(p)} does not parse: ${(e as Error).message.split('\n')[0]}`);
    }
  }
}

/** The rows a view makes of one resource (none when the type differs or a `where` is not true). */
export function runView(v: ViewDefinition, resource: Resource): ViewRow[] {
  if (resource.resourceType !== v.resource) return [];
  const env = constants(v);
  for (const w of v.where ?? []) {
    const r = compiled(w.path)(resource, env);
    if (!(r.length === 1 && r[0] === true)) return [];
  }
  return selectAll(v.select, resource, env, v.name);
}

function product(a: ViewRow[], b: ViewRow[]): ViewRow[] {
  const out: ViewRow[] = [];
  for (const x of a) for (const y of b) out.push({ ...x, ...y });
  return out;
}

function selectAll(selects: ViewSelect[], node: unknown, env: Record<string, unknown>, view: string): ViewRow[] {
  let rows: ViewRow[] = [{}];
  for (const s of selects) rows = product(rows, selectOne(s, node, env, view));
  return rows;
}

function selectOne(s: ViewSelect, node: unknown, env: Record<string, unknown>, view: string): ViewRow[] {
  const iter = s.forEach ?? s.forEachOrNull;
  const nodes = iter ? compiled(iter)(node, env) : [node];
  const out: ViewRow[] = [];
  for (const n of nodes) out.push(...selectBody(s, n, env, view));
  if (nodes.length === 0 && s.forEachOrNull) out.push(...nullRow(s));
  return out;
}

function selectBody(s: ViewSelect, node: unknown, env: Record<string, unknown>, view: string): ViewRow[] {
  const own: ViewRow = {};
  for (const c of s.column ?? []) {
    const r = compiled(c.path)(node, env);
    if (c.collection) own[c.name] = r;
    else if (r.length > 1) throw new ViewError(`view ${view}: column ${c.name} (${c.path}) has ${r.length} values; declare collection: true or narrow the path`);
    else own[c.name] = r.length ? r[0] : null;
  }
  let rows: ViewRow[] = [own];
  if (s.select) rows = product(rows, selectAll(s.select, node, env, view));
  if (s.unionAll) rows = product(rows, s.unionAll.flatMap((u) => selectOne(u, node, env, view)));
  return rows;
}

function nullRow(s: ViewSelect): ViewRow[] {
  const names: string[] = [];
  const walk = (x: ViewSelect) => {
    for (const c of x.column ?? []) names.push(c.name);
    x.select?.forEach(walk);
    x.unionAll?.[0] && walk(x.unionAll[0]);
  };
  walk(s);
  return [Object.fromEntries(names.map((n) => [n, null]))];
}
