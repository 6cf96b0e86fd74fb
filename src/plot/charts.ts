/**
 * Plots biostatisticians read: Kaplan–Meier curves with confidence bands and censoring marks, forest
 * plots of hazard ratios, histograms, and a dot-and-whisker chart (benchmarks: mean ± sd per method).
 * Each takes plain numbers and returns a standalone SVG document.
 */
import { axes, esc, f, legend, linearScale, logScale, open, PALETTE, type Frame } from './svg.js';

export interface KmSeries {
  label: string;
  time: readonly number[];
  surv: readonly number[];
  /** Confidence band (NaN where undefined: the band stops there). */
  lower?: readonly number[];
  upper?: readonly number[];
  /** Times of censorings, marked with a tick on the curve. */
  censored?: readonly number[];
}

/** Survival value just after each step at time t (the curve starts at 1 at time 0). */
function stepAt(time: readonly number[], surv: readonly number[], t: number): number {
  let v = 1;
  for (let i = 0; i < time.length && time[i]! <= t; i++) v = surv[i]!;
  return v;
}

/** Corner points of a step curve starting at (0, 1) and ending at its last time. */
function stepPoints(time: readonly number[], value: readonly number[]): Array<[number, number]> {
  const pts: Array<[number, number]> = [[0, 1]];
  let prev = 1;
  time.forEach((t, i) => {
    pts.push([t, prev], [t, value[i]!]);
    prev = value[i]!;
  });
  return pts;
}

function stepPath(time: readonly number[], value: readonly number[], x: (v: number) => number, y: (v: number) => number, start = 1): string {
  let d = `M ${f(x(0))} ${f(y(start))}`, prev = start;
  time.forEach((t, i) => {
    const v = value[i]!;
    d += ` H ${f(x(t))}`;
    if (v !== prev) d += ` V ${f(y(v))}`;
    prev = v;
  });
  return d;
}

export function kaplanMeierSvg(opts: { title: string; series: KmSeries[]; xLabel?: string; yLabel?: string; width?: number; height?: number }): string {
  const fr: Frame = { width: opts.width ?? 640, height: opts.height ?? 400, left: 56, right: 20, top: 34, bottom: 64 };
  const tMax = Math.max(1, ...opts.series.flatMap((s) => s.time));
  const x = linearScale(0, tMax, fr.left, fr.width - fr.right);
  const y = linearScale(0, 1, fr.height - fr.bottom, fr.top, { count: 5 });
  const out = [...open(fr, opts.title), ...axes(fr, x, y, opts.xLabel ?? 'time', opts.yLabel ?? 'survival probability')];
  opts.series.forEach((s, k) => {
    const c = PALETTE[k % PALETTE.length]!;
    if (s.lower && s.upper) {
      // The band: the upper step curve forward, the lower one back, over the times where both limits exist.
      const idx = s.time.map((_, i) => i).filter((i) => Number.isFinite(s.lower![i]!) && Number.isFinite(s.upper![i]!));
      if (idx.length) {
        const t = idx.map((i) => s.time[i]!);
        const up = stepPoints(t, idx.map((i) => s.upper![i]!)), down = stepPoints(t, idx.map((i) => s.lower![i]!)).reverse();
        const d = [...up, ...down].map(([a, b], j) => `${j ? 'L' : 'M'} ${f(x(a))} ${f(y(b))}`).join(' ');
        out.push(`<path d="${d} Z" fill="${c}" fill-opacity="0.15" stroke="none"><title>${esc(s.label)}: confidence band</title></path>`);
      }
    }
    out.push(`<path d="${stepPath(s.time, s.surv, x, y)}" fill="none" stroke="${c}" stroke-width="2"><title>${esc(s.label)}</title></path>`);
    for (const t of s.censored ?? []) {
      const v = stepAt(s.time, s.surv, t);
      out.push(`<line x1="${f(x(t))}" x2="${f(x(t))}" y1="${f(y(v) - 4)}" y2="${f(y(v) + 4)}" stroke="${c}"/>`);
    }
  });
  out.push(...legend(fr, opts.series.map((s, k) => ({ label: s.label, colour: PALETTE[k % PALETTE.length]! }))), '</svg>');
  return out.join('\n') + '\n';
}

export interface ForestRow {
  label: string;
  estimate: number;
  lower: number;
  upper: number;
  /** Shown at the right, e.g. "p = 0.012". */
  note?: string;
}

