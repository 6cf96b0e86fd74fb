/**
 * SecAgg+ server: a transport-free state machine, one instance per round.
 *   setupMessages() → receiveKeys()* → neighbourKeys() → receiveShares()* → maskRequests()
 *   → receiveMasked()* → unmaskRequest() → receiveUnmask()* → finish()
 * The server never holds an individual update in the clear: masked inputs are added into one running masked
 * sum on arrival and not kept; share ciphertexts are opaque to it; in finish() it reconstructs only the self-mask
 * secrets of survivors and the mask keys of dropped clients, and removes masks from the sum alone.
 */
import { randomBytes } from 'node:crypto';
import { addVector, agree, applyMasks, MaskStream, privateKeyFromRaw, publicRawOf } from './crypto.js';
import { bigintToBytes } from './field.js';
import { neighbourGraph } from './graph.js';
import {
  validateConfig,
  type KeysMsg, type MaskedInputMsg, type MaskRequestMsg, type NeighbourKeysMsg, type SecAggConfig, type SetupMsg,
  type SharesMsg, type UnmaskRequestMsg, type UnmaskResponseMsg,
} from './messages.js';
import { dequantiseSum, dequantiseUnitSum } from './quantize.js';
import { pairSign, pairwiseSeed, selfMaskSeed } from './seeds.js';
import { reconstruct, type Share } from './shamir.js';

export interface SecAggResult {
  /** Σ over survivors of their (weight-multiplied) updates. */
  sum: Float64Array;
  /** sum / Σ weights (weighted) or sum / survivors (unweighted), as float32. */
  mean: Float32Array;
  /** Σ of weights (weighted rounds) or the number of survivors. */
  weightSum: number;
  survivors: number[];
  dropped: number[];
}

/** A mask to take away from the masked sum: the seed of its AES-CTR stream and the sign it is removed with. */
export interface MaskSeed {
  seed: Buffer;
  sign: 1 | -1;
}

/** What unmasking a finished round needs: who is in the sum and the masks to remove from any block of it. */
export interface Unmasking {
  config: SecAggConfig;
  survivors: number[];
  dropped: number[];
  /** Masked inputs in the sum (the dequantisation subtracts count · clipRange). */
  count: number;
  /** Words of a masked input: vectorLength, plus the weight element of a weighted round. */
  words: number;
  /** acc holds words [fromWord, fromWord + acc.length) of the masked sum (mod 2^32): removes the masks from them in place. */
  unmask(acc: Int32Array, fromWord: number): void;
}

type Stage = 'keys' | 'shares' | 'masked' | 'unmask' | 'done' | 'aborted';

/** A config with defaults: the recommended degree/threshold for n and 32-bit arithmetic. */
export function makeConfig(p: Partial<SecAggConfig> & { numClients: number; vectorLength: number; degree: number; threshold: number }): SecAggConfig {
  const modBits = p.modBits ?? 32;
  const cfg: SecAggConfig = {
    roundId: p.roundId ?? randomBytes(16).toString('hex'),
    numClients: p.numClients,
    threshold: p.threshold,
    degree: p.degree,
    graphSeed: p.graphSeed ?? randomBytes(32).toString('base64'),
    clipRange: p.clipRange ?? 1,
    modBits,
    quantBits: p.quantBits ?? modBits - Math.ceil(Math.log2(p.numClients)),
    vectorLength: p.vectorLength,
    weightScale: p.weightScale ?? 0,
  };
  validateConfig(cfg);
  return cfg;
}

export class SecAggServer {
  readonly config: SecAggConfig;
  private stage: Stage = 'keys';
  private readonly graph: number[][];
  private readonly keys = new Map<number, { cPk: string; sPk: string }>();
  /** Share ciphertexts waiting for delivery: recipient → [(sender, ciphertext)]. Opaque to the server. */
  private readonly mailbox = new Map<number, { from: number; ct: string }[]>();
  private readonly sharers = new Set<number>();
  private readonly maskedFrom = new Set<number>();
  /** The only vector state: Σ of masked inputs, mod 2^32. */
  private maskedSum: Int32Array | null = null;
  /** Whether the masked inputs are kept outside the server (receiveMaskedStored). */
  private stored = false;
  private readonly responses = new Map<number, UnmaskResponseMsg>();
  private abortReason = '';

