/**
 * `setu model card <study-id> [--json] [--out DIR]`: the model card of a completed study, as Markdown (default) or
 * JSON; with --out, both files are written to DIR as <study-id>.model-card.md and <study-id>.model-card.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError, operatorClient, operatorFlags, parse, studyId } from './args.js';

const out = (s: string) => process.stdout.write(s + '\n');
const enc = encodeURIComponent;

export async function modelCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub !== 'card') throw new UsageError(`unknown: setu model ${sub ?? ''} (card)`);
  const { values: v, positionals } = parse(argv, { ...operatorFlags, out: { type: 'string' } }, true);
  const ref = positionals[0];
  if (!ref) throw new UsageError('setu model card <study-id> [--json] [--out DIR]');
  const api = operatorClient(v);
  const id = await studyId(api, ref);
  const json = await api.json<unknown>('GET', `/v1/studies/${enc(id)}/model-card`);
  const md = new TextDecoder().decode((await api.request('GET', `/v1/studies/${enc(id)}/model-card?format=markdown`)).body);
  if (v.out) {
    const dir = resolve(v.out);
    mkdirSync(dir, { recursive: true });
    const base = join(dir, `${id.replace(/[^A-Za-z0-9._-]/g, '_')}.model-card`);
    writeFileSync(`${base}.md`, md);
    writeFileSync(`${base}.json`, JSON.stringify(json, null, 2) + '\n');
    process.stderr.write(`wrote ${base}.md and ${base}.json\n`);
  }
  out(v.json ? JSON.stringify(json) : md);
  return 0;
}
