/**
 * The one finite-value check (NaN, ±Infinity) on decoded values: an update's tensors at completion
 * (coordinator/routes/results.ts), a model's and a trainer's output (tensors.ts `firstNonFinite`; the agent's file-to-file release, site/release-file.ts), an aggregate's
 * slices (coordinator/stream-aggregate.ts). A plain loop over the typed array: measured against a bit test of the
 * float32 exponent and a branch-free `v * 0` sum, it was as fast or faster (about 3-4 ns a value on a loaded core),
 * so the cost of the check is one read of the values, which the callers already make.
 */
export function indexOfNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}
