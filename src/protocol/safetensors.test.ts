import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeSafetensors, encodeSafetensors, headerLayout, readSafetensorsHeader, SafetensorsError, halfToFloat, bf16ToFloat } from './safetensors.js';
import { floatToBf16Bits, floatToHalfBits, layoutMismatch, layoutOf, mapWeights, roundToDtype, tensor, type DType, type Weights } from './tensors.js';

/** Assemble a file by hand from a raw header string and buffer bytes, exactly as the spec lays it out. */
function rawFile(header: string, buffer: number[] | Uint8Array = [], declaredLen?: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + buffer.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLen ?? h.length), true);
  out.set(h, 8);
  out.set(buffer, 8 + h.length);
  return out;
}

function f32le(...xs: number[]): number[] {
  const b = new Uint8Array(new Float32Array(xs).buffer);
  return [...b];
}

function rejects(bytes: Uint8Array, pattern: RegExp, opts?: { maxBytes?: number }): void {
  assert.throws(() => decodeSafetensors(bytes, opts), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('round trip keeps names, shapes, values and metadata', () => {
  const w: Weights = {
    'layer.weight': { shape: [2, 3], data: new Float32Array([1, 2, 3, -4.5, 1e-30, 3.4e38]) },
    bias: { shape: [3], data: new Float32Array([0, -0, 0.1]) },
    scalar: { shape: [], data: new Float32Array([7]) },
    empty: { shape: [0, 4], data: new Float32Array(0) },
  };
  const bytes = encodeSafetensors(w, { format: 'pt', round: '3' });
  const { weights, metadata } = decodeSafetensors(bytes);
  assert.deepEqual({ ...metadata }, { format: 'pt', round: '3' });
  assert.deepEqual(Object.keys(weights).sort(), Object.keys(w).sort());
  for (const [k, t] of Object.entries(w)) {
    assert.deepEqual(weights[k]!.shape, t.shape);
    assert.deepEqual([...weights[k]!.data], [...t.data]);
  }
  // The buffer must start on an 8-byte boundary.
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0);
});

test('byte-exact known vector, built by hand from the spec', () => {
  // Header is 110 bytes of JSON, padded with 2 spaces to 112 (0x70) so the buffer starts 8-aligned.
  const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]}}  ';
  const expected = new Uint8Array([
    0x70, 0, 0, 0, 0, 0, 0, 0,
    ...new TextEncoder().encode(header),
    0x00, 0x00, 0x80, 0x3f, // 1.0f
    0x00, 0x00, 0x00, 0xc0, // -2.0f
    0x00, 0x00, 0x00, 0x3f, // 0.5f
  ]);
  // Insertion order b-then-a proves the encoder sorts by name.
  const got = encodeSafetensors({
    b: { shape: [1, 1], data: new Float32Array([0.5]) },
    a: { shape: [2], data: new Float32Array([1, -2]) },
  });
  assert.deepEqual([...got], [...expected]);
  const back = decodeSafetensors(expected);
  assert.deepEqual([...back.weights.a!.data], [1, -2]);
  assert.deepEqual(back.weights.b!.shape, [1, 1]);
});