/** Hazard ratios (or any ratio) with confidence intervals on a log axis, the reference line at 1. */
export function forestSvg(opts: { title: string; rows: ForestRow[]; xLabel?: string; width?: number }): string {
  const rowH = 26;
  const labelW = Math.max(80, 7 * Math.max(...opts.rows.map((r) => r.label.length), 4));
  const fr: Frame = { width: opts.width ?? 720, height: 34 + 30 + rowH * opts.rows.length + 44, left: labelW + 20, right: 150, top: 44, bottom: 44 };
  const vals = opts.rows.flatMap((r) => [r.lower, r.upper, r.estimate]).filter((v) => v > 0 && Number.isFinite(v));
  const lo = Math.min(1, ...vals) / 1.15, hi = Math.max(1, ...vals) * 1.15;
  const x = logScale(lo, hi, fr.left, fr.width - fr.right);
  const out = [...open(fr, opts.title), ...axes(fr, x, null, opts.xLabel ?? 'hazard ratio (95% CI, log scale)', '')];
  out.push(`<line x1="${f(x(1))}" x2="${f(x(1))}" y1="${fr.top}" y2="${fr.height - fr.bottom}" stroke="#888" stroke-dasharray="4 3"/>`);
  opts.rows.forEach((r, i) => {
    const cy = fr.top + rowH * (i + 0.5);
    const clip = (v: number) => Math.min(hi, Math.max(lo, v));
    out.push(
      `<text x="${fr.left - 10}" y="${f(cy + 4)}" text-anchor="end">${esc(r.label)}</text>`,
      `<line x1="${f(x(clip(r.lower)))}" x2="${f(x(clip(r.upper)))}" y1="${f(cy)}" y2="${f(cy)}" stroke="#1f4e9c" stroke-width="2"/>`,
      `<rect x="${f(x(clip(r.estimate)) - 5)}" y="${f(cy - 5)}" width="10" height="10" fill="#1f4e9c"><title>${esc(`${r.label}: ${r.estimate.toPrecision(4)} (${r.lower.toPrecision(4)}–${r.upper.toPrecision(4)})`)}</title></rect>`,
      `<text x="${fr.width - fr.right + 10}" y="${f(cy + 4)}">${esc(`${r.estimate.toFixed(2)} (${r.lower.toFixed(2)}–${r.upper.toFixed(2)})${r.note ? `  ${r.note}` : ''}`)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Bars over [edges[i], edges[i+1]); a null count (suppressed) is drawn as a hatched stub. */
export function histogramSvg(opts: { title: string; edges: readonly number[]; counts: ReadonlyArray<number | null>; xLabel?: string; yLabel?: string; width?: number; height?: number }): string {
  if (opts.counts.length !== opts.edges.length - 1) throw new Error(`histogramSvg: ${opts.counts.length} counts for ${opts.edges.length - 1} bins`);
  const fr: Frame = { width: opts.width ?? 640, height: opts.height ?? 360, left: 56, right: 20, top: 34, bottom: 56 };
  const x = linearScale(opts.edges[0]!, opts.edges[opts.edges.length - 1]!, fr.left, fr.width - fr.right, { nice: false });
  const y = linearScale(0, Math.max(1, ...opts.counts.map((c) => c ?? 0)), fr.height - fr.bottom, fr.top);
  const out = [...open(fr, opts.title), ...axes(fr, x, y, opts.xLabel ?? '', opts.yLabel ?? 'count')];
  out.push('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>');
  opts.counts.forEach((c, i) => {
    const x0 = x(opts.edges[i]!), x1 = x(opts.edges[i + 1]!);
    const range = `[${opts.edges[i]}, ${opts.edges[i + 1]})`;
    if (c === null) out.push(`<rect x="${f(x0 + 0.5)}" y="${f(y(0) - 8)}" width="${f(Math.max(0.5, x1 - x0 - 1))}" height="8" fill="url(#hatch)"><title>${esc(`${range}: suppressed`)}</title></rect>`);
    else out.push(`<rect x="${f(x0 + 0.5)}" y="${f(y(c))}" width="${f(Math.max(0.5, x1 - x0 - 1))}" height="${f(y(0) - y(c))}" fill="#0072B2"><title>${esc(`${range}: ${c}`)}</title></rect>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface DotRow {
  label: string;
  mean: number;
  lower: number;
  upper: number;
}

/** One dot and whisker per row (e.g. a method's mean ± sd over seeds), rows along x. */
export function dotWhiskerSvg(opts: { title: string; rows: DotRow[]; yLabel?: string; height?: number }): string {
  const fr: Frame = { width: 90 + 64 * opts.rows.length, height: opts.height ?? 380, left: 60, right: 20, top: 40, bottom: 90 };
  const vals = opts.rows.flatMap((r) => [r.lower, r.upper]).filter(Number.isFinite);
  const y = linearScale(Math.min(...vals), Math.max(...vals), fr.height - fr.bottom, fr.top);
  const out = [...open(fr, opts.title), ...axes(fr, null, y, '', opts.yLabel ?? '')];
  opts.rows.forEach((r, i) => {
    const cx = fr.left + 32 + i * 64;
    out.push(
      `<line x1="${cx}" x2="${cx}" y1="${f(y(r.upper))}" y2="${f(y(r.lower))}" stroke="#1f4e9c" stroke-width="2"/>`,
      `<circle cx="${cx}" cy="${f(y(r.mean))}" r="4" fill="#1f4e9c"><title>${esc(`${r.label}: ${r.mean.toPrecision(4)} [${r.lower.toPrecision(4)}, ${r.upper.toPrecision(4)}]`)}</title></circle>`,
      `<text x="${cx}" y="${fr.height - fr.bottom + 16}" text-anchor="end" transform="rotate(-35 ${cx} ${fr.height - fr.bottom + 16})">${esc(r.label)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
