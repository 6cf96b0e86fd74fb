/** Fixed-width text tables for terminals. */
export function table(headers: string[], rows: (string | number)[][], align: ('l' | 'r')[] = []): string {
  const cells = rows.map((r) => r.map((c) => String(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((c, i) => ((align[i] ?? (i === 0 ? 'l' : 'r')) === 'l' ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [fmt(headers), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.map(fmt)].join('\n');
}

export const pct = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '–' : (v * 100).toFixed(1) + '%');
export const f4 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(4));