test('metadata is written first and read back; empty metadata is omitted', () => {
  const w = { w: { shape: [1], data: new Float32Array([1]) } };
  const bytes = encodeSafetensors(w, { format: 'pt' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.equal(header.trimEnd(), '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
  assert.ok(!new TextDecoder().decode(encodeSafetensors(w, {})).includes('__metadata__'));
});

test('decodes an unaligned buffer and a subarray view', () => {
  // 57-byte header: the buffer starts at an odd offset, which a naive Float32Array view would refuse.
  const header = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ';
  const file = rawFile(header, f32le(3.25, -1));
  const padded = new Uint8Array(file.length + 3);
  padded.set(file, 3);
  const { weights } = decodeSafetensors(padded.subarray(3));
  assert.deepEqual([...weights.x!.data], [3.25, -1]);
});

test('converts F64, F16, BF16, I32, I16, I8, U8, BOOL to float32', () => {
  const buf = new Uint8Array(8 + 2 + 2 + 4 + 2 + 1 + 1 + 1);
  const dv = new DataView(buf.buffer);
  dv.setFloat64(0, 2.5, true);
  dv.setUint16(8, 0x3c00, true); // half 1.0
  dv.setUint16(10, 0xc000, true); // bf16 -2.0
  dv.setInt32(12, -7, true);
  dv.setInt16(16, 300, true);
  dv.setInt8(18, -3);
  dv.setUint8(19, 200);
  dv.setUint8(20, 5); // BOOL: any non-zero is true
  const header = JSON.stringify({
    a: { dtype: 'F64', shape: [1], data_offsets: [0, 8] },
    b: { dtype: 'F16', shape: [1], data_offsets: [8, 10] },
    c: { dtype: 'BF16', shape: [1], data_offsets: [10, 12] },
    d: { dtype: 'I32', shape: [1], data_offsets: [12, 16] },
    e: { dtype: 'I16', shape: [1], data_offsets: [16, 18] },
    f: { dtype: 'I8', shape: [1], data_offsets: [18, 19] },
    g: { dtype: 'U8', shape: [1], data_offsets: [19, 20] },
    h: { dtype: 'BOOL', shape: [1], data_offsets: [20, 21] },
  });
  const { weights } = decodeSafetensors(rawFile(header, buf));
  const vals = Object.fromEntries(Object.entries(weights).map(([k, t]) => [k, t.data[0]]));
  assert.deepEqual(vals, { a: 2.5, b: 1, c: -2, d: -7, e: 300, f: -3, g: 200, h: 1 });
});

test('half and bfloat16 conversions match known bit patterns', () => {
  assert.equal(halfToFloat(0x0000), 0);
  assert.ok(Object.is(halfToFloat(0x8000), -0));
  assert.equal(halfToFloat(0x0001), 2 ** -24); // smallest subnormal
  assert.equal(halfToFloat(0x7bff), 65504); // largest finite
  assert.equal(halfToFloat(0x3555), 0.333251953125);
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  assert.equal(bf16ToFloat(0x3f80), 1);
  assert.equal(bf16ToFloat(0x4049), 3.140625);
});

// Written by the reference implementation (Python `safetensors` 0.8.0, `serialize` with raw TensorSpecs):
// F64 d=[2.25], F32 w=[[1.5,-2],[3,4]], I32 i=[-1,0,7], BF16 bf=[3.140625], F16 h=[1,-2], metadata who=python.
// Its header is padded with 3 spaces and its tensors are not in name order.
const REFERENCE_HEX =
  '38010000000000007b225f5f6d657461646174615f5f223a7b2277686f223a22707974686f6e227d2c2264223a7b22647479' +
  '7065223a22463634222c227368617065223a5b315d2c22646174615f6f666673657473223a5b302c385d7d2c2277223a7b22' +
  '6474797065223a22463332222c227368617065223a5b322c325d2c22646174615f6f666673657473223a5b382c32345d7d2c' +
  '2269223a7b226474797065223a22493332222c227368617065223a5b335d2c22646174615f6f666673657473223a5b32342c' +
  '33365d7d2c226266223a7b226474797065223a2242463136222c227368617065223a5b315d2c22646174615f6f6666736574' +
  '73223a5b33362c33385d7d2c2268223a7b226474797065223a22463136222c227368617065223a5b325d2c22646174615f6f' +
  '666673657473223a5b33382c34325d7d7d20202000000000000002400000c03f000000c00000404000008040ffffffff0000' +
  '0000070000004940003c00c0';

test('decodes a file written by the reference implementation, from a pooled Node Buffer', () => {
  const buf = Buffer.from(REFERENCE_HEX, 'hex'); // small Buffers share one pooled ArrayBuffer at an offset
  assert.notEqual(buf.byteOffset, 0);
  const { weights, metadata } = decodeSafetensors(buf);
  assert.deepEqual({ ...metadata }, { who: 'python' });
  const got = Object.fromEntries(Object.entries(weights).map(([k, t]) => [k, { shape: t.shape, data: [...t.data] }]));
  assert.deepEqual(got, {
    d: { shape: [1], data: [2.25] },
    w: { shape: [2, 2], data: [1.5, -2, 3, 4] },
    i: { shape: [3], data: [-1, 0, 7] },
    bf: { shape: [1], data: [3.140625] },
    h: { shape: [2], data: [1, -2] },
  });
});

test('round trip through a pooled Node Buffer', () => {
  const w = { a: { shape: [3], data: new Float32Array([1, 2, 3]) } };
  const buf = Buffer.from(encodeSafetensors(w));
  assert.deepEqual([...decodeSafetensors(buf).weights.a!.data], [1, 2, 3]);
});

const okEntry = '"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}';
const twoFloats = f32le(1, 2);

test('malformed: short file and header length', () => {
  rejects(new Uint8Array(0), /too short/);
  rejects(new Uint8Array(7), /too short/);
  rejects(rawFile(`{${okEntry}}`, twoFloats, 10_000), /runs past the end/);
  const huge = rawFile(`{${okEntry}}`, twoFloats);
  new DataView(huge.buffer).setBigUint64(0, 0xffff_ffff_ffff_ffffn, true);
  rejects(huge, /runs past the end/);
  rejects(rawFile('', []), /too short for a JSON object/);
});

test('malformed: header that is not JSON or not an object', () => {
  rejects(rawFile('[1,2]'), /must start with "\{"/);
  rejects(rawFile(' {}'), /must start with "\{"/);
  rejects(rawFile('{"t": '), /not valid JSON/);
  rejects(rawFile('{} x'), /not valid JSON/);
  rejects(rawFile('{"t":1,}'), /not valid JSON/);
  rejects(rawFile('{"a":' + '['.repeat(50) + ']'.repeat(50) + '}'), /nesting deeper/);
  const badUtf8 = rawFile('{"\u00e9":1}');
  badUtf8[10] = 0xff;
  rejects(badUtf8, /not valid UTF-8/);
});

test('malformed: dtype, shape and entry structure', () => {
  rejects(rawFile('{"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', twoFloats), /tensor "t": unsupported dtype "Q4"/);
  rejects(rawFile('{"t":{"dtype":"toString","shape":[2],"data_offsets":[0,8]}}', twoFloats), /unsupported dtype/);
  rejects(rawFile('{"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', twoFloats), /dtype must be a string/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', twoFloats), /non-negative integers/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', twoFloats), /non-negative integers/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}', twoFloats), /non-negative integers/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}', twoFloats), /shape must be an array/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', twoFloats), /too large/);
  rejects(rawFile('{"t":[1]}', twoFloats), /entry must be an object/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}', twoFloats), /unexpected field "x"/);
  rejects(rawFile('{"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', twoFloats), /name must not be empty/);
});

test('malformed: offsets out of range, overlapping, leaving gaps, or mismatching the shape', () => {
  rejects(rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}', twoFloats), /out of range/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', twoFloats), /begin after end/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', twoFloats), /must be \[begin, end\]/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[-1,7]}}', twoFloats), /non-negative integers/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', twoFloats), /needs 12 bytes but data_offsets span 8/);
  rejects(rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', twoFloats), /overlaps/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', twoFloats), /bytes 0\.\.4 .* belong to no tensor/);
  rejects(rawFile('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', twoFloats), /bytes 4\.\.8 .* belong to no tensor/);
});

