/**
 * Exact federated Cox proportional hazards by Newton–Raphson, as R's coxph (Breslow or Efron ties;
 * one baseline per site, or one shared baseline).
 *
 * Every iteration the coordinator sends β; each site answers with sums over its own rows, and the
 * coordinator adds them into the partial log-likelihood ℓ(β), its gradient U and information I = −∂²ℓ,
 * exactly as if the rows were pooled:
 * - strata 'site' (the multi-centre model): each site's partial likelihood involves only its own risk
 *   sets, so it sends its own (ℓ, U, I) — 1 + p + p² numbers — and the sums are the stratified model's.
 * - strata 'none': the risk sets span sites, so a site sends, at each of its distinct times t, the
 *   risk-set sums S0 = Σ_{T ≥ t} e^{xβ}, S1 = Σ x e^{xβ}, S2 = Σ x xᵀ e^{xβ}, its deaths d(t) and (Efron)
 *   the deaths' D0, D1, D2, plus Σ x over all its deaths. The coordinator evaluates every site's step
 *   functions at the pooled event times. This reveals much more (see docs/analytics.md), so a site sends
 *   it only when its policy sets `allowRiskSetSums`; risk sets below minCellCount are never sent (the site
 *   stops there, and its remaining subjects count as censored at its last released time).
 *
 * Newton–Raphson follows coxph.fit: start at β = 0; β ← β + I⁻¹U; when ℓ falls, halve the step back
 * toward the previous β; stop when |1 − ℓ_old/ℓ_new| ≤ tolerance. Standard errors from I(β̂)⁻¹; Wald
 * tests per coefficient and overall; the likelihood-ratio test 2(ℓ(β̂) − ℓ(0)); the score test
 * U(0)ᵀ I(0)⁻¹ U(0).
 */
import { Type, type Static } from '@sinclair/typebox';
import { chiSquareSf, normalQuantile, twoSidedP } from '../distributions.js';
import { cholesky, choleskySolve, inverseSpd, quadForm } from '../linalg.js';
import { QueryRefused, type SiteTable } from '../columns.js';
import { checkReleased, releaseCount, releaseRiskSet, type ReleasedCount } from '../release.js';
import type { AnalyticsPolicy, CoxQuery } from '../spec.js';
import type { Ties, CoxResult } from '../results.js';
export type { Ties, CoxResult } from '../results.js';


/** Complete rows of the covariates, encoded (categorical: indicators of every level but the first). */
export interface CoxDesign {
  names: string[];
  p: number;
  n: number;
  /** n × p row-major. */
  x: Float64Array;
  time: Float64Array;
  event: Uint8Array;
}

export function coxDesign(table: SiteTable, covariates: readonly string[], resolution?: number): CoxDesign {
  const { time, event } = table.survival(resolution);
  const cols = covariates.map((c) => {
    const t = table.type(c, undefined, 'covariate');
    return t.type === 'numeric' ? { kind: 'numeric' as const, name: c, v: table.numeric(c, 'covariate') } : { kind: 'categorical' as const, name: c, ...table.categorical(c, 'covariate') };
  });
  const names = cols.flatMap((c) => (c.kind === 'numeric' ? [c.name] : c.levels.slice(1).map((l) => `${c.name}=${l}`)));
  const p = names.length;
  const rows: number[] = [];
  for (let r = 0; r < table.n; r++) {
    if (time[r] === null || event[r] === null) continue;
    if (cols.every((c) => (c.kind === 'numeric' ? c.v[r] !== null : c.codes[r]! >= 0))) rows.push(r);
  }
  const x = new Float64Array(rows.length * p);
  rows.forEach((r, i) => {
    let o = i * p;
    for (const c of cols) {
      if (c.kind === 'numeric') x[o++] = c.v[r]!;
      else for (let l = 1; l < c.levels.length; l++) x[o++] = c.codes[r] === l ? 1 : 0;
    }
  });
  return { names, p, n: rows.length, x, time: Float64Array.from(rows, (r) => time[r]!), event: Uint8Array.from(rows, (r) => event[r]!) };
}

/** Sums at one distinct time t of a set of rows: the risk set {T ≥ t} and the deaths at t. */
export interface TimeSums {
  time: number;
  atRisk: number;
  deaths: number;
  s0: number;
  s1: number[];
  s2: number[];
  d0: number;
  d1: number[];
  d2: number[];
  /** Σ x over the deaths at t (kept at the site; only its total over released times leaves). */
  x1: number[];
}

