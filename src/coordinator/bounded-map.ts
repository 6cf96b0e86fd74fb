/**
 * The coordinator's in-memory caches and counters are bounded: past `max` entries the oldest inserted goes first
 * (a Map iterates in insertion order), so a flood of distinct keys costs memory up to the bound, never more.
 */
export function setBounded<K, V>(m: Map<K, V>, k: K, v: V, max: number): V {
  if (!m.has(k) && m.size >= max) m.delete(m.keys().next().value as K);
  m.set(k, v);
  return v;
}
