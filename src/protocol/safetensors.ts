/**
 * A small safetensors codec (https://github.com/huggingface/safetensors, "Format" section).
 *
 * Layout: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header, then the byte buffer.
 * Header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}
 * with offsets relative to the start of the byte buffer. No maintained package exists for Node, and the
 * decoder faces uploads from sites, so it is strict: every malformed input becomes a SafetensorsError
 * with a message that says what is wrong, and nothing else is ever thrown.
 */
import { CanonicalJsonError, parseJsonStrict, type JsonValue } from './canonical-json.js';
import type { Weights } from './tensors.js';

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Bytes per element of each dtype we can read. Everything is converted to float32 on decode. */
const DTYPE_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** The reference implementation refuses headers over 100 MB; so do we, before decoding any text. */
const MAX_HEADER_BYTES = 100_000_000;

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface DecodeOptions {
  /** Refuse inputs longer than this many bytes (the whole file). */
  maxBytes?: number;
}

export interface Decoded {
  weights: Weights;
  metadata: Record<string, string>;
}

function checkShape(shape: unknown, where: string): number[] {
  if (!Array.isArray(shape)) throw new SafetensorsError(`${where}: shape must be an array`);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsError(`${where}: shape must hold non-negative integers, got ${JSON.stringify(d)}`);
    }
  }
  return shape as number[];
}

/** Product of dims, refusing sizes that are not exactly representable. */
function elementCount(shape: number[], where: string): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) throw new SafetensorsError(`${where}: shape [${shape}] is too large`);
  }
  return n;
}

/**
 * Encode weights as safetensors: tensors sorted by name, F32 little-endian, the header padded with spaces
 * so the byte buffer starts on an 8-byte boundary. Throws SafetensorsError on inconsistent input.
 */
export function encodeSafetensors(weights: Weights, metadata?: Record<string, string>): Uint8Array {
  const names = Object.keys(weights).sort();
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (typeof v !== 'string') throw new SafetensorsError(`__metadata__.${k}: value must be a string`);
      Object.defineProperty(meta, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    header.__metadata__ = meta;
  }
  let offset = 0;
  for (const name of names) {
    if (name === '' || name === '__metadata__') throw new SafetensorsError(`tensor name ${JSON.stringify(name)} is reserved or empty`);
    const t = weights[name]!;
    const where = `tensor "${name}"`;
    const shape = checkShape(t.shape, where);
    const n = elementCount(shape, where);
    if (!(t.data instanceof Float32Array)) throw new SafetensorsError(`${where}: data must be a Float32Array`);
    if (t.data.length !== n) throw new SafetensorsError(`${where}: data length ${t.data.length} does not match shape [${shape}]`);
    const info = { dtype: 'F32', shape: [...shape], data_offsets: [offset, offset + 4 * n] };
    Object.defineProperty(header, name, { value: info, enumerable: true, writable: true, configurable: true });
    offset += 4 * n;
  }
  let json = JSON.stringify(header);
  let headerBytes = new TextEncoder().encode(json);
  const pad = (8 - (headerBytes.length % 8)) % 8;
  if (pad > 0) {
    json += ' '.repeat(pad);
    headerBytes = new TextEncoder().encode(json);
  }
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const d = weights[name]!.data;
    if (HOST_LITTLE_ENDIAN) {
      out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
    } else {
      const dv = new DataView(out.buffer, at, d.byteLength);
      for (let i = 0; i < d.length; i++) dv.setFloat32(4 * i, d[i]!, true);
    }
    at += d.byteLength;
  }
  return out;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** Decode and validate a safetensors file. Throws SafetensorsError (only) on malformed input. */
export function decodeSafetensors(bytes: Uint8Array, opts: DecodeOptions = {}): Decoded {
  if (!(bytes instanceof Uint8Array)) throw new SafetensorsError('input must be a Uint8Array');
  if (opts.maxBytes !== undefined && bytes.length > opts.maxBytes) {
    throw new SafetensorsError(`file is ${bytes.length} bytes, over the limit of ${opts.maxBytes}`);
  }
  if (bytes.length < 8) throw new SafetensorsError(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) {
    throw new SafetensorsError(`header length ${n64} runs past the end of the file (${bytes.length - 8} bytes follow)`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) throw new SafetensorsError(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) throw new SafetensorsError(`header length ${n} is too short for a JSON object`);
  const headerBytes = bytes.subarray(8, 8 + n);
  // The spec requires the header to start with '{' (so it cannot be any other JSON value).
  if (headerBytes[0] !== 0x7b) throw new SafetensorsError('header must start with "{"');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError('header is not valid UTF-8');
  }
  let header: JsonValue;
  try {
    // Trailing spaces are the alignment padding the spec allows; the strict parser skips them.
    header = parseJsonStrict(text, { maxDepth: 8 });
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw new SafetensorsError(`header is not valid JSON (${e.message})`);
    throw e;
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError('header must be a JSON object');
  }
  const bufferLen = bytes.length - 8 - n;
  const metadata = readMetadata(header.__metadata__);
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    entries.push(readEntry(name, info, bufferLen));
  }
  checkTiling(entries, bufferLen);
  const data = bytes.subarray(8 + n);
  const weights: Weights = {};
  for (const e of entries) {
    const tensor = { shape: e.shape, data: toFloat32(data.subarray(e.begin, e.end), e.dtype) };
    Object.defineProperty(weights, e.name, { value: tensor, enumerable: true, writable: true, configurable: true });
  }
  return { weights, metadata };
}

