/**
 * SecAgg+ client: a transport-free state machine, one instance per client per round.
 * setup → keys() → shares(neighbour keys) → maskedInput(mask request, update) → unmask(unmask request).
 * Each method checks that it is called in order and refuses (throws, changing nothing) what breaks the protocol.
 */
import { randomBytes } from 'node:crypto';
import { agree, applyMasks, generateX25519, MaskStream, open, publicKeyFromRaw, seal, type X25519Pair } from './crypto.js';
import type { KeyObject } from 'node:crypto';
import { bigintToBytes, bytesToBigint } from './field.js';
import { neighbourGraph } from './graph.js';
import {
  shareAad, validateConfig,
  type KeysMsg, type MaskedInputMsg, type MaskRequestMsg, type NeighbourKeysMsg, type SecAggConfig, type SetupMsg,
  type SharesMsg, type UnmaskRequestMsg, type UnmaskResponseMsg,
} from './messages.js';
import { pairSign, pairwiseSeed, selfMaskSeed, shareKey } from './seeds.js';
import { split } from './shamir.js';
import { quantiseInto, quantiseUnit } from './quantize.js';

const FIELD_BYTES = 66; // 521 bits
const SHARE_PLAINTEXT = 8 + 2 * FIELD_BYTES;

type Stage = 'setup' | 'keys-sent' | 'shares-sent' | 'masked' | 'done';

export class SecAggClient {
  readonly id: number;
  readonly config: SecAggConfig;
  private stage: Stage = 'setup';
  private readonly c: X25519Pair;
  private s: X25519Pair | null;
  private b: Buffer | null;
  private readonly expected: Set<number>;
  /** Neighbours' imported mask public keys and the AES-GCM key shared with each (derived once, in stage 3). */
  private readonly neighbours = new Map<number, { sPk: KeyObject; shareKey: Buffer }>();
  /** Shares of neighbours' secrets held by this client: owner → (b share, s share). */
  private readonly held = new Map<number, { b: bigint; s: bigint }>();
  private active = new Set<number>();

  constructor(setup: SetupMsg) {
    validateConfig(setup.config);
    if (!(Number.isInteger(setup.clientId) && setup.clientId >= 0 && setup.clientId < setup.config.numClients)) {
      throw new Error(`client id ${setup.clientId} out of range`);
    }
    this.id = setup.clientId;
    this.config = { ...setup.config };
    // The graph seed is public: recompute our neighbourhood to check what the server forwards later.
    this.expected = new Set(neighbourGraph(this.config.numClients, this.config.degree, Buffer.from(this.config.graphSeed, 'base64'))[this.id]);
    this.c = generateX25519();
    this.s = generateX25519();
    this.b = randomBytes(32); // full 256-bit self-mask secret
  }

  private expect(stage: Stage, what: string): void {
    if (this.stage !== stage) throw new Error(`client ${this.id}: ${what} is not allowed at stage ${this.stage}`);
  }

  /** Stage 1. */
  keys(): KeysMsg {
    this.expect('setup', 'sending keys');
    this.stage = 'keys-sent';
    return { stage: 'keys', clientId: this.id, cPk: this.c.publicRaw.toString('base64'), sPk: this.s!.publicRaw.toString('base64') };
  }

  /** Stage 3: checks the forwarded neighbour keys, Shamir-shares b and s_sk among them, encrypts each pair. */
  shares(msg: NeighbourKeysMsg): SharesMsg {
    this.expect('keys-sent', 'sharing keys');
    const { threshold: t, roundId } = this.config;
    const seenKeys = new Set([this.c.publicRaw.toString('hex'), this.s!.publicRaw.toString('hex')]);
    const nb = new Map<number, { sPk: KeyObject; shareKey: Buffer }>();
    for (const n of msg.neighbours) {
      if (!this.expected.has(n.clientId)) throw new Error(`client ${this.id}: ${n.clientId} is not my neighbour in the graph`);
      if (nb.has(n.clientId)) throw new Error(`client ${this.id}: neighbour ${n.clientId} listed twice`);
      const cPk = Buffer.from(n.cPk, 'base64'), sPk = Buffer.from(n.sPk, 'base64');
      if (cPk.length !== 32 || sPk.length !== 32) throw new Error(`client ${this.id}: neighbour ${n.clientId} has malformed keys`);
      for (const k of [cPk.toString('hex'), sPk.toString('hex')]) {
        if (seenKeys.has(k)) throw new Error(`client ${this.id}: public key reused (neighbour ${n.clientId})`);
        seenKeys.add(k);
      }
      nb.set(n.clientId, {
        sPk: publicKeyFromRaw(sPk),
        shareKey: shareKey(agree(this.c.privateKey, publicKeyFromRaw(cPk)), roundId, this.id, n.clientId),
      });
    }
    if (nb.size < t) throw new Error(`client ${this.id}: only ${nb.size} neighbours, fewer than the threshold ${t}`);
    const ids = [...nb.keys()].sort((a, b) => a - b);
    const xs = ids.map((j) => BigInt(j + 1));
    const bShares = split(bytesToBigint(this.b!), t, xs);
    const sShares = split(bytesToBigint(this.s!.privateRaw), t, xs);
    const out: SharesMsg = { stage: 'shares', clientId: this.id, shares: [] };
    ids.forEach((j, k) => {
      const pt = Buffer.alloc(SHARE_PLAINTEXT);
      pt.writeUInt32BE(this.id, 0);
      pt.writeUInt32BE(j, 4);
      bigintToBytes(bShares[k]!.y, FIELD_BYTES).copy(pt, 8);
      bigintToBytes(sShares[k]!.y, FIELD_BYTES).copy(pt, 8 + FIELD_BYTES);
      out.shares.push({ to: j, ct: seal(nb.get(j)!.shareKey, pt, shareAad(roundId, this.id, j)).toString('base64') });
    });
    for (const [j, v] of nb) this.neighbours.set(j, v);
    this.stage = 'shares-sent';
    return out;
  }

