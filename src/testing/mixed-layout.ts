/**
 * The tensor layout the streamed-aggregation tests share (stream-aggregate.test.ts, stream-server-opt.test.ts):
 * every dtype Setu carries, an empty tensor, a scalar counter, a name that is an object prototype key, and tensors
 * the rules keep local or skip, so each streamed path is checked against the in-memory one on all of them at once.
 */
import type { DType } from '../protocol/tensors.js';

export const MIXED_LAYOUT: readonly { name: string; shape: number[]; dtype: DType }[] = [
  { name: 'conv.weight', shape: [7, 3, 5], dtype: 'F32' },
  { name: 'conv.bias', shape: [7], dtype: 'F32' },
  { name: '__proto__', shape: [33], dtype: 'F16' },
  { name: 'head.weight', shape: [2, 50], dtype: 'BF16' },
  { name: 'empty', shape: [0, 3], dtype: 'F32' },
  { name: 'bn.running_mean', shape: [7], dtype: 'F32' },
  { name: 'bn.num_batches_tracked', shape: [], dtype: 'I64' },
  { name: 'frozen.embed', shape: [11, 3], dtype: 'F32' },
];
export const MIXED_RULES = [{ match: 'bn.*', rule: 'local' as const }, { match: 'frozen.*', rule: 'skip' as const }];
/** The tensors MIXED_RULES leave to be aggregated. */
export const MIXED_AGGREGATED = MIXED_LAYOUT.map((t) => t.name).filter((k) => !k.startsWith('bn.') && !k.startsWith('frozen.'));