  constructor(config: SecAggConfig) {
    validateConfig(config);
    this.config = { ...config };
    this.graph = neighbourGraph(config.numClients, config.degree, Buffer.from(config.graphSeed, 'base64'));
  }

  private expect(stage: Stage, what: string): void {
    if (this.stage === 'aborted') throw new Error(`round aborted: ${this.abortReason}`);
    if (this.stage !== stage) throw new Error(`server: ${what} is not allowed at stage ${this.stage}`);
  }

  private abort(reason: string): never {
    this.stage = 'aborted';
    this.abortReason = reason;
    this.maskedSum = null;
    throw new Error(`SecAgg+ round aborted: ${reason}`);
  }

  neighboursOf(id: number): readonly number[] { return this.graph[id]!; }

  /** Stage 0. */
  setupMessages(): SetupMsg[] {
    return Array.from({ length: this.config.numClients }, (_, clientId) => ({ stage: 'setup', clientId, config: { ...this.config } }));
  }

  /** Stage 1. */
  receiveKeys(m: KeysMsg): void {
    this.expect('keys', 'receiving keys');
    this.checkId(m.clientId);
    if (this.keys.has(m.clientId)) throw new Error(`server: client ${m.clientId} already sent keys`);
    if (Buffer.from(m.cPk, 'base64').length !== 32 || Buffer.from(m.sPk, 'base64').length !== 32) throw new Error(`server: client ${m.clientId} sent malformed keys`);
    this.keys.set(m.clientId, { cPk: m.cPk, sPk: m.sPk });
  }

  /** Stage 2: closes stage 1 (U1 = clients that sent keys) and gives each its neighbours' keys. */
  neighbourKeys(): Map<number, NeighbourKeysMsg> {
    this.expect('keys', 'forwarding keys');
    if (this.keys.size < this.config.threshold + 1) this.abort(`only ${this.keys.size} clients sent keys`);
    const out = new Map<number, NeighbourKeysMsg>();
    for (const id of this.keys.keys()) {
      const neighbours = this.graph[id]!.filter((j) => this.keys.has(j)).map((j) => ({ clientId: j, ...this.keys.get(j)! }));
      out.set(id, { stage: 'neighbour-keys', neighbours });
    }
    this.stage = 'shares';
    return out;
  }

  /** Stage 3: stores a client's encrypted shares for delivery. The message is taken whole or refused whole. */
  receiveShares(m: SharesMsg): void {
    this.expect('shares', 'receiving shares');
    this.checkId(m.clientId);
    if (!this.keys.has(m.clientId)) throw new Error(`server: client ${m.clientId} sent no keys`);
    if (this.sharers.has(m.clientId)) throw new Error(`server: client ${m.clientId} already sent shares`);
    const want = new Set(this.graph[m.clientId]!.filter((j) => this.keys.has(j)));
    const tos = new Set(m.shares.map((s) => s.to));
    if (tos.size !== m.shares.length || tos.size !== want.size || [...tos].some((j) => !want.has(j))) {
      throw new Error(`server: client ${m.clientId} must send exactly one share to each of its neighbours`);
    }
    for (const s of m.shares) {
      const box = this.mailbox.get(s.to) ?? [];
      box.push({ from: m.clientId, ct: s.ct });
      this.mailbox.set(s.to, box);
    }
    this.sharers.add(m.clientId);
  }

