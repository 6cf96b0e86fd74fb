/**
 * SS-MIX2 files are written in ISO-2022-JP (MSH-18 `~ISO IR87`, MSH-20 `ISO 2022-1994`: ASCII plus
 * JIS X 0208 behind ISO 2022 escapes). Decoding is the WHATWG decoder Node ships (ICU), in fatal mode
 * so a byte that is not valid in the encoding is an error, not a replacement character. A site whose
 * gateway writes Shift_JIS or UTF-8 instead says so in its config.
 *
 * The encoder (for the heart converter) is derived from that same decoder: every JIS X 0208 cell is
 * decoded once and the table inverted, so the two agree by construction; Python's own codec
 * cross-checks both in the tests.
 */
export const ENCODINGS = ['iso-2022-jp', 'shift_jis', 'utf-8'] as const;
export type Ss2Encoding = (typeof ENCODINGS)[number];

export function decodeText(bytes: Uint8Array, encoding: Ss2Encoding): string {
  return new TextDecoder(encoding, { fatal: true }).decode(bytes);
}

let table: Map<string, [number, number]> | undefined;

function jisTable(): Map<string, [number, number]> {
  if (table) return table;
  const dec = new TextDecoder('iso-2022-jp', { fatal: true });
  table = new Map();
  for (let a = 0x21; a <= 0x7e; a++) {
    for (let b = 0x21; b <= 0x7e; b++) {
      let ch: string;
      try {
        ch = dec.decode(Uint8Array.of(0x1b, 0x24, 0x42, a, b, 0x1b, 0x28, 0x42));
      } catch {
        continue; // an unassigned cell
      }
      if (ch.length === 1 && !table.has(ch)) table.set(ch, [a, b]);
    }
  }
  return table;
}

/** ISO-2022-JP bytes of `text`: ASCII as is, other characters from JIS X 0208 (an error names one outside it). */
export function encodeIso2022jp(text: string): Uint8Array {
  const out: number[] = [];
  let jis = false;
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) {
      if (c === 0x1b) throw new Error('ESC cannot be written as text in ISO-2022-JP');
      if (jis) out.push(0x1b, 0x28, 0x42), (jis = false);
      out.push(c);
      continue;
    }
    const cell = jisTable().get(ch);
    if (!cell) throw new Error(`${JSON.stringify(ch)} (U+${c.toString(16).toUpperCase()}) is not in JIS X 0208, so ISO-2022-JP cannot hold it`);
    if (!jis) out.push(0x1b, 0x24, 0x42), (jis = true);
    out.push(cell[0], cell[1]);
  }
  if (jis) out.push(0x1b, 0x28, 0x42);
  return Uint8Array.from(out);
}
