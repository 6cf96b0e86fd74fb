/**
 * What crosses the wire in each SecAgg+ stage. Keys, ciphertexts and shares are strings (base64 / hex) so the
 * messages are plain JSON; the masked vector is a Uint32Array (send it as binary, e.g. a safetensors u32 tensor
 * or base64). Client ids are 0..n−1, assigned by the server for the round; Shamir x-coordinates are id + 1.
 */

/** Stage 0, server → every client: the round's parameters (the same for all clients, plus the client's id). */
export interface SecAggConfig {
  /** Unique per round; bound into every key derivation and associated data, so nothing is reused across rounds. */
  roundId: string;
  numClients: number;
  /** Shamir threshold t: shares needed to reconstruct; must satisfy k/2 < t ≤ k. */
  threshold: number;
  /** Neighbour degree k (even, or n − 1 for the complete graph). */
  degree: number;
  /** Public seed of the neighbour graph, base64 of 32 bytes. */
  graphSeed: string;
  /** Values are clamped to [−clipRange, clipRange] before quantisation. */
  clipRange: number;
  /** Bits per quantised value (Q). */
  quantBits: number;
  /** Arithmetic modulo 2^modBits (≤ 32). Needs quantBits + ⌈log2 n⌉ ≤ modBits. */
  modBits: number;
  /** Number of update scalars. */
  vectorLength: number;
  /**
   * Weighted mean: each client multiplies its update by w = min(1, examples / weightScale) and appends w as an
   * extra element, so the server divides the two sums. 0 = plain (unweighted) sum and mean.
   */
  weightScale: number;
}

export interface SetupMsg { stage: 'setup'; clientId: number; config: SecAggConfig }

/** Stage 1, client → server: two fresh X25519 public keys (raw 32 bytes, base64). c encrypts shares, s seeds pairwise masks. */
export interface KeysMsg { stage: 'keys'; clientId: number; cPk: string; sPk: string }

/** Stage 2, server → client: the public keys of its neighbours that sent theirs. */
export interface NeighbourKeysMsg { stage: 'neighbour-keys'; neighbours: { clientId: number; cPk: string; sPk: string }[] }

/** Stage 3, client → server: its shares of b and of s_sk, one AES-256-GCM ciphertext per neighbour (base64). */
export interface SharesMsg { stage: 'shares'; clientId: number; shares: { to: number; ct: string }[] }

/** Stage 4, server → client: the ciphertexts addressed to it, and who completed stage 3 (U2). */
export interface MaskRequestMsg { stage: 'mask-request'; active: number[]; shares: { from: number; ct: string }[] }

/** Stage 4, client → server: the masked, quantised update (vectorLength, + 1 when weighted). */
export interface MaskedInputMsg { stage: 'masked-input'; clientId: number; masked: Uint32Array }

/** Stage 5, server → client: who sent a masked input (survivors, U3) and who did not after sharing (dropped). */
export interface UnmaskRequestMsg { stage: 'unmask-request'; survivors: number[]; dropped: number[] }

/** Stage 5, client → server: shares of b for survivors and of s_sk for dropped clients (hex field elements). */
export interface UnmaskResponseMsg {
  stage: 'unmask-response';
  clientId: number;
  bShares: { owner: number; y: string }[];
  sShares: { owner: number; y: string }[];
}

/** Checks a config's internal consistency; throws with the first problem. */
export function validateConfig(c: SecAggConfig): void {
  const intIn = (v: number, lo: number, hi: number, what: string) => {
    if (!(Number.isInteger(v) && v >= lo && v <= hi)) throw new Error(`${what} must be an integer in [${lo}, ${hi}], got ${v}`);
  };
  if (typeof c.roundId !== 'string' || c.roundId.length === 0) throw new Error('roundId must be a non-empty string');
  intIn(c.numClients, 2, 1 << 20, 'numClients');
  intIn(c.degree, 2, c.numClients - 1, 'degree');
  if (c.degree < c.numClients - 1 && c.degree % 2 !== 0) throw new Error(`degree ${c.degree} must be even (or n − 1)`);
  intIn(c.threshold, 1, c.degree, 'threshold');
  // 2t > k: a server that tells two disjoint groups of a client's neighbours different stories
  // (survived / dropped) cannot collect t shares of both its b and its s key.
  if (2 * c.threshold <= c.degree) throw new Error(`threshold ${c.threshold} must exceed half the degree ${c.degree}`);
  if (Buffer.from(c.graphSeed ?? '', 'base64').length !== 32) throw new Error('graphSeed must be 32 bytes, base64');
  if (!(c.clipRange > 0 && Number.isFinite(c.clipRange))) throw new Error('clipRange must be finite and > 0');
  intIn(c.modBits, 8, 32, 'modBits');
  intIn(c.quantBits, 1, 31, 'quantBits');
  if (c.quantBits + Math.ceil(Math.log2(c.numClients)) > c.modBits) {
    throw new Error(`quantBits ${c.quantBits} + ⌈log2 n⌉ exceeds modBits ${c.modBits}: the sum would wrap`);
  }
  intIn(c.vectorLength, 1, 1 << 28, 'vectorLength');
  if (!(c.weightScale >= 0 && Number.isFinite(c.weightScale))) throw new Error('weightScale must be finite and ≥ 0');
}

/** Associated data of the share ciphertext from → to: binds it to round, stage and both parties. */
export function shareAad(roundId: string, from: number, to: number): string {
  return `setu-secagg+/v1|${roundId}|shares|${from}->${to}`;
}
