/**
 * A small safetensors codec (https://github.com/huggingface/safetensors, "Format" section).
 *
 * Layout: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header, then the byte buffer.
 * Header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}
 * with offsets relative to the start of the byte buffer. No maintained package exists for Node, and the
 * decoder faces uploads from sites, so it is strict: every malformed input becomes a SafetensorsError
 * with a message that says what is wrong, and nothing else is ever thrown.
 *
 * Reading is two steps so that a caller can check an upload's layout (names, shapes, dtypes, sizes) before any
 * value is decoded: `readSafetensorsHeader` parses and validates the header alone, `decodeTensors` decodes the
 * values it describes; `decodeSafetensors` does both. Every dtype decodes to float32 values (see tensors.ts) and
 * is written back in its own dtype, rounded to nearest even.
 */
import { CanonicalJsonError, parseJsonStrict, type JsonValue } from './canonical-json.js';
import {
  DTYPES, DTYPE_BYTES, MAX_EXACT_INT, bf16ToFloat, dtypeOf, emptyWeights, floatToBf16Bits, floatToHalfBits, halfToFloat, intRange, isDType, roundHalfEven,
  setTensor, type DType, type Weights, type WeightsLayout,
} from './tensors.js';

export { bf16ToFloat, halfToFloat };

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

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

/** One tensor as the header describes it; offsets are relative to the byte buffer. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** In the header's own order. */
  tensors: TensorEntry[];
  /** Null prototype: keys are ordinary names. */
  metadata: Record<string, string>;
  /** Offset of the byte buffer in the file. */
  dataStart: number;
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
 * Encode weights as safetensors: tensors sorted by name, each in its dtype (F32 when absent), little-endian, the
 * header padded with spaces so the byte buffer starts on an 8-byte boundary. Floating values are rounded to
 * nearest even for F16/BF16; integer dtypes must hold integers in range (a non-integer is rounded half to even).
 * Throws SafetensorsError on inconsistent input.
 */
export function encodeSafetensors(weights: Weights, metadata?: Record<string, string>): Uint8Array {
  const names = Object.keys(weights).sort();
  const entries = names.map((name) => {
    const t = weights[name]!;
    const where = `tensor "${name}"`;
    const shape = checkShape(t.shape, where);
    const n = elementCount(shape, where);
    if (!(t.data instanceof Float32Array)) throw new SafetensorsError(`${where}: data must be a Float32Array`);
    if (t.data.length !== n) throw new SafetensorsError(`${where}: data length ${t.data.length} does not match shape [${shape}]`);
    return { name, dtype: dtypeOf(t), shape };
  });
  const head = encodeSafetensorsHeader(entries, metadata);
  const out = new Uint8Array(head.bytes.length + head.dataBytes);
  out.set(head.bytes, 0);
  let at = head.bytes.length;
  for (const name of names) {
    const t = weights[name]!;
    at += writeValues(out, at, t.data, dtypeOf(t), `tensor "${name}"`);
  }
  return out;
}

/** The start of a safetensors file: the 8-byte length, the JSON header (padded), and where each tensor's bytes go. */
export interface EncodedHeader {
  /** The 8-byte length and the header, padded so the byte buffer starts on an 8-byte boundary. */
  bytes: Uint8Array;
  /** Each tensor's [begin, end) in the byte buffer, in `entries`' order. */
  offsets: [number, number][];
  /** Length of the byte buffer that follows. */
  dataBytes: number;
}

/**
 * The header encodeSafetensors writes for tensors in `entries`' order (it passes them sorted by name): a writer that
 * streams the values afterwards (coordinator/stream-aggregate.ts) produces the very bytes encodeSafetensors would.
 */
