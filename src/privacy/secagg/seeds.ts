/** Key and seed derivations shared by client and server: each binds the round id and both parties. */
import { derive } from './crypto.js';

const pair = (i: number, j: number) => `${Math.min(i, j)}-${Math.max(i, j)}`;

/** AES-256-GCM key for shares between i and j, from X25519(c_i, c_j). */
export function shareKey(cShared: Uint8Array, roundId: string, i: number, j: number): Buffer {
  return derive(cShared, roundId, `setu-secagg+/v1 share-key ${pair(i, j)}`);
}

/** 256-bit seed of the pairwise mask between i and j, from X25519(s_i, s_j). */
export function pairwiseSeed(sShared: Uint8Array, roundId: string, i: number, j: number): Buffer {
  return derive(sShared, roundId, `setu-secagg+/v1 pairwise-mask ${pair(i, j)}`);
}

/** 256-bit seed of a client's self mask, from its secret b. */
export function selfMaskSeed(b: Uint8Array, roundId: string): Buffer {
  return derive(b, roundId, 'setu-secagg+/v1 self-mask');
}

/** Client `self` adds the pairwise mask with `other` when self < other and subtracts it otherwise, so pairs cancel. */
export function pairSign(self: number, other: number): 1 | -1 {
  return self < other ? 1 : -1;
}
