/**
 * The cohort each site had declared when a study started (`Store.studyCohortSize`), read once per (study, site) in
 * this process. The snapshot is written in the start transaction and never changes (its rows are inserted once and
 * never updated), so a study's later results need not read it again: every accepted result read it, one statement
 * of about 17.5 per site in a 1,000-site PostgreSQL round (`setu bench live --store postgres`). Only a snapshot
 * that exists is kept: an absent one is asked again (a study from before snapshots were taken has none).
 */
import type { Store } from '../store/store.js';
import { setBounded } from './bounded-map.js';

/** Enough for every site of a few large studies at once; past it the oldest entries are read again. */
const MAX_ENTRIES = 100_000;

export class StudyCohorts {
  private readonly sizes = new Map<string, number>();
  constructor(private readonly store: Store) {}

  async get(studyId: string, siteId: string): Promise<number | undefined> {
    const key = `${studyId}\u0000${siteId}`;
    const hit = this.sizes.get(key);
    if (hit !== undefined) return hit;
    const size = await this.store.studyCohortSize(studyId, siteId);
    if (size !== undefined) setBounded(this.sizes, key, size, MAX_ENTRIES);
    return size;
  }
}

const cohorts = new WeakMap<Store, StudyCohorts>();

/** The one cache of `store`'s study cohorts in this process (every route that accepts results shares it). */
export function studyCohortsOf(store: Store): StudyCohorts {
  let c = cohorts.get(store);
  if (!c) cohorts.set(store, (c = new StudyCohorts(store)));
  return c;
}
