/**
 * Client sampling per round: a fraction of the available sites, at least `minSites`,
 * optionally restricted to a fixed list. Deterministic: the choice of round r depends only
 * on (seed, r, the set of candidate ids), not on arrival order or earlier rounds, so a
 * restarted coordinator picks the same sites again and no sampler state needs saving.
 */
import { createRng } from './rng.js';
import { NotEnoughSitesError } from './strategy.js';

export interface SamplingOptions {
  /** Fraction of candidate sites per round, in (0, 1]. Default 1. */
  fraction: number;
  /** At least this many sites per round (the round cannot start with fewer). Default 1. */
  minSites: number;
  /** If set, only these sites take part (all must be available). */
  sites?: readonly string[];
  seed: number;
}

export function sampleSites(round: number, available: readonly string[], opt: SamplingOptions): string[] {
  let candidates: string[];
  if (opt.sites) {
    const have = new Set(available);
    const missing = opt.sites.filter((s) => !have.has(s));
    if (missing.length) throw new NotEnoughSitesError(opt.sites.length, opt.sites.length - missing.length);
    candidates = [...new Set(opt.sites)];
  } else {
    candidates = [...new Set(available)];
  }
  candidates.sort(compareIds);
  const n = candidates.length;
  if (n < opt.minSites || n === 0) throw new NotEnoughSitesError(Math.max(1, opt.minSites), n);
  const k = Math.min(n, Math.max(opt.minSites, Math.ceil(opt.fraction * n - 1e-12)));
  if (k === n) return candidates;
  // Partial Fisher–Yates over the sorted ids: the first k positions are the sample.
  const rng = createRng(opt.seed, 'sample', round);
  for (let i = 0; i < k; i++) {
    const j = i + rng.nextInt(n - i);
    const t = candidates[i]!;
    candidates[i] = candidates[j]!;
    candidates[j] = t;
  }
  return candidates.slice(0, k).sort(compareIds);
}

/** Total order on site ids used everywhere results are sorted (plain code-unit order). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
