/**
 * Taking a study's results home:
 *   setu study export <study> [--format csv|json] [--out F]    metrics per round and per site (coordinator/study-export.ts)
 *   setu model download <study> [--round R] --out F             the global model, safetensors, digest checked
 *   setu model signoff <study> [--site S]                       a sign-off the jurisdiction policies ask for
 *   setu model release <study> [--status]                       the release, once every sign-off is in
 */
import { closeSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { headerFrom, type SafetensorsHeader } from '../protocol/safetensors.js';
import { ApiError } from '../site/http.js';
import type { StudyExport } from '../coordinator/study-export.js';
import { UsageError, numFlag, operatorClient, operatorFlags, parse, studyId } from './args.js';
import { table } from './table.js';
import { OperatorError } from './failures.js';

const out = (s: string) => process.stdout.write(s + '\n');
const enc = encodeURIComponent;

export async function studyExportCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { ...operatorFlags, format: { type: 'string' }, out: { type: 'string' } }, true);
  const id = positionals[0];
  if (!id) throw new UsageError('setu study export <study-id> [--format csv|json] [--out FILE]');
  const format = v.format ?? (v.json ? 'json' : 'csv');
  if (format !== 'csv' && format !== 'json') throw new UsageError(`--format must be csv or json, got "${format}"`);
  const api = operatorClient(v);
  const r = await api.request('GET', `/v1/studies/${enc(await studyId(api, id))}/export?format=${format}`);
  const text = new TextDecoder().decode(r.body);
  if (v.out) {
    writeFileSync(v.out, text);
    const rows = format === 'json' ? (JSON.parse(text) as StudyExport).rows.length : text.trimEnd().split('\n').length - 1;
    process.stderr.write(`wrote ${rows} rows of study ${r.headers.get('x-setu-study') ?? id} to ${v.out}\n`);
  } else process.stdout.write(text);
  return 0;
}

interface ReleaseState {
  released: boolean;
  signoffs: { role: string; by: string; jurisdiction: string; site?: string }[];
  missing: { jurisdiction: string; site: string | null; message: string }[];
}

function describeRelease(id: string, r: ReleaseState): string {
  const lines = [`study ${id}: the model is ${r.released ? 'released' : 'not released'}`];
  if (r.signoffs.length) lines.push(table(['signed off by', 'role', 'for', 'jurisdiction'], r.signoffs.map((s) => [s.by, s.role, s.site ?? 'the consortium', s.jurisdiction || '–']), ['l', 'l', 'l', 'l']));
  else lines.push('no sign-off yet');
  if (!r.released) lines.push(r.missing.length ? `still needed:\n${r.missing.map((m) => `  [${m.jurisdiction}${m.site ? ` / ${m.site}` : ''}] ${m.message}`).join('\n')}` : `every sign-off is in: setu model release ${id}`);
  return lines.join('\n');
}

export async function modelResultsCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'download') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, round: { type: 'string' }, out: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id || !v.out) throw new UsageError('setu model download <study-id> [--round R] --out model.safetensors');
    const round = numFlag(v.round, 'round', true);
    if (round !== undefined && round < 0) throw new UsageError(`--round must be 0 or more, got ${round}`);
    const api = operatorClient(v);
    // Streamed to a file beside --out (a model may be GBs), resumed after a cut connection, verified by its sha256.
    const fetched = `${v.out}.download`;
    let got;
    try {
      got = await api.download(`/v1/studies/${enc(await studyId(api, id))}/model${round !== undefined ? `?round=${round}` : ''}`, fetched);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'digest_mismatch') throw new OperatorError(`the model arrived damaged (${e.message}); nothing was written`, { cause: e });
      throw e;
    }
    // Refuse to write what is not a model: the file must read as safetensors (its header, without loading the values).
    let header;
    try {
      header = await fileSafetensorsHeader(fetched);
    } catch (e) {
      rmSync(fetched, { force: true });
      throw new OperatorError(`the coordinator sent no readable model (${(e as Error).message}); nothing was written`, { cause: e });
    }
    renameSync(fetched, v.out);
    const bytes = statSync(v.out).size;
    const version = got.headers['x-setu-model-version'] ?? '?';
    const shapes = header.tensors.map((t) => `${t.name} [${t.shape.join(', ')}]`).join(', ');
    if (v.json) out(JSON.stringify({ file: v.out, study: id, modelVersion: version, sha256: got.digest, bytes, tensors: Object.fromEntries(header.tensors.map((t) => [t.name, t.shape])) }));
    else out(`wrote ${v.out}: model ${version} of study ${id} (${bytes} bytes, sha256 ${got.digest}); tensors ${shapes}`);
    return 0;
  }
  if (sub === 'signoff') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, site: { type: 'string' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu model signoff <study-id> [--site S]');
    const api = operatorClient(v);
    const r = await api.json<{ signoff: ReleaseState['signoffs'][number]; missing: ReleaseState['missing'] }>('POST', `/v1/studies/${enc(await studyId(api, id))}/signoff`, v.site ? { site: v.site } : {});
    if (v.json) out(JSON.stringify(r));
    else out(`signed off the model of study ${id} as ${r.signoff.role}${r.signoff.site ? ` for site ${r.signoff.site}` : ' for the consortium'}; ${r.missing.length ? `still needed: ${r.missing.map((m) => m.message).join('; ')}` : `every sign-off is in: setu model release ${id}`}`);
    return 0;
  }
  if (sub === 'release') {
    const { values: v, positionals } = parse(argv, { ...operatorFlags, status: { type: 'boolean' } }, true);
    const id = positionals[0];
    if (!id) throw new UsageError('setu model release <study-id> [--status]');
    const api = operatorClient(v);
    const sid = await studyId(api, id);
    if (v.status) {
      const r = await api.json<ReleaseState>('GET', `/v1/studies/${enc(sid)}/release`);
      out(v.json ? JSON.stringify(r) : describeRelease(id, r));
      return r.released ? 0 : 1;
    }
    const r = await api.json<{ released: boolean; model: string | null; digest: string | null }>('POST', `/v1/studies/${enc(sid)}/release`, {});
    out(v.json ? JSON.stringify(r) : `released model ${r.model} of study ${id} (sha256 ${r.digest}); the release and its sign-offs are in the audit log`);
    return 0;
  }
  throw new UsageError(`unknown: setu model ${sub ?? ''} (card, download, signoff, release)`);
}

/** The safetensors header of a file, reading only its first bytes. */
async function fileSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const fd = openSync(file, 'r');
  try {
    return await headerFrom(async (start, end) => {
      const buf = Buffer.alloc(Math.max(0, end - start));
      const n = readSync(fd, buf, 0, buf.length, start);
      return new Uint8Array(buf.buffer, buf.byteOffset, n);
    }, statSync(file).size);
  } finally {
    closeSync(fd);
  }
}