test('malformed: duplicate names and bad metadata', () => {
  rejects(rawFile(`{${okEntry},${okEntry}}`, twoFloats), /duplicate key "t"/);
  rejects(rawFile(`{"__metadata__":{"a":1},${okEntry}}`, twoFloats), /__metadata__\.a must be a string/);
  rejects(rawFile(`{"__metadata__":["x"],${okEntry}}`, twoFloats), /__metadata__ must be an object/);
  rejects(rawFile(`{"__metadata__":{"a":"x","a":"y"},${okEntry}}`, twoFloats), /duplicate key "a"/);
});

test('maxBytes limits the whole file', () => {
  const bytes = encodeSafetensors({ t: { shape: [100], data: new Float32Array(100) } });
  rejects(bytes, /over the limit of 100/, { maxBytes: 100 });
  assert.equal(decodeSafetensors(bytes, { maxBytes: bytes.length }).weights.t!.data.length, 100);
});

test('"__proto__" is an ordinary tensor name, not a prototype change', () => {
  const bytes = rawFile('{"__proto__":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', twoFloats);
  const { weights } = decodeSafetensors(bytes);
  assert.equal(Object.getPrototypeOf(weights), null);
  assert.deepEqual(Object.keys(weights), ['__proto__']);
  assert.deepEqual([...Object.getOwnPropertyDescriptor(weights, '__proto__')!.value.data], [1, 2]);
});

test('encoder refuses inconsistent tensors', () => {
  assert.throws(() => encodeSafetensors({ t: { shape: [3], data: new Float32Array(2) } }), SafetensorsError);
  assert.throws(() => encodeSafetensors({ t: { shape: [-1], data: new Float32Array(0) } }), SafetensorsError);
  assert.throws(() => encodeSafetensors({ __metadata__: { shape: [1], data: new Float32Array(1) } }), SafetensorsError);
  assert.throws(() => encodeSafetensors({}, { a: 1 as unknown as string }), SafetensorsError);
});