function readMetadata(meta: JsonValue | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (meta === undefined) return out;
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
    throw new SafetensorsError('__metadata__ must be an object of strings');
  }
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function readEntry(name: string, info: JsonValue, bufferLen: number): Entry {
  const where = `tensor "${name}"`;
  if (name === '') throw new SafetensorsError('tensor name must not be empty');
  if (info === null || typeof info !== 'object' || Array.isArray(info)) throw new SafetensorsError(`${where}: entry must be an object`);
  for (const k of Object.keys(info)) {
    if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw new SafetensorsError(`${where}: unexpected field "${k}"`);
  }
  const dtype = info.dtype;
  if (typeof dtype !== 'string') throw new SafetensorsError(`${where}: dtype must be a string`);
  const size = DTYPE_SIZE[dtype];
  if (!Object.prototype.hasOwnProperty.call(DTYPE_SIZE, dtype) || size === undefined) {
    throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
  }
  const shape = checkShape(info.shape, where);
  const offs = info.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2) throw new SafetensorsError(`${where}: data_offsets must be [begin, end]`);
  const [begin, end] = offs;
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
    throw new SafetensorsError(`${where}: data_offsets must be non-negative integers`);
  }
  if (begin > end) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] has begin after end`);
  if (end > bufferLen) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] out of range (buffer is ${bufferLen} bytes)`);
  const count = elementCount(shape, where);
  if (count * size !== end - begin) {
    throw new SafetensorsError(`${where}: shape [${shape}] of ${dtype} needs ${count * size} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

/** The tensors must tile the byte buffer exactly: no overlap, no gap, nothing left over. */
function checkTiling(entries: Entry[], bufferLen: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev: Entry | null = null;
  for (const e of sorted) {
    if (e.begin < at) throw new SafetensorsError(`tensor "${e.name}" overlaps tensor "${prev!.name}" (bytes ${e.begin}..${at})`);
    if (e.begin > at) throw new SafetensorsError(`bytes ${at}..${e.begin} of the buffer belong to no tensor`);
    at = e.end;
    prev = e;
  }
  if (at !== bufferLen) throw new SafetensorsError(`bytes ${at}..${bufferLen} of the buffer belong to no tensor`);
}

function toFloat32(src: Uint8Array, dtype: string): Float32Array {
  // Copy into a fresh, aligned buffer: the source offset need not be a multiple of the element size.
  // `new Uint8Array(src)` always copies; `src.slice()` would not when src is a Node Buffer (Buffer#slice
  // shares memory), and `copy.buffer` would then be the whole pooled allocation.
  const copy = new Uint8Array(src);
  const dv = new DataView(copy.buffer);
  if (dtype === 'F32') {
    if (HOST_LITTLE_ENDIAN) return new Float32Array(copy.buffer, 0, copy.length / 4);
    const out = new Float32Array(copy.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  const size = DTYPE_SIZE[dtype]!;
  const out = new Float32Array(copy.length / size);
  for (let i = 0; i < out.length; i++) {
    const o = i * size;
    switch (dtype) {
      case 'F64': out[i] = dv.getFloat64(o, true); break;
      case 'F16': out[i] = halfToFloat(dv.getUint16(o, true)); break;
      case 'BF16': out[i] = bf16ToFloat(dv.getUint16(o, true)); break;
      case 'I32': out[i] = dv.getInt32(o, true); break;
      case 'I16': out[i] = dv.getInt16(o, true); break;
      case 'I8': out[i] = dv.getInt8(o); break;
      case 'U8': out[i] = dv.getUint8(o); break;
      case 'BOOL': out[i] = dv.getUint8(o) !== 0 ? 1 : 0; break;
    }
  }
  return out;
}

/** IEEE 754 binary16 to number (exact: every half is representable in float32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal or zero
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const bfScratch = new DataView(new ArrayBuffer(4));
/** bfloat16 is the top half of a float32. */
export function bf16ToFloat(b: number): number {
  bfScratch.setUint32(0, b << 16 >>> 0);
  return bfScratch.getFloat32(0);
}
