/**
 * The few SVG primitives the plots share: linear and log scales with readable ("nice") ticks, text
 * escaping, a frame with axes. Plain strings in, a standalone SVG document out; no DOM, so the CLI
 * writes files and the dashboard can inline the same markup.
 */

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Fixed precision for coordinates: small files, stable output. */
export const f = (v: number): string => (Math.round(v * 100) / 100).toString();

export interface Scale {
  (v: number): number;
  ticks: number[];
  label(v: number): string;
}

/** Tick step 1, 2 or 5 × 10^k giving about `count` ticks over [lo, hi]. */
export function niceStep(lo: number, hi: number, count = 5): number {
  const raw = (hi - lo) / Math.max(1, count);
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

function fmt(v: number, step: number): string {
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(digits, 10));
}

/** Maps [lo, hi] (widened to nice ticks when `nice`) onto [a, b] pixels. */
export function linearScale(lo: number, hi: number, a: number, b: number, opts: { nice?: boolean; count?: number } = {}): Scale {
  if (!(hi > lo)) {
    const c = Number.isFinite(lo) ? lo : 0;
    lo = c - 0.5;
    hi = c + 0.5;
  }
  const step = niceStep(lo, hi, opts.count ?? 5);
  if (opts.nice ?? true) {
    lo = Math.floor(lo / step + 1e-9) * step;
    hi = Math.ceil(hi / step - 1e-9) * step;
  }
  const s = ((v: number) => a + ((v - lo) / (hi - lo)) * (b - a)) as Scale;
  s.ticks = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) s.ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  s.label = (v) => fmt(v, step);
  return s;
}

/** Log scale over [lo, hi] (both > 0), ticks at 1, 2, 5 × 10^k inside. */
export function logScale(lo: number, hi: number, a: number, b: number): Scale {
  if (!(lo > 0) || !(hi > lo)) throw new Error(`logScale: needs 0 < lo < hi, got [${lo}, ${hi}]`);
  const L = Math.log(lo), H = Math.log(hi);
  const s = ((v: number) => a + ((Math.log(v) - L) / (H - L)) * (b - a)) as Scale;
  s.ticks = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) for (const m of [1, 2, 5]) {
    const v = m * 10 ** k;
    if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) s.ticks.push(v);
  }
  s.label = (v) => (v >= 1 ? String(Number(v.toPrecision(3))) : v.toPrecision(1));
  return s;
}

/** A categorical palette that stays apart for colour-blind readers (Okabe & Ito). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442', '#000000'];

export interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export function open(fr: Frame, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${fr.width}" height="${fr.height}" viewBox="0 0 ${fr.width} ${fr.height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${f(fr.width / 2)}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
}

/** Grid lines, tick labels and axis titles. */
export function axes(fr: Frame, x: Scale | null, y: Scale | null, xLabel: string, yLabel: string): string[] {
  const out: string[] = [];
  const x0 = fr.left, x1 = fr.width - fr.right, y0 = fr.height - fr.bottom, y1 = fr.top;
  if (y) for (const t of y.ticks) out.push(`<line x1="${x0}" x2="${x1}" y1="${f(y(t))}" y2="${f(y(t))}" stroke="#e5e5e5"/>`, `<text x="${x0 - 6}" y="${f(y(t) + 4)}" text-anchor="end">${esc(y.label(t))}</text>`);
  if (x) for (const t of x.ticks) out.push(`<line x1="${f(x(t))}" x2="${f(x(t))}" y1="${y1}" y2="${y0}" stroke="#e5e5e5"/>`, `<text x="${f(x(t))}" y="${y0 + 16}" text-anchor="middle">${esc(x.label(t))}</text>`);
  out.push(`<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#333"/>`, `<line x1="${x0}" x2="${x0}" y1="${y1}" y2="${y0}" stroke="#333"/>`);
  if (xLabel) out.push(`<text x="${f((x0 + x1) / 2)}" y="${y0 + 34}" text-anchor="middle">${esc(xLabel)}</text>`);
  if (yLabel) out.push(`<text transform="translate(14 ${f((y0 + y1) / 2)}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  return out;
}

/** A legend row under the plot area. */
export function legend(fr: Frame, items: Array<{ label: string; colour: string }>, y = fr.height - 10): string[] {
  let x = fr.left;
  return items.flatMap((it) => {
    const out = [`<rect x="${f(x)}" y="${y - 9}" width="12" height="12" fill="${it.colour}"/>`, `<text x="${f(x + 16)}" y="${y + 1}">${esc(it.label)}</text>`];
    x += 28 + 6.5 * it.label.length;
    return out;
  });
}