  /** Stage 4 request: closes stage 3 (U2 = clients that shared) and hands each its ciphertexts. */
  maskRequests(): Map<number, MaskRequestMsg> {
    this.expect('shares', 'requesting masked inputs');
    if (this.sharers.size < this.config.threshold + 1) this.abort(`only ${this.sharers.size} clients shared their keys`);
    const active = [...this.sharers].sort((a, b) => a - b);
    const out = new Map<number, MaskRequestMsg>();
    for (const id of active) {
      const shares = (this.mailbox.get(id) ?? []).filter((s) => this.sharers.has(s.from));
      out.set(id, { stage: 'mask-request', active, shares });
    }
    this.mailbox.clear();
    this.stage = 'masked';
    return out;
  }

  /** Stage 4: adds a masked input into the masked sum and keeps nothing else of it. */
  receiveMasked(m: MaskedInputMsg): void {
    this.expect('masked', 'receiving masked inputs');
    this.checkId(m.clientId);
    if (!this.sharers.has(m.clientId)) throw new Error(`server: client ${m.clientId} was not active`);
    if (this.maskedFrom.has(m.clientId)) throw new Error(`server: client ${m.clientId} already sent its masked input`);
    const len = this.vectorWords();
    if (!(m.masked instanceof Uint32Array) || m.masked.length !== len) throw new Error(`server: masked input of client ${m.clientId} must be a Uint32Array of ${len} words`);
    if (this.stored) throw new Error('server: this round keeps its masked inputs outside the server');
    const v = new Int32Array(m.masked.buffer, m.masked.byteOffset, len);
    if (!this.maskedSum) this.maskedSum = new Int32Array(len);
    addVector(this.maskedSum, v);
    this.maskedFrom.add(m.clientId);
  }

  /**
   * Stage 4 with the masked input kept outside the server (the coordinator writes it to its blob store and sums
   * the blobs block by block after unmasking(), so no running sum of the whole vector is held here). The caller
   * has checked the input's length. A round takes its inputs one way or the other, not both.
   */
  receiveMaskedStored(clientId: number): void {
    this.expect('masked', 'receiving masked inputs');
    this.checkId(clientId);
    if (!this.sharers.has(clientId)) throw new Error(`server: client ${clientId} was not active`);
    if (this.maskedFrom.has(clientId)) throw new Error(`server: client ${clientId} already sent its masked input`);
    if (this.maskedSum) throw new Error('server: this round sums its masked inputs in memory');
    this.stored = true;
    this.maskedFrom.add(clientId);
  }

  /** Stage 5 request: closes stage 4 (U3 = clients whose masked input arrived). */
  unmaskRequest(): UnmaskRequestMsg {
    this.expect('masked', 'requesting unmasking');
    if (this.maskedFrom.size < this.config.threshold) this.abort(`only ${this.maskedFrom.size} masked inputs arrived, below the threshold ${this.config.threshold}`);
    this.stage = 'unmask';
    return { stage: 'unmask-request', survivors: this.survivors(), dropped: this.dropped() };
  }

  receiveUnmask(m: UnmaskResponseMsg): void {
    this.expect('unmask', 'receiving unmask shares');
    if (!this.maskedFrom.has(m.clientId)) throw new Error(`server: client ${m.clientId} is not a survivor`);
    if (this.responses.has(m.clientId)) throw new Error(`server: client ${m.clientId} already answered`);
    this.responses.set(m.clientId, m);
  }

  /**
   * Stage 5: reconstructs each survivor's b and each dropped client's s_sk from ≥ t shares held by its
   * neighbours, removes the masks from the masked sum, and dequantises. Aborts (with the client named)
   * when some secret has fewer than t shares. For a round whose masked inputs were stored outside the server
   * (receiveMaskedStored), use unmasking() instead.
   */
  finish(): SecAggResult {
    if (this.stored) throw new Error('server: the masked inputs were stored elsewhere; unmask them block by block (unmasking())');
    const u = this.unmasking();
    const cfg = this.config;
    const sumQ = this.maskedSum!;
    u.unmask(sumQ, 0);
    const sum = dequantiseSum(sumQ, u.count, cfg.clipRange, cfg.quantBits, cfg.modBits, 0, cfg.vectorLength);
    const weightSum = cfg.weightScale > 0 ? dequantiseUnitSum(sumQ[cfg.vectorLength]!, cfg.quantBits, cfg.modBits) : u.count;
    if (!(weightSum > 0)) this.abort('the weights of the survivors sum to zero');
    const mean = new Float32Array(cfg.vectorLength);
    for (let i = 0; i < mean.length; i++) mean[i] = sum[i]! / weightSum;
    this.maskedSum = null;
    return { sum, mean, weightSum, survivors: u.survivors, dropped: u.dropped };
  }