/** Per distinct time (ascending) risk-set and death sums at β, plus Σ x over all deaths. */
export function timeSums(d: CoxDesign, beta: readonly number[]): { entries: TimeSums[]; deathX: number[] } {
  const { p, n, x } = d;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => d.time[b]! - d.time[a]!);
  const s0 = { v: 0 }, s1 = new Array<number>(p).fill(0), s2 = new Array<number>(p * p).fill(0);
  const deathX = new Array<number>(p).fill(0);
  const entries: TimeSums[] = [];
  let atRisk = 0;
  for (let k = 0; k < n; ) {
    const t = d.time[order[k]!]!;
    let deaths = 0, d0 = 0;
    const d1 = new Array<number>(p).fill(0), d2 = new Array<number>(p * p).fill(0), x1 = new Array<number>(p).fill(0);
    while (k < n && d.time[order[k]!] === t) {
      const i = order[k]!;
      let eta = 0;
      for (let j = 0; j < p; j++) eta += x[i * p + j]! * beta[j]!;
      const r = Math.exp(eta);
      s0.v += r;
      for (let a = 0; a < p; a++) {
        const xa = x[i * p + a]!;
        s1[a]! += xa * r;
        for (let b = 0; b < p; b++) s2[a * p + b]! += xa * x[i * p + b]! * r;
      }
      if (d.event[i] === 1) {
        deaths++;
        d0 += r;
        for (let a = 0; a < p; a++) {
          const xa = x[i * p + a]!;
          deathX[a]! += xa;
          x1[a]! += xa;
          d1[a]! += xa * r;
          for (let b = 0; b < p; b++) d2[a * p + b]! += xa * x[i * p + b]! * r;
        }
      }
      atRisk++;
      k++;
    }
    entries.push({ time: t, atRisk, deaths, s0: s0.v, s1: [...s1], s2: [...s2], d0, d1, d2, x1 });
  }
  entries.reverse();
  return { entries, deathX };
}

export interface CoxSums {
  loglik: number;
  /** U = ∂ℓ/∂β. */
  gradient: number[];
  /** I = −∂²ℓ/∂β², p × p row-major. */
  information: number[];
}

/** ℓ, U, I of one risk-set stratum from its per-time sums (only times with deaths contribute). */
export function coxTerms(entries: readonly TimeSums[], deathX: readonly number[], beta: readonly number[], ties: Ties): CoxSums {
  const p = beta.length;
  let loglik = 0;
  for (let j = 0; j < p; j++) loglik += beta[j]! * deathX[j]!;
  const gradient = [...deathX], information = new Array<number>(p * p).fill(0);
  for (const e of entries) {
    const d = e.deaths;
    if (d === 0) continue;
    // Efron: the l-th of d tied deaths sees the risk set less l/d of the deaths' weight; Breslow: all of it.
    const steps = ties === 'efron' ? d : 1;
    for (let l = 0; l < steps; l++) {
      const f = ties === 'efron' ? l / d : 0, w = ties === 'efron' ? 1 : d;
      const s0 = e.s0 - f * e.d0;
      loglik -= w * Math.log(s0);
      for (let a = 0; a < p; a++) {
        const m1a = (e.s1[a]! - f * e.d1[a]!) / s0;
        gradient[a]! -= w * m1a;
        for (let b = 0; b < p; b++) {
          const m1b = (e.s1[b]! - f * e.d1[b]!) / s0;
          information[a * p + b]! += w * ((e.s2[a * p + b]! - f * e.d2[a * p + b]!) / s0 - m1a * m1b);
        }
      }
    }
  }
  return { loglik, gradient, information };
}

// ---- what leaves a site ---------------------------------------------------------------------------------------

const strict = { additionalProperties: false } as const;
const Released = Type.Unsafe<ReleasedCount>(Type.Integer({ minimum: 0 }));
const Num = Type.Number();
const Vec = Type.Array(Num);

export const CoxStratumAnswerSchema = Type.Object(
  {
    kind: Type.Literal('cox-stratum'),
    minCellCount: Type.Integer({ minimum: 1 }),
    names: Type.Array(Type.String()),
    beta: Vec,
    /** Complete rows and events at this site; null = below the site's minimum. */
    n: Type.Union([Released, Type.Null()]),
    events: Type.Union([Released, Type.Null()]),
    /** This site's own ℓ, U, I at β; null when it has fewer than minCellCount complete rows (it sits the fit out). */
    sums: Type.Union([Type.Object({ loglik: Num, gradient: Vec, information: Vec }, strict), Type.Null()]),
  },
  strict,
);