// ---- properties: whatever the bytes, the decoder answers with a result or a SafetensorsError ----

function onlySafetensorsError(bytes: Uint8Array): void {
  try {
    decodeSafetensors(bytes);
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw e;
  }
}

const arbWeights: fc.Arbitrary<Weights> = fc
  .dictionary(
    fc.string({ minLength: 1, maxLength: 8 }).filter((s) => s !== '__metadata__'),
    fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }).chain((shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return fc.float32Array({ minLength: n, maxLength: n }).map((data) => ({ shape, data }));
    }),
    { maxKeys: 5 },
  );

test('property: encode then decode is the identity (bit for bit, NaN included)', () => {
  fc.assert(
    fc.property(arbWeights, fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }), (w, meta) => {
      const { weights, metadata } = decodeSafetensors(encodeSafetensors(w, meta));
      const sorted = (r: Record<string, string>) => Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      assert.deepEqual(sorted(metadata), sorted(meta));
      assert.deepEqual(Object.keys(weights).sort(), Object.keys(w).sort());
      for (const k of Object.keys(w)) {
        assert.deepEqual(weights[k]!.shape, w[k]!.shape);
        const a = new Uint8Array(weights[k]!.data.buffer, weights[k]!.data.byteOffset, weights[k]!.data.byteLength);
        const b = new Uint8Array(w[k]!.data.buffer, w[k]!.data.byteOffset, w[k]!.data.byteLength);
        assert.deepEqual([...a], [...b]);
      }
    }),
    { numRuns: 300 },
  );
});

test('property: random bytes never crash the decoder', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (b) => onlySafetensorsError(b)), { numRuns: 2000 });
  // Random JSON-ish headers with a correct length prefix reach the deeper checks.
  fc.assert(
    fc.property(fc.json(), fc.uint8Array({ maxLength: 32 }), (h, buf) => onlySafetensorsError(rawFile(h, buf))),
    { numRuns: 2000 },
  );
});

test('property: mutations of a valid file give a result or a SafetensorsError', () => {
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  );
  fc.assert(
    fc.property(arbWeights, fc.array(mutation, { minLength: 1, maxLength: 4 }), (w, muts) => {
      let b = Array.from(encodeSafetensors(w, { k: 'v' }));
      for (const m of muts) {
        const at = b.length === 0 ? 0 : m.at % b.length;
        if (m.kind === 'flip' && b.length > 0) b[at] = m.value;
        else if (m.kind === 'truncate') b = b.slice(0, at);
        else if (m.kind === 'insert') b.splice(at, 0, m.value);
      }
      onlySafetensorsError(new Uint8Array(b));
    }),
    { numRuns: 2000 },
  );
});

// ---- dtypes: every one round-trips in its own dtype; floats are rounded as numpy and torch round them ----

test('every dtype round-trips in its own dtype, values exact', () => {
  const w = mapWeights(['f32', 'f16', 'bf16', 'i64', 'i32', 'i16', 'i8', 'u8', 'bool'], (k) => {
    const dtype = k.toUpperCase() as DType;
    const vals: Record<DType, number[]> = { F64: [2.25, 1], F32: [0.1, -3], F16: [0.5, -65504], BF16: [1.5, -2], I64: [-16777216, 16777216], I32: [-7, 123456], I16: [-32768, 32767], I8: [-128, 127], U8: [0, 255], BOOL: [1, 0] };
    return tensor([2], new Float32Array(vals[dtype]), dtype);
  });
  const back = decodeSafetensors(encodeSafetensors(w)).weights;
  for (const k of Object.keys(w)) {
    assert.equal(back[k]!.dtype ?? 'F32', w[k]!.dtype ?? 'F32', k);
    assert.deepEqual([...back[k]!.data], [...w[k]!.data], k);
  }
  const h = readSafetensorsHeader(encodeSafetensors(w));
  assert.deepEqual(Object.fromEntries(h.tensors.map((e) => [e.name, e.end - e.begin])), { bf16: 4, bool: 2, f16: 4, f32: 8, i16: 4, i32: 8, i64: 16, i8: 2, u8: 2 });
});

