/**
 * A round's progress as the result route answers it, without counting the round's rows on every upload.
 *
 * `Store.roundProgress` counts the round's tasks and updates: two index range scans of N rows. Run after each of a
 * round's N accepted results, that was N² rows a round, and the largest statement cost of a round of 1,000 tiny
 * sites (`setu bench live --sites 1000`: 1.1 ms a count, 1.4 s of SQL a round, growing with the sites). Here the
 * store is counted at most once a second per round; in between, each result accepted by this process adds one to
 * that count. The estimate can only lag what other coordinators (or refusals and task errors) did in the last
 * second, so whenever it says the round may be complete, the store is counted again: the answer that closes a
 * round, and the engine's kick with it, always come from the store's own counts (and the engine's ticks decide
 * from the store alone, round-close.ts).
 */
import type { RoundProgress, Store } from '../store/store.js';
import { setBounded } from './bounded-map.js';

/** How old a round's counted progress may get before the next accepted result counts the store again. */
export const TALLY_REFRESH_MS = 1000;
const MAX_ROUNDS = 256;

interface Tally {
  at: number;
  counted: RoundProgress;
  /** Results accepted here since `counted` was read. */
  since: number;
}

export class RoundTally {
  private readonly rounds = new Map<string, Tally>();
  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  /** The progress of (study, round) just after this process accepted one more of its results. */
  async accepted(studyId: string, round: number): Promise<RoundProgress> {
    const key = `${studyId}\u0000${round}`;
    const t = this.rounds.get(key);
    if (t && this.now() - t.at < TALLY_REFRESH_MS && this.now() >= t.at) {
      t.since++;
      const est = { ...t.counted, updates: Math.min(t.counted.tasks, t.counted.updates + t.since) };
      if (est.updates + est.closedWithoutResult < est.tasks) return est;
    }
    const at = this.now();
    const counted = await this.store.roundProgress(studyId, round);
    // Results accepted while this count ran are in it already: a fresh count starts from none of its own.
    setBounded(this.rounds, key, { at, counted, since: 0 }, MAX_ROUNDS);
    return counted;
  }
}

const tallies = new WeakMap<Store, RoundTally>();

/** The one tally of `store` in this process (every route that accepts results shares it). */
export function roundTallyOf(store: Store, now: () => number): RoundTally {
  let t = tallies.get(store);
  if (!t) tallies.set(store, (t = new RoundTally(store, now)));
  return t;
}