export const CoxRiskSetsAnswerSchema = Type.Object(
  {
    kind: Type.Literal('cox-risk-sets'),
    minCellCount: Type.Integer({ minimum: 1 }),
    names: Type.Array(Type.String()),
    beta: Vec,
    times: Vec,
    atRisk: Type.Array(Released),
    deaths: Type.Array(Type.Integer({ minimum: 0 })),
    s0: Vec,
    s1: Type.Array(Vec),
    s2: Type.Array(Vec),
    /** Efron only (empty arrays for Breslow). */
    d0: Vec,
    d1: Type.Array(Vec),
    d2: Type.Array(Vec),
    /** Σ x over the deaths at the released times. */
    deathX: Vec,
    truncated: Type.Boolean(),
  },
  strict,
);
export type CoxStratumAnswer = Static<typeof CoxStratumAnswerSchema>;
export type CoxRiskSetsAnswer = Static<typeof CoxRiskSetsAnswerSchema>;
export type CoxAnswer = CoxStratumAnswer | CoxRiskSetsAnswer;

function checkBeta(beta: readonly number[], p: number): void {
  if (beta.length !== p || beta.some((b) => !Number.isFinite(b))) throw new QueryRefused('policy', `the coordinator sent β of length ${beta.length}; this query has ${p} coefficients`);
}

/** The site's answer at β: its stratum's sums, or its guarded per-time risk-set sums. */
export function siteCox(q: CoxQuery, table: SiteTable, policy: AnalyticsPolicy, beta: readonly number[] | undefined): CoxAnswer {
  if (policy.dp) throw new QueryRefused('policy', 'this site adds DP noise to every release and the Cox model has no DP mechanism here');
  const d = coxDesign(table, q.covariates, q.timeResolution);
  const b = beta ?? new Array<number>(d.p).fill(0);
  checkBeta(b, d.p);
  const ties = q.ties ?? 'efron';
  const events = d.event.reduce((a, e) => a + e, 0);
  if ((q.strata ?? 'site') === 'site') {
    const ok = d.n >= policy.minCellCount;
    const { entries, deathX } = timeSums(d, b);
    return {
      kind: 'cox-stratum', minCellCount: policy.minCellCount, names: d.names, beta: [...b],
      n: releaseCount(d.n, { minCellCount: policy.minCellCount, suppressZeros: true }), events: releaseCount(events, policy),
      sums: ok ? coxTerms(entries, deathX, b, ties) : null,
    };
  }
  if (!policy.allowRiskSetSums) throw new QueryRefused('policy', "a Cox model with one shared baseline (strata: none) needs this site's risk-set sums at each of its follow-up times, which its policy does not allow (set allowRiskSetSums: true, or ask for strata: site)");
  const { entries } = timeSums(d, b);
  const out: CoxRiskSetsAnswer = {
    kind: 'cox-risk-sets', minCellCount: policy.minCellCount, names: d.names, beta: [...b],
    times: [], atRisk: [], deaths: [], s0: [], s1: [], s2: [], d0: [], d1: [], d2: [], deathX: new Array<number>(d.p).fill(0), truncated: false,
  };
  for (const e of entries) {
    const n = releaseRiskSet(e.atRisk, policy.minCellCount);
    if (n === null) {
      out.truncated = true;
      break;
    }
    out.times.push(e.time);
    out.atRisk.push(n);
    out.deaths.push(e.deaths);
    out.s0.push(e.s0);
    out.s1.push(e.s1);
    out.s2.push(e.s2);
    if (ties === 'efron') {
      out.d0.push(e.d0);
      out.d1.push(e.d1);
      out.d2.push(e.d2);
    }
    e.x1.forEach((v, j) => (out.deathX[j]! += v));
  }
  return out;
}

export function coxAnswerProblems(a: CoxAnswer): string[] {
  if (a.kind === 'cox-stratum') return checkReleased([a.n, a.events], a.minCellCount, 'counts', { zerosAllowed: true, noisy: false });
  return checkReleased(a.atRisk, a.minCellCount, 'atRisk', { zerosAllowed: false, noisy: false });
}

