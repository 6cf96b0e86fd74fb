/**
 * FHIR resources → facts, through the mapping's ViewDefinitions. Each view names a fact kind (its
 * `name`) and yields rows whose columns are the fact's fields: `patient` (required), and any of
 * `system`, `code`, `value`, `valueSystem`, `unit`, `date`. Profiles are explicit: a resource that
 * claims none of the profiles the mapping accepts for its type is left out (`unknown-profile`).
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Fact, Issues } from '../facts.js';
import { sourceBlock, type Mapping } from '../mapping.js';
import { compileView, runView, ViewDefinitionSchema, type ViewDefinition } from './view.js';

export const FhirMappingSchema = Type.Object(
  {
    /** FHIR version of the sources this mapping reads. */
    fhirVersion: Type.Literal('4.0.1'),
    /** Accepted profiles per resource type (meta.profile, with or without |version). Types not listed are not checked. */
    profiles: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Z][A-Za-z]+$' }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }))),
    /** SQL-on-FHIR v2 ViewDefinitions; each view's name is the kind of the facts it yields. */
    views: Type.Array(ViewDefinitionSchema, { minItems: 1 }),
  },
  { additionalProperties: false },
);
export type FhirMapping = Static<typeof FhirMappingSchema>;

const FACT_FIELDS = ['patient', 'system', 'code', 'value', 'valueSystem', 'unit', 'date'] as const;

export function fhirBlock(m: Mapping): FhirMapping {
  const b = sourceBlock(m, 'fhir', FhirMappingSchema);
  for (const v of b.views) compileView(v);
  return b;
}

/** The resource types the views read (what a server search or a Bulk export asks for). */
export function resourceTypes(b: FhirMapping): string[] {
  return [...new Set(b.views.map((v) => v.resource))];
}

type Resource = { resourceType: string; id?: string; meta?: { profile?: string[] }; [k: string]: unknown };

export class FhirFacts {
  readonly facts: Fact[] = [];
  records = 0;
  private readonly byType = new Map<string, ViewDefinition[]>();
  constructor(
    private readonly block: FhirMapping,
    private readonly issues: Issues,
  ) {
    for (const v of block.views) this.byType.set(v.resource, [...(this.byType.get(v.resource) ?? []), v]);
  }

  /** Adds one resource's facts; `where` is its place in the source (file:line) for the log. */
  add(res: unknown, where: string): void {
    this.records++;
    if (typeof res !== 'object' || res === null || typeof (res as Resource).resourceType !== 'string') {
      this.issues.add('malformed-record', where, 'resourceType', 'not a FHIR resource (no resourceType)');
      return;
    }
    const r = res as Resource;
    const ref = `${r.resourceType}/${r.id ?? '?'} (${where})`;
    const views = this.byType.get(r.resourceType);
    if (!views) return; // a type the mapping does not read
    const accepted = this.block.profiles?.[r.resourceType];
    if (accepted) {
      const claimed = (r.meta?.profile ?? []).map((p) => p.split('|')[0]!);
      if (!claimed.some((p) => accepted.includes(p))) {
        this.issues.add('unknown-profile', ref, 'meta.profile', `claims ${claimed.length ? claimed.join(', ') : 'no profile'}; the mapping accepts ${accepted.join(', ')}`);
        return;
      }
    }
    for (const v of views) {
      let rows;
      try {
        rows = runView(v, r);
      } catch (e) {
        this.issues.add('invalid-value', ref, `view ${v.name}`, (e as Error).message);
        continue;
      }
      for (const row of rows) {
        const f: Fact = { patient: '', kind: v.name, ref };
        for (const k of FACT_FIELDS) {
          const x = row[k];
          if (x === null || x === undefined) continue;
          if (typeof x === 'object') {
            this.issues.add('invalid-value', ref, `view ${v.name}.${k}`, `yields a ${Array.isArray(x) ? 'collection' : 'complex value'}, not a primitive`);
            continue;
          }
          (f as unknown as Record<string, string>)[k] = String(x);
        }
        if (!f.patient) {
          this.issues.add('invalid-value', ref, `view ${v.name}.patient`, 'names no patient');
          continue;
        }
        this.facts.push(f);
      }
    }
  }
}