export function encodeSafetensorsHeader(entries: readonly { name: string; dtype: DType; shape: readonly number[] }[], metadata?: Record<string, string>): EncodedHeader {
  const header = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    const meta = Object.create(null) as Record<string, string>;
    for (const [k, v] of Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (typeof v !== 'string') throw new SafetensorsError(`__metadata__.${k}: value must be a string`);
      Object.defineProperty(meta, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    header.__metadata__ = meta;
  }
  let offset = 0;
  const offsets: [number, number][] = [];
  for (const { name, dtype, shape } of entries) {
    if (name === '' || name === '__metadata__') throw new SafetensorsError(`tensor name ${JSON.stringify(name)} is reserved or empty`);
    const where = `tensor "${name}"`;
    const n = elementCount(checkShape([...shape], where), where);
    if (!isDType(dtype)) throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${DTYPES.join(', ')})`);
    const size = DTYPE_BYTES[dtype] * n;
    const info = { dtype, shape: [...shape], data_offsets: [offset, offset + size] };
    Object.defineProperty(header, name, { value: info, enumerable: true, writable: true, configurable: true });
    offsets.push([offset, offset + size]);
    offset += size;
  }
  let json = JSON.stringify(header);
  let headerBytes = new TextEncoder().encode(json);
  const pad = (8 - (headerBytes.length % 8)) % 8;
  if (pad > 0) {
    json += ' '.repeat(pad);
    headerBytes = new TextEncoder().encode(json);
  }
  const bytes = new Uint8Array(8 + headerBytes.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  bytes.set(headerBytes, 8);
  return { bytes, offsets, dataBytes: offset };
}

/** `d` as the little-endian bytes of `dtype` (integer dtypes: rounded half to even, refused out of range). */
export function encodeValues(d: Float32Array, dtype: DType, where: string): Uint8Array {
  const out = new Uint8Array(d.length * DTYPE_BYTES[dtype]);
  writeValues(out, 0, d, dtype, where);
  return out;
}

/**
 * Values of one tensor's bytes (or a whole-element slice of them) as float32; SafetensorsError on an integer float32
 * cannot hold. F32 bytes at an aligned offset are viewed, not copied: the result then shares `src`'s memory.
 */
export function decodeValues(src: Uint8Array, dtype: DType, name: string): Float32Array {
  if (src.length % DTYPE_BYTES[dtype] !== 0) throw new SafetensorsError(`tensor "${name}": ${src.length} bytes are not whole ${dtype} elements`);
  if (dtype === 'F32' && HOST_LITTLE_ENDIAN && src.byteOffset % 4 === 0) return new Float32Array(src.buffer, src.byteOffset, src.length / 4);
  return toFloat32(src, dtype, name);
}

/** Writes `d` as `dtype` at `out[at…]`; returns the bytes written. */
function writeValues(out: Uint8Array, at: number, d: Float32Array, dtype: DType, where: string): number {
  const size = DTYPE_BYTES[dtype];
  if (dtype === 'F32' && HOST_LITTLE_ENDIAN) {
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
    return d.byteLength;
  }
  const dv = new DataView(out.buffer, out.byteOffset + at, d.length * size);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < d.length; i++) dv.setFloat32(4 * i, d[i]!, true);
      break;
    case 'F64':
      for (let i = 0; i < d.length; i++) dv.setFloat64(8 * i, d[i]!, true);
      break;
    case 'F16':
      for (let i = 0; i < d.length; i++) dv.setUint16(2 * i, floatToHalfBits(d[i]!), true);
      break;
    case 'BF16':
      for (let i = 0; i < d.length; i++) dv.setUint16(2 * i, floatToBf16Bits(d[i]!), true);
      break;
    default: {
      const [lo, hi] = intRange(dtype);
      for (let i = 0; i < d.length; i++) {
        const v = roundHalfEven(d[i]!);
        if (!(v >= lo && v <= hi)) throw new SafetensorsError(`${where}: value ${d[i]} at index ${i} does not fit ${dtype} (Setu holds ${lo}..${hi} exactly)`);
        if (dtype === 'I64') {
          dv.setInt32(8 * i, v, true);
          dv.setInt32(8 * i + 4, v < 0 ? -1 : 0, true);
        } else if (dtype === 'I32') dv.setInt32(4 * i, v, true);
        else if (dtype === 'I16') dv.setInt16(2 * i, v, true);
        else if (dtype === 'I8') dv.setInt8(i, v);
        else dv.setUint8(i, v);
      }
    }
  }
  return d.length * size;
}

/**
 * Parses and validates the header (every tensor's dtype, shape and offsets; the tensors tile the buffer exactly)
 * without decoding any value. Throws SafetensorsError (only) on malformed input.
 */
export function readSafetensorsHeader(bytes: Uint8Array, opts: DecodeOptions = {}): SafetensorsHeader {
  if (!(bytes instanceof Uint8Array)) throw new SafetensorsError('input must be a Uint8Array');
  return readSafetensorsHeaderOf(bytes, bytes.length, opts);
}

/** Bytes a file's header needs: 8 + its length (the first 8 bytes); 0 when the file is too short to say. */
export function safetensorsHeaderBytes(first8: Uint8Array): number {
  if (first8.length < 8) return 0;
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  return n > BigInt(MAX_HEADER_BYTES) ? 8 + MAX_HEADER_BYTES + 1 : 8 + Number(n);
}

/** The header of `size` bytes of safetensors that `read(start, end)` gives: the first 8 say how many more it takes. */
export async function headerFrom(read: (start: number, end: number) => Promise<Uint8Array>, size: number): Promise<SafetensorsHeader> {
  const first = await read(0, 8);
  const need = Math.min(safetensorsHeaderBytes(first), size);
  return readSafetensorsHeaderOf(need > 8 ? await read(0, need) : first, size);
}

/**
 * The header of a file of `totalBytes` from its first bytes only (`prefix`: at least safetensorsHeaderBytes of
 * them), with the same checks as readSafetensorsHeader: how a stored or uploaded blob is checked without reading it.
 */
export function readSafetensorsHeaderOf(prefix: Uint8Array, totalBytes: number, opts: DecodeOptions = {}): SafetensorsHeader {
  const bytes = prefix;
  if (opts.maxBytes !== undefined && totalBytes > opts.maxBytes) {
    throw new SafetensorsError(`file is ${totalBytes} bytes, over the limit of ${opts.maxBytes}`);
  }
  if (totalBytes < 8 || bytes.length < 8) throw new SafetensorsError(`file is ${totalBytes} bytes, too short for the 8-byte header length`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(totalBytes - 8)) {
    throw new SafetensorsError(`header length ${n64} runs past the end of the file (${totalBytes - 8} bytes follow)`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) throw new SafetensorsError(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) throw new SafetensorsError(`header length ${n} is too short for a JSON object`);
  if (bytes.length < 8 + n) throw new SafetensorsError(`the header's ${n} bytes are not all among the ${bytes.length - 8} read`);
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
    // Trailing spaces are the alignment padding the spec allows; the strict parser skips them. Its objects
    // hold every key (even "__proto__") as an own data property.
    header = parseJsonStrict(text, { maxDepth: 8 });
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw new SafetensorsError(`header is not valid JSON (${e.message})`);
    throw e;
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError('header must be a JSON object');
  }
  const bufferLen = totalBytes - 8 - n;
  const metadata = readMetadata(Object.hasOwn(header, '__metadata__') ? header.__metadata__ : undefined);
  const tensors: TensorEntry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    tensors.push(readEntry(name, info, bufferLen));
  }
  checkTiling(tensors, bufferLen);
  return { tensors, metadata, dataStart: 8 + n };
}

