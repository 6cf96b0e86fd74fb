/**
 * A study's per-tensor rules at the site, the same for every trainer. `local` tensors never leave the site: each
 * round starts from the site's own copy (FedBN-style personalised layers; the first round from the global model's
 * initial values), and the trained values are kept, committed with the result once the coordinator holds it.
 * `skip` tensors are frozen: every round starts from the global model's values and nothing the trainer does to them
 * is uploaded. Only the `aggregate` tensors are uploaded.
 */
import type { TaskMessage } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { cloneWeights, hasTensor, layoutMismatch, layoutOf, mapWeights, pickWeights, setTensor, type Weights } from '../protocol/tensors.js';
import type { PendingResult } from './state.js';

/** The site's own values of a study's `local` tensors (in its per-study state directory). */
export const LOCAL_TENSORS_FILE = 'local-tensors.safetensors';

type Rules = TaskMessage['tensorRules'];

/**
 * The weights a task trains from: the global model with its `local` tensors replaced by the site's saved copy
 * when it has one. A saved copy whose layout no longer fits the model (another study version) is an error, never
 * silently mixed in.
 */
export function startingWeights(global: Weights, rules: Rules, saved: Uint8Array | undefined): Weights {
  if (!rules?.local.length || !saved) return global;
  const own = decodeSafetensors(saved).weights;
  const want = layoutOf(pickWeights(global, rules.local));
  const bad = layoutMismatch(own, want);
  if (bad) throw new Error(`this site's saved local tensors (${LOCAL_TENSORS_FILE}) do not fit the study's model: ${bad}`);
  const out = cloneWeights(global);
  for (const k of rules.local) setTensor(out, k, own[k]!);
  return out;
}

/** The tensors the study aggregates: everything but `local` and `skip`. */
export function aggregatedNames(global: Weights, rules: Rules): string[] {
  if (!rules) return Object.keys(global);
  const out = new Set([...rules.local, ...rules.skip]);
  return Object.keys(global).filter((k) => !out.has(k));
}

/** Splits a trainer's output: what is uploaded, and the `local` tensors to keep once the result is acknowledged. */
export function releaseOf(trained: Weights, global: Weights, rules: Rules): { upload: Weights; commit: PendingResult['commit'] } {
  const upload = mapWeights(aggregatedNames(global, rules), (k) => {
    if (!hasTensor(trained, k)) throw new Error(`the trained model lacks tensor "${k}"`);
    return trained[k]!;
  });
  if (!rules?.local.length) return { upload, commit: [] };
  const local = pickWeights(trained, rules.local);
  return { upload, commit: [{ name: LOCAL_TENSORS_FILE, data: Buffer.from(encodeSafetensors(local)).toString('base64'), encoding: 'base64' }] };
}