// ---- coordinator ------------------------------------------------------------------------------------------------

/** Adds the sites' answers (all at the same β) into the pooled ℓ, U, I. */
export function combineCox(answers: Record<string, CoxAnswer>, ties: Ties, beta: readonly number[]): CoxSums & { n: number; events: number; excluded: string[]; truncated: string[] } {
  const ids = Object.keys(answers).sort();
  const p = beta.length;
  for (const id of ids) {
    const a = answers[id]!;
    if (a.beta.length !== p || a.beta.some((b, j) => b !== beta[j])) throw new Error(`combineCox: site ${id} answered at a different β`);
  }
  const excluded: string[] = [], truncated: string[] = [];
  let n = 0, events = 0;
  const kinds = new Set(ids.map((id) => answers[id]!.kind));
  if (kinds.size > 1) throw new Error('combineCox: sites answered with different kinds of sums');
  if (kinds.has('cox-stratum')) {
    const out: CoxSums = { loglik: 0, gradient: new Array<number>(p).fill(0), information: new Array<number>(p * p).fill(0) };
    for (const id of ids) {
      const a = answers[id] as CoxStratumAnswer;
      if (!a.sums) {
        excluded.push(id);
        continue;
      }
      n += a.n ?? 0;
      events += a.events ?? 0;
      out.loglik += a.sums.loglik;
      a.sums.gradient.forEach((g, j) => (out.gradient[j]! += g));
      a.sums.information.forEach((v, j) => (out.information[j]! += v));
    }
    return { ...out, n, events, excluded, truncated };
  }
  // One shared baseline: evaluate every site's step functions at the pooled event times.
  const sites = ids.map((id) => answers[id] as CoxRiskSetsAnswer);
  const deathX = new Array<number>(p).fill(0);
  ids.forEach((id, s) => {
    const a = sites[s]!;
    if (a.truncated) truncated.push(id);
    n += a.atRisk[0] ?? 0;
    events += a.deaths.reduce((x, y) => x + y, 0);
    a.deathX.forEach((v, j) => (deathX[j]! += v));
  });
  const eventTimes = [...new Set(sites.flatMap((a) => a.times.filter((_, k) => a.deaths[k]! > 0)))].sort((a, b) => a - b);
  const cursor = sites.map(() => 0);
  const entries: TimeSums[] = eventTimes.map((t) => {
    const e: TimeSums = { time: t, atRisk: 0, deaths: 0, s0: 0, s1: new Array<number>(p).fill(0), s2: new Array<number>(p * p).fill(0), d0: 0, d1: new Array<number>(p).fill(0), d2: new Array<number>(p * p).fill(0), x1: [] };
    sites.forEach((a, s) => {
      while (cursor[s]! < a.times.length && a.times[cursor[s]!]! < t) cursor[s]!++;
      const k = cursor[s]!;
      if (k >= a.times.length) return;
      e.atRisk += a.atRisk[k]!;
      e.s0 += a.s0[k]!;
      a.s1[k]!.forEach((v, j) => (e.s1[j]! += v));
      a.s2[k]!.forEach((v, j) => (e.s2[j]! += v));
      if (a.times[k] === t) {
        e.deaths += a.deaths[k]!;
        if (ties === 'efron') {
          e.d0 += a.d0[k]!;
          a.d1[k]!.forEach((v, j) => (e.d1[j]! += v));
          a.d2[k]!.forEach((v, j) => (e.d2[j]! += v));
        }
      }
    });
    return e;
  });
  return { ...coxTerms(entries, deathX, beta, ties), n, events, excluded, truncated };
}


export interface CoxNewtonState {
  p: number;
  tolerance: number;
  maxIterations: number;
  current: number[];
  best: { beta: number[]; sums: CoxSums } | null;
  initial: CoxSums | null;
  halvings: number;
  iterations: number;
  done: boolean;
  converged: boolean;
}

/**
 * The coordinator's Newton–Raphson, one request at a time: `beta()` is what to send the sites,
 * `observe(sums)` takes their combined sums at it, until `done`. Wave 2's engine drives one round per
 * request; `fitCox` below drives it in process.
 */
export class CoxNewton {
  done = false;
  converged = false;
  iterations = 0;
  private current: number[];
  private best?: { beta: number[]; sums: CoxSums };
  private initial?: CoxSums;
  private halvings = 0;
  private readonly tolerance: number;
  private readonly maxIterations: number;