/** The layout a header describes (null prototype), to compare with what a study expects before decoding. */
export function headerLayout(h: SafetensorsHeader): WeightsLayout {
  const out = Object.create(null) as WeightsLayout;
  for (const e of h.tensors) Object.defineProperty(out, e.name, { value: { shape: [...e.shape], dtype: e.dtype }, enumerable: true });
  return out;
}

/** Decodes the values of the tensors `h` describes (from `readSafetensorsHeader` of the same bytes). */
export function decodeTensors(bytes: Uint8Array, h: SafetensorsHeader): Weights {
  const data = bytes.subarray(h.dataStart);
  const weights = emptyWeights();
  for (const e of h.tensors) {
    const values = toFloat32(data.subarray(e.begin, e.end), e.dtype, e.name);
    setTensor(weights, e.name, { shape: e.shape, data: values, ...(e.dtype !== 'F32' ? { dtype: e.dtype } : {}) });
  }
  return weights;
}

/**
 * The tensors of `bytes` as float32 views of it where they can be (F32 at an aligned offset), copies where not: a
 * large model decoded without a second copy. The weights share `bytes`' memory: for readers, not for training.
 */
export function viewTensors(bytes: Uint8Array, h: SafetensorsHeader): Weights {
  const data = bytes.subarray(h.dataStart);
  const weights = emptyWeights();
  for (const e of h.tensors) setTensor(weights, e.name, { shape: e.shape, data: decodeValues(data.subarray(e.begin, e.end), e.dtype, e.name), ...(e.dtype !== 'F32' ? { dtype: e.dtype } : {}) });
  return weights;
}

/** Decode and validate a safetensors file. Throws SafetensorsError (only) on malformed input. */
export function decodeSafetensors(bytes: Uint8Array, opts: DecodeOptions = {}): Decoded {
  const h = readSafetensorsHeader(bytes, opts);
  return { weights: decodeTensors(bytes, h), metadata: h.metadata };
}

function readMetadata(meta: JsonValue | undefined): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
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