  /**
   * Stage 5 without the sum: reconstructs the secrets as finish() does and returns the masks to remove, to be
   * applied to any block of the masked sum (Unmasking.unmask). Closes the round (stage done); the masks are the
   * same words finish() removes, so a sum unmasked block by block is bit-identical to the one-block path.
   */
  unmasking(): Unmasking {
    this.expect('unmask', 'finishing');
    const cfg = this.config, t = cfg.threshold;
    const collect = (owner: number, kind: 'b' | 's'): Share[] => {
      const shares: Share[] = [];
      for (const j of this.graph[owner]!) {
        const r = this.responses.get(j);
        const e = r && (kind === 'b' ? r.bShares : r.sShares).find((x) => x.owner === owner);
        if (e) shares.push({ x: BigInt(j + 1), y: BigInt('0x' + e.y) });
      }
      if (shares.length < t) {
        this.abort(`client ${owner}: ${shares.length} shares of its ${kind === 'b' ? 'self-mask seed' : 'mask key'} arrived, threshold is ${t}`);
      }
      return shares;
    };
    const secret32 = (owner: number, kind: 'b' | 's'): Buffer => {
      const v = reconstruct(collect(owner, kind), t);
      if (v >= 1n << 256n) this.abort(`client ${owner}: reconstructed ${kind} is not a 256-bit secret (bad shares)`);
      return bigintToBytes(v, 32);
    };
    const seeds: MaskSeed[] = [];
    for (const u of this.survivors()) seeds.push({ seed: selfMaskSeed(secret32(u, 'b'), cfg.roundId), sign: -1 });
    for (const d of this.dropped()) {
      const sk = privateKeyFromRaw(secret32(d, 's'));
      if (!publicRawOf(sk).equals(Buffer.from(this.keys.get(d)!.sPk, 'base64'))) {
        this.abort(`client ${d}: the reconstructed mask key does not match its public key (bad shares)`);
      }
      for (const v of this.graph[d]!) {
        if (!this.maskedFrom.has(v)) continue;
        const seed = pairwiseSeed(agree(sk, Buffer.from(this.keys.get(v)!.sPk, 'base64')), cfg.roundId, v, d);
        // v added pairSign(v, d) · mask; take it away.
        seeds.push({ seed, sign: pairSign(v, d) === 1 ? -1 : 1 });
      }
    }
    const words = this.vectorWords();
    this.stage = 'done';
    return {
      config: { ...cfg },
      survivors: this.survivors(),
      dropped: this.dropped(),
      count: this.maskedFrom.size,
      words,
      unmask(acc: Int32Array, fromWord: number): void {
        if (!(Number.isInteger(fromWord) && fromWord >= 0 && fromWord + acc.length <= words)) throw new Error(`unmask: words [${fromWord}, ${fromWord + acc.length}) lie outside the vector of ${words}`);
        applyMasks(acc, seeds.map(({ seed, sign }) => ({ stream: new MaskStream(seed, fromWord), sign })));
      },
    };
  }

  survivors(): number[] { return [...this.maskedFrom].sort((a, b) => a - b); }
  dropped(): number[] { return [...this.sharers].filter((j) => !this.maskedFrom.has(j)).sort((a, b) => a - b); }

  private vectorWords(): number { return this.config.vectorLength + (this.config.weightScale > 0 ? 1 : 0); }

  private checkId(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.config.numClients)) throw new Error(`server: unknown client id ${id}`);
  }
}
