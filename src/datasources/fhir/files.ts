/**
 * FHIR on disk: a Bulk Data export (NDJSON files, one resource per line, as `$export` writes them) or a
 * folder of document Bundles (ABDM's way of exchanging a visit). A malformed line is reported with its
 * file and line and skipped; a Bundle that is not a document is reported and skipped whole.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Issues } from '../facts.js';
import type { FhirFacts } from './facts.js';

function listFiles(dir: string, ext: RegExp): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new Error(`cannot read the folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return names.filter((n) => ext.test(n)).sort().map((n) => join(dir, n));
}

/** Every resource of NDJSON `text`; `file` names it in issues. */
export function readNdjson(text: string, file: string, out: FhirFacts, issues: Issues): void {
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let res: unknown;
    try {
      res = JSON.parse(line);
    } catch (e) {
      out.records++;
      issues.add('malformed-record', `${file}:${i + 1}`, 'line', `not JSON: ${(e as Error).message}`);
      return;
    }
    out.add(res, `${file}:${i + 1}`);
  });
}

export function readNdjsonDir(dir: string, out: FhirFacts, issues: Issues): void {
  const files = listFiles(dir, /\.ndjson$/);
  if (files.length === 0) throw new Error(`${dir} holds no .ndjson files (a Bulk Data export writes one per resource type)`);
  for (const f of files) readNdjson(readFileSync(f, 'utf8'), f, out, issues);
}

type Entry = { fullUrl?: string; resource?: { resourceType?: string; id?: string } };

/**
 * Document Bundles refer to their entries by fullUrl (often urn:uuid:…); references are rewritten to
 * Type/id so views can use getReferenceKey() whatever the sender chose.
 */
function localReferences(entries: Entry[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of entries) if (e.fullUrl && e.resource?.resourceType && e.resource.id) m.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
  return m;
}

function rewrite(node: unknown, refs: Map<string, string>): void {
  if (Array.isArray(node)) node.forEach((n) => rewrite(n, refs));
  else if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    if (typeof o.reference === 'string' && refs.has(o.reference)) o.reference = refs.get(o.reference);
    for (const v of Object.values(o)) rewrite(v, refs);
  }
}

export function readBundle(text: string, file: string, out: FhirFacts, issues: Issues): void {
  let b: { resourceType?: string; type?: string; entry?: Entry[] };
  try {
    b = JSON.parse(text) as typeof b;
  } catch (e) {
    out.records++;
    issues.add('malformed-record', file, 'Bundle', `not JSON: ${(e as Error).message}`);
    return;
  }
  if (b.resourceType !== 'Bundle' || b.type !== 'document') {
    out.records++;
    issues.add('not-a-document', file, b.resourceType === 'Bundle' ? 'Bundle.type' : 'resourceType', `is ${b.resourceType === 'Bundle' ? `a ${JSON.stringify(b.type ?? null)} Bundle` : JSON.stringify(b.resourceType ?? null)}, not a document Bundle`);
    return;
  }
  const entries = b.entry ?? [];
  if (entries[0]?.resource?.resourceType !== 'Composition') {
    out.records++;
    issues.add('not-a-document', file, 'Bundle.entry[0]', 'a document Bundle starts with its Composition');
    return;
  }
  const refs = localReferences(entries);
  entries.forEach((e, i) => {
    if (!e.resource) return;
    rewrite(e.resource, refs);
    out.add(e.resource, `${file}#entry[${i}]`);
  });
}

export function readBundleDir(dir: string, out: FhirFacts, issues: Issues): void {
  const files = listFiles(dir, /\.json$/);
  if (files.length === 0) throw new Error(`${dir} holds no .json Bundle files`);
  for (const f of files) readBundle(readFileSync(f, 'utf8'), f, out, issues);
}