function readEntry(name: string, info: JsonValue, bufferLen: number): TensorEntry {
  const where = `tensor "${name}"`;
  if (name === '') throw new SafetensorsError('tensor name must not be empty');
  if (info === null || typeof info !== 'object' || Array.isArray(info)) throw new SafetensorsError(`${where}: entry must be an object`);
  for (const k of Object.keys(info)) {
    if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw new SafetensorsError(`${where}: unexpected field "${k}"`);
  }
  const own = (k: string): JsonValue | undefined => (Object.hasOwn(info, k) ? info[k] : undefined);
  const dtype = own('dtype');
  if (typeof dtype !== 'string') throw new SafetensorsError(`${where}: dtype must be a string`);
  if (!isDType(dtype)) throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${DTYPES.join(', ')})`);
  const shape = checkShape(own('shape'), where);
  const offs = own('data_offsets');
  if (!Array.isArray(offs) || offs.length !== 2) throw new SafetensorsError(`${where}: data_offsets must be [begin, end]`);
  const [begin, end] = offs;
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
    throw new SafetensorsError(`${where}: data_offsets must be non-negative integers`);
  }
  if (begin > end) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] has begin after end`);
  if (end > bufferLen) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] out of range (buffer is ${bufferLen} bytes)`);
  const count = elementCount(shape, where);
  const size = DTYPE_BYTES[dtype];
  if (count * size !== end - begin) {
    throw new SafetensorsError(`${where}: shape [${shape}] of ${dtype} needs ${count * size} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

/** The tensors must tile the byte buffer exactly: no overlap, no gap, nothing left over. */
function checkTiling(entries: TensorEntry[], bufferLen: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev: TensorEntry | null = null;
  for (const e of sorted) {
    if (e.begin < at) throw new SafetensorsError(`tensor "${e.name}" overlaps tensor "${prev!.name}" (bytes ${e.begin}..${at})`);
    if (e.begin > at) throw new SafetensorsError(`bytes ${at}..${e.begin} of the buffer belong to no tensor`);
    at = e.end;
    prev = e;
  }
  if (at !== bufferLen) throw new SafetensorsError(`bytes ${at}..${bufferLen} of the buffer belong to no tensor`);
}

/** Every half as float32: F16 decoding is one table lookup per value. */
let halfTable: Float32Array | undefined;
function halves(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

/**
 * The float32 values of bytes of one tensor (a whole tensor, or a run of its elements: an update read chunk by
 * chunk); integers out of float32's exact range are refused (SafetensorsError).
 */
export function decodeTensorValues(src: Uint8Array, dtype: DType, name: string): Float32Array {
  return toFloat32(src, dtype, name);
}

function toFloat32(src: Uint8Array, dtype: DType, name: string): Float32Array {
  // Copy into a fresh, aligned buffer: the source offset need not be a multiple of the element size.
  // `new Uint8Array(src)` always copies; `src.slice()` would not when src is a Node Buffer (Buffer#slice
  // shares memory), and `copy.buffer` would then be the whole pooled allocation.
  const copy = new Uint8Array(src);
  const size = DTYPE_BYTES[dtype];
  const count = copy.length / size;
  if (dtype === 'F32' && HOST_LITTLE_ENDIAN) return new Float32Array(copy.buffer, 0, count);
  const out = new Float32Array(count);
  if (HOST_LITTLE_ENDIAN && dtype === 'F16') {
    const u16 = new Uint16Array(copy.buffer, 0, count), t = halves();
    for (let i = 0; i < count; i++) out[i] = t[u16[i]!]!;
    return out;
  }
  if (HOST_LITTLE_ENDIAN && dtype === 'BF16') {
    const u16 = new Uint16Array(copy.buffer, 0, count), bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = u16[i]! << 16;
    return out;
  }
  const dv = new DataView(copy.buffer);
  for (let i = 0; i < count; i++) {
    const o = i * size;
    switch (dtype) {
      case 'F32': out[i] = dv.getFloat32(o, true); break;
      case 'F64': out[i] = dv.getFloat64(o, true); break;
      case 'F16': out[i] = halfToFloat(dv.getUint16(o, true)); break;
      case 'BF16': out[i] = bf16ToFloat(dv.getUint16(o, true)); break;
      case 'I64': out[i] = exactInt(dv.getInt32(o + 4, true) * 2 ** 32 + dv.getUint32(o, true), name, dtype, i); break;
      case 'I32': out[i] = exactInt(dv.getInt32(o, true), name, dtype, i); break;
      case 'I16': out[i] = dv.getInt16(o, true); break;
      case 'I8': out[i] = dv.getInt8(o); break;
      case 'U8': out[i] = dv.getUint8(o); break;
      case 'BOOL': out[i] = dv.getUint8(o) !== 0 ? 1 : 0; break;
    }
  }
  return out;
}

/** An I64/I32 value float32 cannot hold exactly is refused, never rounded. */
function exactInt(v: number, name: string, dtype: DType, i: number): number {
  if (v > MAX_EXACT_INT || v < -MAX_EXACT_INT) {
    throw new SafetensorsError(`tensor "${name}" (${dtype}) holds ${v} at index ${i}; Setu holds integer tensors exactly within ±${MAX_EXACT_INT} (2^24) only`);
  }
  return v;
}
