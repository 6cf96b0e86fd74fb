/** `setu model card <study-id> [--json]`: the model card of a completed study (Markdown, or JSON with --json). */
import { UsageError, operatorClient, operatorFlags, parse } from './args.js';

const out = (s: string) => process.stdout.write(s + '\n');
const enc = encodeURIComponent;

export async function modelCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub !== 'card') throw new UsageError(`unknown: setu model ${sub ?? ''} (card)`);
  const { values: v, positionals } = parse(argv, { ...operatorFlags, markdown: { type: 'boolean' } }, true);
  if (!positionals[0]) throw new UsageError('setu model card <study-id> [--json]');
  const api = operatorClient(v);
  if (v.json) out(JSON.stringify(await api.json('GET', `/v1/studies/${enc(positionals[0])}/model-card`)));
  else {
    const r = await api.request('GET', `/v1/studies/${enc(positionals[0])}/model-card?format=markdown`);
    out(new TextDecoder().decode(r.body));
  }
  return 0;
}