// numpy: np.array(v, np.float32).astype(np.float16).view(np.uint16); torch: tensor(v).to(torch.bfloat16).view(torch.int16)
const ROUNDING = [
  { v: 0.1, f16: 0x2e66, bf16: 0x3dcd },
  { v: 1 / 3, f16: 0x3555, bf16: 0x3eab },
  { v: -2.5e-6, f16: 0x802a, bf16: 0xb628 },
  { v: 65519, f16: 0x7bff, bf16: 0x4780 },
  { v: 65520, f16: 0x7c00, bf16: 0x4780 }, // F16 overflows to infinity, as numpy's cast does
  { v: 1e-8, f16: 0x0000, bf16: 0x322c },
  { v: 3.0000002, f16: 0x4200, bf16: 0x4040 },
  { v: 5.9604645e-8, f16: 0x0001, bf16: 0x3380 }, // smallest F16 subnormal
  { v: 2.9802322e-8, f16: 0x0000, bf16: 0x3300 }, // half of it: a tie, rounds to even (zero)
  { v: 8.940697e-8, f16: 0x0002, bf16: 0x33c0 }, // 1.5 subnormals: a tie, rounds to even (two)
  { v: 1.01171875, f16: 0x3c0c, bf16: 0x3f82 }, // a BF16 tie, to even
];

test('F16 and BF16 encoding rounds to nearest even, bit for bit as numpy and torch', () => {
  for (const r of ROUNDING) {
    assert.equal(floatToHalfBits(r.v), r.f16, `f16(${r.v})`);
    assert.equal(floatToBf16Bits(r.v), r.bf16, `bf16(${r.v})`);
  }
  // Every finite half survives half → float → half exactly.
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff)) continue; // NaN payloads
    assert.equal(floatToHalfBits(halfToFloat(h)), h);
  }
  const t = roundToDtype(tensor([3], new Float32Array([0.1, 2.5, 3.5]), 'F16'));
  assert.deepEqual([...t.data], [halfToFloat(0x2e66), 2.5, 3.5]);
  const i = roundToDtype(tensor([4], new Float32Array([2.5, 3.5, -0.5, 99.7]), 'I64'));
  assert.deepEqual([...i.data], [2, 4, -0, 100]);
  const b = roundToDtype(tensor([3], new Float32Array([0.4, 0.6, 7]), 'BOOL'));
  assert.deepEqual([...b.data], [0, 1, 1]);
});

test('an integer tensor that float32 cannot hold exactly is refused, never rounded', () => {
  const buf = new Uint8Array(16);
  new DataView(buf.buffer).setBigInt64(0, 5n, true);
  new DataView(buf.buffer).setBigInt64(8, 2n ** 40n, true);
  const bytes = rawFile(JSON.stringify({ num_batches_tracked: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }), buf);
  // The header alone is valid: the layout can be checked before any value is decoded.
  const h = readSafetensorsHeader(bytes);
  assert.deepEqual({ ...headerLayout(h) }, { num_batches_tracked: { shape: [2], dtype: 'I64' } });
  rejects(bytes, /tensor "num_batches_tracked" \(I64\) holds 1099511627776 at index 1; Setu holds integer tensors exactly within ±16777216/);
  assert.throws(() => encodeSafetensors({ n: tensor([1], new Float32Array([300]), 'U8') }), /value 300 at index 0 does not fit U8/);
  const neg = new Uint8Array(8);
  new DataView(neg.buffer).setBigInt64(0, -3n, true);
  assert.deepEqual([...decodeSafetensors(rawFile(JSON.stringify({ n: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }), neg)).weights.n!.data], [-3]);
});

test('tensor names that are Object.prototype keys are ordinary names, in and out', () => {
  const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
  const w = mapWeights(names, (k) => tensor([1], new Float32Array([k.length])));
  const bytes = encodeSafetensors(w);
  const back = decodeSafetensors(bytes).weights;
  assert.equal(Object.getPrototypeOf(back), null);
  assert.deepEqual(Object.keys(back).sort(), [...names].sort());
  for (const k of names) assert.deepEqual([...back[k]!.data], [k.length]);
  assert.equal(({} as Record<string, unknown>).constructor, Object, 'Object.prototype is untouched');
  // A layout lookup never finds Object.prototype's members.
  assert.equal(layoutMismatch(back, layoutOf(mapWeights(['constructor'], () => tensor([1])))), 'unexpected tensor "__proto__"');
  assert.equal(layoutMismatch(mapWeights(['x'], () => tensor([1])), layoutOf(back)), 'missing tensor "__proto__"');
});