  /**
   * Stage 4: decrypts the shares neighbours sent it, then quantises `update` (already clipped/noised by the
   * caller), adds the self mask and ± the pairwise masks with active neighbours. With weightScale > 0 the update
   * is multiplied by w = min(1, examples/weightScale) and w is appended. Afterwards b and s_sk are erased.
   */
  maskedInput(msg: MaskRequestMsg, update: ArrayLike<number>, examples = 0): MaskedInputMsg {
    this.expect('shares-sent', 'masking');
    const cfg = this.config;
    if (update.length !== cfg.vectorLength) throw new Error(`client ${this.id}: update has ${update.length} values, expected ${cfg.vectorLength}`);
    const active = new Set(msg.active);
    if (!active.has(this.id)) throw new Error(`client ${this.id}: the server does not list me as active`);
    const activeNb = [...this.neighbours.keys()].filter((j) => active.has(j)).sort((a, b) => a - b);
    if (activeNb.length < cfg.threshold) throw new Error(`client ${this.id}: only ${activeNb.length} active neighbours, below the threshold ${cfg.threshold}`);
    // Decrypt everything before changing any state, so a bad ciphertext leaves the client as it was.
    const got = new Map<number, { b: bigint; s: bigint }>();
    for (const { from, ct } of msg.shares) {
      const peer = this.neighbours.get(from);
      if (!peer) throw new Error(`client ${this.id}: share from ${from}, who is not my neighbour`);
      if (got.has(from)) throw new Error(`client ${this.id}: two shares from ${from}`);
      const pt = open(peer.shareKey, Buffer.from(ct, 'base64'), shareAad(cfg.roundId, from, this.id));
      if (pt.length !== SHARE_PLAINTEXT || pt.readUInt32BE(0) !== from || pt.readUInt32BE(4) !== this.id) {
        throw new Error(`client ${this.id}: share from ${from} is malformed or misaddressed`);
      }
      got.set(from, { b: bytesToBigint(pt.subarray(8, 8 + FIELD_BYTES)), s: bytesToBigint(pt.subarray(8 + FIELD_BYTES)) });
    }
    for (const j of activeNb) if (!got.has(j)) throw new Error(`client ${this.id}: no share from active neighbour ${j}`);

    const weighted = cfg.weightScale > 0;
    let w = 1;
    if (weighted) {
      if (!(examples > 0)) throw new Error(`client ${this.id}: a weighted round needs the example count`);
      w = Math.min(1, examples / cfg.weightScale);
    }
    const vec = new Int32Array(cfg.vectorLength + (weighted ? 1 : 0));
    quantiseInto(update, cfg.clipRange, cfg.quantBits, vec, 0, w);
    if (weighted) vec[cfg.vectorLength] = quantiseUnit(w, cfg.quantBits);

    const streams: { stream: MaskStream; sign: 1 | -1 }[] = [{ stream: new MaskStream(selfMaskSeed(this.b!, cfg.roundId)), sign: 1 }];
    for (const j of activeNb) {
      const seed = pairwiseSeed(agree(this.s!.privateKey, this.neighbours.get(j)!.sPk), cfg.roundId, this.id, j);
      streams.push({ stream: new MaskStream(seed), sign: pairSign(this.id, j) });
    }
    applyMasks(vec, streams);

    for (const [j, v] of got) this.held.set(j, v);
    this.active = active;
    // Forward secrecy of this round's secrets: the server recovers them from shares if it needs them.
    this.b!.fill(0);
    this.b = null;
    this.s = null;
    this.stage = 'masked';
    return { stage: 'masked-input', clientId: this.id, masked: new Uint32Array(vec.buffer) };
  }

  /**
   * Stage 5: reveals shares of b for surviving neighbours and of s_sk for dropped ones. Answers once per
   * round, and refuses a request naming a client both ways, naming itself as dropped, naming clients that were
   * not active, or with fewer survivors than the threshold.
   */
  unmask(msg: UnmaskRequestMsg): UnmaskResponseMsg {
    this.expect('masked', 'unmasking');
    const surv = new Set(msg.survivors), drop = new Set(msg.dropped);
    if (surv.size !== msg.survivors.length || drop.size !== msg.dropped.length) throw new Error(`client ${this.id}: duplicate ids in unmask request`);
    for (const d of drop) if (surv.has(d)) throw new Error(`client ${this.id}: refusing to reveal both b and s of client ${d}`);
    if (!surv.has(this.id)) throw new Error(`client ${this.id}: the unmask request does not list me as a survivor`);
    for (const v of [...surv, ...drop]) if (!this.active.has(v)) throw new Error(`client ${this.id}: ${v} was not active in this round`);
    if (surv.size < this.config.threshold) throw new Error(`client ${this.id}: ${surv.size} survivors, below the threshold ${this.config.threshold}`);
    const out: UnmaskResponseMsg = { stage: 'unmask-response', clientId: this.id, bShares: [], sShares: [] };
    for (const [owner, sh] of this.held) {
      if (surv.has(owner)) out.bShares.push({ owner, y: sh.b.toString(16) });
      else if (drop.has(owner)) out.sShares.push({ owner, y: sh.s.toString(16) });
    }
    this.held.clear();
    this.stage = 'done';
    return out;
  }
}
