/**
 * Wrapping 32-bit vector add/sub in WebAssembly SIMD (i32x4), for the mask hot path: a client adds k + 1 masks
 * of the full vector length. The module is 6 small functions' worth of bytes, assembled here so nothing is
 * downloaded or built. If the runtime lacks WebAssembly SIMD, `simdKernel()` returns null and callers use the
 * plain JavaScript loop (same results, tested against each other).
 *
 * Memory layout: one memory of `PAGES` pages; callers place their operands anywhere inside it.
 * add(a, b, n): for 16-byte chunks, [a..a+n) += [b..b+n) (mod 2^32 per lane); sub likewise with −=.
 */

/** 32 pages = 2 MiB: room for an accumulator block and a mask block of 256 KiB each, with margin. */
export const PAGES = 32;

function uleb(n: number): number[] {
  const out: number[] = [];
  do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b); } while (n);
  return out;
}
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const str = (s: string) => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];

/** Body of add/sub: params (a, b, n) i32, one local `end`. `op` is the SIMD opcode (LEB128) after 0xfd. */
function body(op: number[]): number[] {
  const code = [
    0x01, 0x01, 0x7f, //                 one local: i32 (index 3 = end)
    0x20, 0x00, 0x20, 0x02, 0x6a, 0x21, 0x03, // end = a + n
    0x02, 0x40, //                       block
    0x03, 0x40, //                         loop
    0x20, 0x00, 0x20, 0x03, 0x4f, 0x0d, 0x01, // if a >= end: break
    0x20, 0x00, //                           address for the store
    0x20, 0x00, 0xfd, 0x00, 0x04, 0x00, //   v128.load [a]
    0x20, 0x01, 0xfd, 0x00, 0x04, 0x00, //   v128.load [b]
    0xfd, ...op, //                          i32x4.add / i32x4.sub
    0xfd, 0x0b, 0x04, 0x00, //               v128.store [a]
    0x20, 0x00, 0x41, 0x10, 0x6a, 0x21, 0x00, // a += 16
    0x20, 0x01, 0x41, 0x10, 0x6a, 0x21, 0x01, // b += 16
    0x0c, 0x00, //                           continue
    0x0b, 0x0b, 0x0b, //                   end loop, end block, end function
  ];
  return [...uleb(code.length), ...code];
}

function moduleBytes(): Uint8Array {
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x00]), // type: (i32 i32 i32) → ()
    ...section(3, [0x02, 0x00, 0x00]), //                      two functions of type 0
    ...section(5, [0x01, 0x00, ...uleb(PAGES)]), //            memory, min PAGES
    ...section(7, [0x03, ...str('mem'), 0x02, 0x00, ...str('add'), 0x00, 0x00, ...str('sub'), 0x00, 0x01]),
    ...section(10, [0x02, ...body([0xae, 0x01]), ...body([0xb1, 0x01])]), // i32x4.add = 174, i32x4.sub = 177
  ];
  return Uint8Array.from(bytes);
}

/** The slice of the WebAssembly API used here (the project's TypeScript libs carry no WebAssembly typings). */
interface Wasm {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (m: object) => { exports: Record<string, unknown> };
}

export interface SimdKernel {
  mem: { buffer: ArrayBuffer };
  add(a: number, b: number, nBytes: number): void;
  sub(a: number, b: number, nBytes: number): void;
}

let kernel: SimdKernel | null | undefined;

/** The kernel, or null where WebAssembly SIMD is unavailable (or SETU_NO_SIMD=1, to test the fallback). */
export function simdKernel(): SimdKernel | null {
  if (kernel !== undefined) return kernel;
  try {
    if (process.env['SETU_NO_SIMD'] === '1') throw new Error('disabled');
    const W = (globalThis as unknown as { WebAssembly?: Wasm }).WebAssembly;
    if (!W) throw new Error('no WebAssembly');
    const inst = new W.Instance(new W.Module(moduleBytes()));
    const e = inst.exports as unknown as SimdKernel;
    kernel = { mem: e.mem, add: e.add, sub: e.sub };
  } catch {
    kernel = null;
  }
  return kernel;
}
