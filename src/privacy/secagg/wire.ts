/**
 * Decoders for SecAgg+ messages arriving as untrusted JSON (the coordinator and the site agent call these before
 * handing a message to a state machine). Each returns a well-typed message or throws an Error naming the first
 * problem; none of them touches any state. The masked vector travels as base64 of little-endian uint32 words.
 */
import type {
  KeysMsg, MaskedInputMsg, MaskRequestMsg, NeighbourKeysMsg, SecAggConfig, SetupMsg, SharesMsg, UnmaskRequestMsg, UnmaskResponseMsg,
} from './messages.js';
import { validateConfig } from './messages.js';

const MAX_LIST = 1 << 20;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const HEX = /^[0-9a-f]{1,132}$/; // a GF(2^521 − 1) element: at most 131 hex digits

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${what} must be an object`);
  return v as Record<string, unknown>;
}
function stage(o: Record<string, unknown>, want: string): void {
  if (o['stage'] !== want) throw new Error(`expected a "${want}" message, got stage ${JSON.stringify(o['stage'])}`);
}
function id(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 1 << 20) throw new Error(`${what} must be a client id (integer ≥ 0)`);
  return v;
}
function b64(v: unknown, what: string, bytes?: number): string {
  if (typeof v !== 'string' || v.length % 4 !== 0 || !B64.test(v)) throw new Error(`${what} must be base64`);
  if (bytes !== undefined && Buffer.from(v, 'base64').length !== bytes) throw new Error(`${what} must be ${bytes} bytes`);
  return v;
}
function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v) || v.length > MAX_LIST) throw new Error(`${what} must be an array`);
  return v;
}
function ids(v: unknown, what: string): number[] {
  return list(v, what).map((x, i) => id(x, `${what}[${i}]`));
}

export function decodeConfig(v: unknown): SecAggConfig {
  const o = obj(v, 'config');
  const num = (k: string) => { const x = o[k]; if (typeof x !== 'number') throw new Error(`config.${k} must be a number`); return x; };
  if (typeof o['roundId'] !== 'string') throw new Error('config.roundId must be a string');
  const c: SecAggConfig = {
    roundId: o['roundId'], numClients: num('numClients'), threshold: num('threshold'), degree: num('degree'),
    graphSeed: b64(o['graphSeed'], 'config.graphSeed', 32), clipRange: num('clipRange'), quantBits: num('quantBits'),
    modBits: num('modBits'), vectorLength: num('vectorLength'), weightScale: num('weightScale'),
  };
  validateConfig(c);
  return c;
}

export function decodeSetup(v: unknown): SetupMsg {
  const o = obj(v, 'setup message'); stage(o, 'setup');
  const config = decodeConfig(o['config']);
  const clientId = id(o['clientId'], 'clientId');
  if (clientId >= config.numClients) throw new Error('clientId out of range');
  return { stage: 'setup', clientId, config };
}

export function decodeKeys(v: unknown): KeysMsg {
  const o = obj(v, 'keys message'); stage(o, 'keys');
  return { stage: 'keys', clientId: id(o['clientId'], 'clientId'), cPk: b64(o['cPk'], 'cPk', 32), sPk: b64(o['sPk'], 'sPk', 32) };
}

export function decodeNeighbourKeys(v: unknown): NeighbourKeysMsg {
  const o = obj(v, 'neighbour-keys message'); stage(o, 'neighbour-keys');
  const neighbours = list(o['neighbours'], 'neighbours').map((x, i) => {
    const n = obj(x, `neighbours[${i}]`);
    return { clientId: id(n['clientId'], `neighbours[${i}].clientId`), cPk: b64(n['cPk'], `neighbours[${i}].cPk`, 32), sPk: b64(n['sPk'], `neighbours[${i}].sPk`, 32) };
  });
  return { stage: 'neighbour-keys', neighbours };
}

export function decodeShares(v: unknown): SharesMsg {
  const o = obj(v, 'shares message'); stage(o, 'shares');
  const shares = list(o['shares'], 'shares').map((x, i) => {
    const s = obj(x, `shares[${i}]`);
    return { to: id(s['to'], `shares[${i}].to`), ct: b64(s['ct'], `shares[${i}].ct`) };
  });
  return { stage: 'shares', clientId: id(o['clientId'], 'clientId'), shares };
}

export function decodeMaskRequest(v: unknown): MaskRequestMsg {
  const o = obj(v, 'mask-request message'); stage(o, 'mask-request');
  const shares = list(o['shares'], 'shares').map((x, i) => {
    const s = obj(x, `shares[${i}]`);
    return { from: id(s['from'], `shares[${i}].from`), ct: b64(s['ct'], `shares[${i}].ct`) };
  });
  return { stage: 'mask-request', active: ids(o['active'], 'active'), shares };
}

/** JSON form of a masked input: `masked` is base64 of the little-endian uint32 words. */
export function encodeMaskedInput(m: MaskedInputMsg): { stage: 'masked-input'; clientId: number; masked: string } {
  return { stage: 'masked-input', clientId: m.clientId, masked: Buffer.from(m.masked.buffer, m.masked.byteOffset, m.masked.byteLength).toString('base64') };
}

export function decodeMaskedInput(v: unknown, expectedWords: number): MaskedInputMsg {
  const o = obj(v, 'masked-input message'); stage(o, 'masked-input');
  const bytes = Buffer.from(b64(o['masked'], 'masked'), 'base64');
  if (bytes.length !== expectedWords * 4) throw new Error(`masked must hold ${expectedWords} uint32 words, got ${bytes.length} bytes`);
  const masked = new Uint32Array(expectedWords);
  new Uint8Array(masked.buffer).set(bytes); // little-endian hosts only, as Node on x86/ARM
  return { stage: 'masked-input', clientId: id(o['clientId'], 'clientId'), masked };
}

export function decodeUnmaskRequest(v: unknown): UnmaskRequestMsg {
  const o = obj(v, 'unmask-request message'); stage(o, 'unmask-request');
  return { stage: 'unmask-request', survivors: ids(o['survivors'], 'survivors'), dropped: ids(o['dropped'], 'dropped') };
}

export function decodeUnmaskResponse(v: unknown): UnmaskResponseMsg {
  const o = obj(v, 'unmask-response message'); stage(o, 'unmask-response');
  const sh = (k: string) => list(o[k], k).map((x, i) => {
    const s = obj(x, `${k}[${i}]`);
    const y = s['y'];
    if (typeof y !== 'string' || !HEX.test(y)) throw new Error(`${k}[${i}].y must be a field element in lowercase hex`);
    return { owner: id(s['owner'], `${k}[${i}].owner`), y };
  });
  return { stage: 'unmask-response', clientId: id(o['clientId'], 'clientId'), bShares: sh('bShares'), sShares: sh('sShares') };
}
