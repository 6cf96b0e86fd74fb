/**
 * Small-cell suppression: the one place a count is cleared to leave a site.
 *
 * A `ReleasedCount` is a number that only `suppressTable` (and `releaseRiskSet` for survival risk
 * sets) can make, so a site answer whose type holds `ReleasedCount | null` cannot carry a raw small
 * count: the compiler refuses it, and `checkReleased` refuses it again on arrival at the coordinator.
 *
 * Primary suppression: counts 1 … minCellCount − 1 (and 0 with `suppressZeros`) become null.
 * Secondary (complementary) suppression: a site's total and its margins are known or released by other
 * queries (a site declares its cohort size at enrolment), so a line of a table with exactly one
 * suppressed cell would give that cell away by subtraction. Every line along every axis, and the whole
 * table, therefore holds no suppressed cell or at least two: the smallest released cell of a line
 * with one is suppressed too, until nothing changes. This is the classical heuristic, not the optimal
 * cell-suppression problem; it defeats the one-subtraction attack on each line and on the total.
 */
import type { AnalyticsPolicy } from './spec.js';

declare const released: unique symbol;
/** A count that passed this site's minimum-cell rule (or a noisy count above it). */
export type ReleasedCount = number & { readonly [released]: true };

function isSmall(c: number, policy: Pick<AnalyticsPolicy, 'minCellCount' | 'suppressZeros'>): boolean {
  // Only an exact 0 may pass (unless zeros are suppressed too); a count below 0 exists only after noise, and it is small.
  return c < policy.minCellCount && (c !== 0 || !!policy.suppressZeros);
}

/**
 * Suppresses a row-major table of `shape` (one count per cell). Returns what may leave: the count,
 * or null for a suppressed cell.
 */
export function suppressTable(counts: readonly number[], shape: readonly number[], policy: Pick<AnalyticsPolicy, 'minCellCount' | 'suppressZeros'>): Array<ReleasedCount | null> {
  const size = shape.reduce((a, b) => a * b, 1);
  if (counts.length !== size) throw new Error(`suppressTable: ${counts.length} counts for a table of shape ${shape.join('×')}`);
  const hidden = counts.map((c) => isSmall(c, policy));
  const strides = shape.map((_, a) => shape.slice(a + 1).reduce((x, y) => x * y, 1));
  const lines: number[][] = [Array.from({ length: size }, (_, i) => i)];
  shape.forEach((len, a) => {
    if (len < 2 || shape.length === 1) return;
    for (let base = 0; base < size; base++) {
      if (Math.floor(base / strides[a]!) % len !== 0) continue; // first cell of a line along axis a
      lines.push(Array.from({ length: len }, (_, k) => base + k * strides[a]!));
    }
  });
  for (let changed = true; changed; ) {
    changed = false;
    for (const line of lines) {
      if (line.length < 2 || line.filter((i) => hidden[i]).length !== 1) continue;
      // The smallest released cell, preferring a non-zero one (a hidden zero next to a hidden small cell still hides it).
      const open = line.filter((i) => !hidden[i]).sort((x, y) => (counts[x]! > 0 ? 0 : 1) - (counts[y]! > 0 ? 0 : 1) || counts[x]! - counts[y]! || x - y);
      if (open.length === 0) continue;
      hidden[open[0]!] = true;
      changed = true;
    }
  }
  return counts.map((c, i) => (hidden[i] ? null : (c as ReleasedCount)));
}

/** One count on its own (an overall n): released if it passes the rule, else null. */
export function releaseCount(c: number, policy: Pick<AnalyticsPolicy, 'minCellCount' | 'suppressZeros'>): ReleasedCount | null {
  return isSmall(c, policy) ? null : (c as ReleasedCount);
}

/** A survival risk-set size: released only when at least minCellCount subjects are in it. */
export function releaseRiskSet(n: number, minCellCount: number): ReleasedCount | null {
  return n >= minCellCount ? (n as ReleasedCount) : null;
}

/**
 * The coordinator's check of an arriving answer: every exact count is 0 or at least the site's stated
 * minimum (noisy counts are post-processed DP output and are checked against the threshold only).
 * Returns the problems, empty when the answer is clean.
 */
export function checkReleased(values: ReadonlyArray<number | null>, minCellCount: number, where: string, opts: { zerosAllowed: boolean; noisy: boolean }): string[] {
  const bad: string[] = [];
  values.forEach((v, i) => {
    if (v === null) return;
    if (!Number.isFinite(v)) bad.push(`${where}[${i}]: not a finite number`);
    else if (opts.noisy ? v < minCellCount : (v !== 0 || !opts.zerosAllowed) && v < minCellCount) bad.push(`${where}[${i}] = ${v} is below the site's minimum cell count ${minCellCount}`);
    else if (!opts.noisy && !Number.isInteger(v)) bad.push(`${where}[${i}] = ${v} is not a whole count`);
  });
  return bad;
}
