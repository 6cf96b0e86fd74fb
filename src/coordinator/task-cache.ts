/**
 * What the agent routes read for every task and result of a study and that never changes once written, kept in
 * memory so a round of N tiny sites does not read and parse it N times over:
 *  - a study's spec (a study's spec is never updated after creation: store/sql-store.ts has no such write), parsed
 *    once per study instead of three times per result request and once per task message;
 *  - a small model version's bytes as base64 (`TaskMessage.modelInline`, at most MODEL_INLINE_MAX_BYTES): model
 *    versions are immutable (content-addressed blobs), so each is read once, not once per site.
 * Both are bounded (least recently added first out), so a coordinator with many studies keeps a few of each.
 */
import { MODEL_INLINE_MAX_BYTES, type StudySpec } from '../protocol/api.js';
import type { Store } from '../store/store.js';
import { setBounded } from './bounded-map.js';

const MAX_SPECS = 256;
const MAX_MODELS = 32;


export class StudySpecs {
  private readonly cache = new Map<string, StudySpec>();
  constructor(private readonly store: Store) {}

  /** The spec of study `id`, read from the store on first use only; undefined when there is no such study. */
  async byId(id: string): Promise<StudySpec | undefined> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    const row = await this.store.getStudy(id);
    return row && setBounded(this.cache, id, JSON.parse(row.spec) as StudySpec, MAX_SPECS);
  }
}

export class InlineModels {
  /** base64 of the version's bytes, or null when it is too large to inline (it is downloaded). */
  private readonly cache = new Map<string, Promise<string | null>>();
  constructor(private readonly store: Store) {}

  /** Concurrent polls of one round share one read (the promise is what is kept; a failed read is forgotten). */
  get(versionId: string): Promise<string | null> {
    const hit = this.cache.get(versionId);
    if (hit) return hit;
    const p = this.read(versionId);
    p.catch(() => this.cache.delete(versionId));
    return setBounded(this.cache, versionId, p, MAX_MODELS);
  }

  private async read(versionId: string): Promise<string | null> {
    const mv = await this.store.getModelVersion(versionId);
    if (!mv || mv.size > MODEL_INLINE_MAX_BYTES) return null;
    return Buffer.from(await this.store.blobs.read(mv.digest, 0, mv.size)).toString('base64');
  }
}
