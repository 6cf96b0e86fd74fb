/**
 * The agent's side of SecAgg+ over HTTP (the coordinator's is coordinator/secagg.ts): it walks one trained
 * update through the stages with its own outgoing requests, long-polling between them. The update waits in
 * the pending queue as a safetensors body holding Δ = local − global as one flat vector (never uploaded as is),
 * with the result's metadata, so an agent restarted mid-protocol, or a coordinator that restarted the round,
 * re-masks the same update: a new session, fresh keys and masks, and no new privacy spend.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiError, type HttpClient } from './http.js';
import { CHUNKED_UPLOAD_BYTES, uploadFile } from './upload.js';
import type { PendingResult } from './state.js';
import type { ResultMeta } from '../protocol/api.js';
import { RESULT_META_KEY } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { flatten } from '../privacy/flat.js';
import { SecAggClient } from '../privacy/secagg/client.js';
import { decodeMaskRequest, decodeNeighbourKeys, decodeSetup, decodeUnmaskRequest, encodeMaskedInput } from '../privacy/secagg/wire.js';

export const SECAGG_MARK = 'setu.secagg';

/** The pending body of a SecAgg+ fit result: Δ flat in sorted-name order, and the metadata. */
export function secaggBody(local: Weights, global: Weights, meta: ResultMeta): Uint8Array {
  const delta = flatten(local, global);
  return encodeSafetensors({ delta: { shape: [delta.length], data: delta } }, { [RESULT_META_KEY]: JSON.stringify(meta), [SECAGG_MARK]: '1' });
}

/** How the upload ended: `sent` (the site answered every stage it was asked), `gone` (the round went on without it). */
export type SecAggOutcome = 'sent' | 'gone';

const GONE = new Set(['secagg_round_closed', 'secagg_late', 'secagg_dropped', 'secagg_aborted', 'conflict', 'forbidden', 'secagg_stage', 'secagg_refused']);

/** Writes `bytes` to a file of its own for `f`, removed afterwards. */
async function withTempFile<T>(bytes: Uint8Array, f: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'setu-masked-'));
  try {
    const file = join(dir, 'masked.bin');
    await writeFile(file, bytes);
    return await f(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface SecAggUploadOptions {
  waitMs?: number;
  noSessionRetries?: number;
  onStage?: (stage: string) => void;
  /** Masked inputs larger than this go in chunks (default CHUNKED_UPLOAD_BYTES, as updates); tests set it low. */
  inlineMaskedBytes?: number;
}

export async function uploadSecAgg(http: HttpClient, p: PendingResult, log: (m: string) => void, opts: SecAggUploadOptions = {}): Promise<SecAggOutcome> {
  const d = decodeSafetensors(p.body);
  const meta = JSON.parse(d.metadata[RESULT_META_KEY]!) as ResultMeta;
  const update = d.weights['delta']!.data;
  const base = `/v1/agent/secagg/${encodeURIComponent(p.taskId)}`;
  const waitMs = opts.waitMs ?? 10_000;
  let noSession = 0;
  for (;;) {
    try {
      const s = await http.json<{ session: string; setup: unknown }>('GET', `${base}/setup`);
      const session = s.session;
      const client = new SecAggClient(decodeSetup(s.setup));
      const poll = async (stage: string): Promise<unknown> => {
        for (;;) {
          const r = await http.request('GET', `${base}/${stage}?session=${encodeURIComponent(session)}&waitMs=${waitMs}`, undefined, waitMs + 30_000);
          if (r.status !== 204) return r.json<unknown>();
        }
      };
      const post = (stage: string, msg: unknown, extra: Record<string, unknown> = {}) => http.json('POST', `${base}/${stage}`, { session, msg, ...extra });
      await post('keys', client.keys());
      opts.onStage?.('keys');
      await post('shares', client.shares(decodeNeighbourKeys(await poll('neighbour-keys'))));
      opts.onStage?.('shares');
      const masked = client.maskedInput(decodeMaskRequest(await poll('mask-request')), update, meta.numExamples);
      const words = masked.masked;
      if (words.byteLength > (opts.inlineMaskedBytes ?? CHUNKED_UPLOAD_BYTES)) {
        // A large masked input goes chunked and resumable, like a large update (upload.ts), and the masked stage names the upload.
        await withTempFile(new Uint8Array(words.buffer, words.byteOffset, words.byteLength), (file) =>
          uploadFile(http, p.taskId, file, { log }, (upload) => post('masked', { stage: 'masked-input', clientId: masked.clientId, upload }, { meta })));
        log(`task ${p.taskId}: SecAgg+ masked input sent in chunks (${words.byteLength} bytes; session ${session})`);
      } else {
        await post('masked', encodeMaskedInput(masked), { meta });
        log(`task ${p.taskId}: SecAgg+ masked input sent (session ${session})`);
      }
      opts.onStage?.('masked');
      await post('unmask', client.unmask(decodeUnmaskRequest(await poll('unmask-request'))));
      opts.onStage?.('unmask');
      return 'sent';
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (e.code === 'secagg_session') {
        log(`task ${p.taskId}: SecAgg+ session replaced; starting again`);
        continue;
      }
      if (e.code === 'secagg_no_session' && noSession++ < (opts.noSessionRetries ?? Infinity)) {
        // The round is open but has no session: a restarted coordinator opens a new one once its engine holds the
        // study again (its lease may take a while to expire); this update re-joins it. If the round closes first,
        // the answer becomes secagg_round_closed.
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (GONE.has(e.code) || e.code === 'secagg_no_session' || (e.status >= 400 && e.status < 500)) {
        log(`task ${p.taskId}: SecAgg+ round went on without this site: ${e.status} ${e.code}: ${e.message}`);
        return 'gone';
      }
      throw e;
    }
  }
}