  constructor(readonly p: number, opts: { tolerance?: number; maxIterations?: number } = {}) {
    this.current = new Array<number>(p).fill(0);
    this.tolerance = opts.tolerance ?? 1e-9;
    this.maxIterations = opts.maxIterations ?? 20;
  }

  beta(): number[] {
    return [...this.current];
  }

  /** Everything the coordinator must keep between rounds (plain JSON), so a restarted coordinator resumes the fit. */
  state(): CoxNewtonState {
    return JSON.parse(JSON.stringify({
      p: this.p, tolerance: this.tolerance, maxIterations: this.maxIterations, current: this.current, best: this.best ?? null,
      initial: this.initial ?? null, halvings: this.halvings, iterations: this.iterations, done: this.done, converged: this.converged,
    })) as CoxNewtonState;
  }

  static restore(s: CoxNewtonState): CoxNewton {
    const n = new CoxNewton(s.p, { tolerance: s.tolerance, maxIterations: s.maxIterations });
    n.current = [...s.current];
    if (s.best) n.best = { beta: [...s.best.beta], sums: s.best.sums };
    if (s.initial) n.initial = s.initial;
    n.halvings = s.halvings;
    n.iterations = s.iterations;
    n.done = s.done;
    n.converged = s.converged;
    return n;
  }

  observe(s: CoxSums): void {
    if (this.done) throw new Error('CoxNewton: the fit is finished');
    if (!this.initial) {
      if (!Number.isFinite(s.loglik)) throw new Error('the partial likelihood at β = 0 is not finite');
      this.initial = s;
      this.best = { beta: this.current, sums: s };
      this.step();
      return;
    }
    const best = this.best!;
    if (!(s.loglik >= best.sums.loglik) || !Number.isFinite(s.loglik)) {
      // Step halving, as coxph: back half way toward the last accepted β.
      if (++this.halvings > 30) {
        this.done = true;
        return;
      }
      this.current = this.current.map((b, j) => (b + best.beta[j]!) / 2);
      return;
    }
    this.halvings = 0;
    const rel = Math.abs(1 - best.sums.loglik / s.loglik);
    this.best = { beta: this.current, sums: s };
    if (rel <= this.tolerance) {
      this.done = true;
      this.converged = true;
      return;
    }
    if (this.iterations >= this.maxIterations) {
      this.done = true;
      return;
    }
    this.step();
  }

  private step(): void {
    const { beta, sums } = this.best!;
    const delta = choleskySolve(cholesky(sums.information, this.p), this.p, sums.gradient);
    this.current = beta.map((b, j) => b + delta[j]!);
    this.iterations++;
  }

  result(names: string[], extra: { n: number; events: number; ties: Ties; strata: 'site' | 'none'; confLevel?: number; excludedSites: string[]; truncatedSites: string[] }): CoxResult {
    if (!this.done || !this.best || !this.initial) throw new Error('CoxNewton: the fit has not finished');
    const p = this.p, { beta, sums } = this.best, s0 = this.initial;
    const variance = inverseSpd(sums.information, p);
    const se = variance.filter((_, i) => i % (p + 1) === 0).map(Math.sqrt);
    const confLevel = extra.confLevel ?? 0.95;
    const zq = normalQuantile(1 - (1 - confLevel) / 2);
    const z = beta.map((b, j) => b / se[j]!);
    const lr = 2 * (sums.loglik - s0.loglik);
    const wald = quadForm(sums.information, p, beta);
    const score = quadForm(inverseSpd(s0.information, p), p, s0.gradient);
    return {
      kind: 'cox', names, coef: [...beta], se, z, p: z.map(twoSidedP), hazardRatio: beta.map(Math.exp),
      lower: beta.map((b, j) => Math.exp(b - zq * se[j]!)), upper: beta.map((b, j) => Math.exp(b + zq * se[j]!)), confLevel, variance,
      loglik: [s0.loglik, sums.loglik],
      likelihoodRatio: { statistic: lr, df: p, p: chiSquareSf(lr, p) },
      wald: { statistic: wald, df: p, p: chiSquareSf(wald, p) },
      score: { statistic: score, df: p, p: chiSquareSf(score, p) },
      n: extra.n, events: extra.events, iterations: this.iterations, converged: this.converged, ties: extra.ties, strata: extra.strata,
      excludedSites: extra.excludedSites, truncatedSites: extra.truncatedSites,
    };
  }
}
