/**
 * The in-memory Store: the same behaviour as the SQL store (store-suite.ts runs against both), held in Maps,
 * for engine unit tests with an injected clock and for simulations. Nothing survives the process.
 *
 * Transactions are serialised (one at a time, and a call outside a transaction waits for the open one, like
 * SQLite's single connection) and roll back by restoring a snapshot of the tables: rows are never changed in
 * place (an update stores a new object), so a snapshot is a copy of each table's Map, not of its rows.
 * Primary and unique keys are enforced (StoreConflict); foreign keys are not.
 */
import type { Institution, LifecycleRow, ModelCardRow, Placement, ResourceRow, SiteMembership, SiteProfile, UsageRow, GovernanceEvent } from './governance.js';
import { memberships, toEvent, toInstitution, toPlacement } from './governance.js';
import { spendOf, type PrivacyLedgerTable, type SiteSpend, type SpendEntry } from './privacy.js';
import type { CountedRefusal } from './audit-bounds.js';
import type { TaskErrorsTable } from './task-errors.js';
import type { AsyncContributionsTable, CommitVersionArgs } from './async.js';
import type { BlobStore } from './blobs/blob-store.js';
import { MemoryBlobStore } from './blobs/memory-blobs.js';
import {
  StoreConflict, refuseFromInside, runInside, type AuditRow, type CommitRoundArgs, type InviteRow, type MetricRow, type ModelVersionRow, type RefusalRow, type RoundRow, type RoundProgress,
  type SiteRow, type Store, type StrategyStateRow, type StudyRow, type TaskRow, type UpdateRow, type UploadRow, type UserRow,
} from './store.js';

type Row = Record<string, unknown>;
const TABLES = [
  'kv', 'invites', 'sites', 'studies', 'rounds', 'tasks', 'model_versions', 'updates', 'metrics', 'refusals', 'strategy_state',
  'users', 'user_invites', 'request_nonces', 'site_cohorts', 'audit_log', 'audit_head', 'institutions', 'study_governance',
  'governance_events', 'site_profiles', 'compute_resources', 'task_placements', 'compute_usage', 'model_cards', 'privacy_ledger', 'study_cohorts', 'task_errors', 'async_contributions',
  'uploads',
] as const;
type Table = (typeof TABLES)[number];

/** Primary key columns of each table (a generated id is assigned from a counter). */
const PK: Record<Table, string[]> = {
  kv: ['key'], invites: ['token_hash'], sites: ['id'], studies: ['id'], rounds: ['study_id', 'round'], tasks: ['id'], model_versions: ['id'],
  updates: ['task_id'], metrics: ['id'], refusals: ['id'], strategy_state: ['study_id', 'round'], users: ['id'], user_invites: ['token_hash'],
  request_nonces: ['key_id', 'nonce'], site_cohorts: ['site_id', 'dataset'], audit_log: ['seq'], audit_head: ['id'], institutions: ['id'],
  study_governance: ['study_id'], governance_events: ['id'], site_profiles: ['site_id'], compute_resources: ['id'], task_placements: ['task_id'],
  compute_usage: ['task_id'], model_cards: ['study_id'], privacy_ledger: ['task_id'], study_cohorts: ['study_id', 'site_id'], task_errors: ['task_id'], async_contributions: ['task_id'],
  uploads: ['id'],
};
const GENERATED = new Set<Table>(['metrics', 'refusals', 'governance_events']);
/** Unique columns besides the primary key (the SQL schema's UNIQUE constraints). */
const UNIQUE: Partial<Record<Table, string[]>> = { sites: ['name', 'credential_hash'], users: ['name'] };

class State {
  readonly blobs = new MemoryBlobStore();
  t = Object.fromEntries(TABLES.map((n) => [n, new Map<string, Row>()])) as Record<Table, Map<string, Row>>;
  ids: Record<string, number> = { metrics: 0, refusals: 0, governance_events: 0 };
  constructor() {
    this.t.audit_head.set('1', { id: 1, seq: 0, hash: '0'.repeat(64) });
  }
  snapshot(): { t: Record<Table, Map<string, Row>>; ids: Record<string, number> } {
    return { t: Object.fromEntries(TABLES.map((n) => [n, new Map(this.t[n])])) as Record<Table, Map<string, Row>>, ids: { ...this.ids } };
  }
  restore(s: { t: Record<Table, Map<string, Row>>; ids: Record<string, number> }): void {
    this.t = s.t;
    this.ids = s.ids;
  }
}

/** A FIFO lock: whoever holds it runs alone. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  acquire(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const ready = this.tail.then(() => release);
    this.tail = this.tail.then(() => held);
    return ready;
  }
}

const keyOf = (table: Table, r: Row) => PK[table].map((c) => String(r[c])).join('\u0000');
/** Copies blobs so neither the caller nor the store can change the other's bytes. */
function copy<T>(r: T): T {
  const out = { ...(r as Row) };
  for (const [k, v] of Object.entries(out)) if (v instanceof Uint8Array) out[k] = new Uint8Array(v);
  return out as T;
}
/** A comparator over the given keys in turn (SQL's ORDER BY a, b). */
function by<T>(...keys: ((r: T) => string | number | null)[]): (a: T, b: T) => number {
  return (a, b) => {
    for (const k of keys) {
      const x = k(a) ?? '', y = k(b) ?? '';
      if (x < y) return -1;
      if (x > y) return 1;
    }
    return 0;
  };
}

export class MemoryStore implements Store {
  readonly backend = 'memory' as const;
  private closed = false;
  get blobs(): BlobStore {
    return this.s.blobs;
  }

  constructor(
    private readonly s: State = new State(),
    private readonly lock: Mutex = new Mutex(),
    private readonly inTx = false,
  ) {}

  // ---- machinery ----
  /** Runs one operation: directly inside a transaction, else alone (after any open transaction). */
  private async op<T>(f: () => T): Promise<T> {
    if (this.closed) throw new Error(this.inTx ? 'this transaction has ended' : 'the store is closed');
    if (this.inTx) return copyOut(f());
    refuseFromInside(this.s);
    const release = await this.lock.acquire();
    try {
      return copyOut(f());
    } finally {
      release();
    }
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(this.inTx ? 'this transaction has ended' : 'the store is closed');
    if (this.inTx) return fn(this);
    refuseFromInside(this.s);
    const release = await this.lock.acquire();
    const snap = this.s.snapshot();
    const tx = new MemoryStore(this.s, this.lock, true);
    try {
      return await runInside(this.s, () => fn(tx));
    } catch (e) {
      this.s.restore(snap);
      throw e;
    } finally {
      tx.closed = true;
      release();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  async dumpTables(): Promise<Record<string, Record<string, unknown>[]>> {
    return this.op(() => Object.fromEntries(TABLES.map((n) => [n, [...this.s.t[n].values()]])));
  }

  private rows<T>(table: Table): T[] {
    return [...this.s.t[table].values()] as T[];
  }
  private get<T>(table: Table, ...key: (string | number)[]): T | undefined {
    return this.s.t[table].get(key.map(String).join('\u0000')) as T | undefined;
  }
  private insert(table: Table, row: object): void {
    const r = copy(row) as Row;
    if (GENERATED.has(table) && r.id === undefined) r.id = ++this.s.ids[table]!;
    const k = keyOf(table, r);
    if (this.s.t[table].has(k)) throw new StoreConflict(`already exists: ${table} ${PK[table].join(', ')} = ${k.replace(/\u0000/g, ', ')}`);
    for (const c of UNIQUE[table] ?? []) {
      for (const o of this.s.t[table].values()) if (o[c] === r[c]) throw new StoreConflict(`already exists: ${table} ${c} = ${String(r[c])}`);
    }
    this.s.t[table].set(k, r);
  }
  /** Replaces each matching row by a changed copy; returns how many. */
  private update<T extends object>(table: Table, where: (r: T) => boolean, set: (r: T) => Partial<T>): number {
    let n = 0;
    for (const [k, r] of this.s.t[table]) {
      if (where(r as T)) {
        this.s.t[table].set(k, { ...r, ...set(r as T) });
        n++;
      }
    }
    return n;
  }
  private delete<T extends object>(table: Table, where: (r: T) => boolean): number {
    let n = 0;
    for (const [k, r] of this.s.t[table]) if (where(r as T)) (this.s.t[table].delete(k), n++);
    return n;
  }

  // ---- key/value ----
  getKv(key: string): Promise<string | undefined> {
    return this.op(() => this.get<{ value: string }>('kv', key)?.value);
  }
  setKv(key: string, value: string): Promise<void> {
    return this.op(() => void this.s.t.kv.set(key, { key, value }));
  }

  // ---- invites and sites ----
  createInvite(row: InviteRow): Promise<void> {
    return this.op(() => this.insert('invites', row));
  }
  consumeInvite(tokenHash: string, now: number): Promise<InviteRow | undefined> {
    return this.op(() => {
      const n = this.update<InviteRow>('invites', (r) => r.token_hash === tokenHash && r.used_at === null && r.expires_at > now, () => ({ used_at: now }));
      return n === 1 ? this.get<InviteRow>('invites', tokenHash) : undefined;
    });
  }
  attachInviteToSite(tokenHash: string, siteId: string): Promise<void> {
    return this.op(() => void this.update<InviteRow>('invites', (r) => r.token_hash === tokenHash, () => ({ site_id: siteId })));
  }
  createSite(row: SiteRow): Promise<void> {
    return this.op(() => this.insert('sites', { institution_id: null, ...row }));
  }
  getSite(id: string): Promise<SiteRow | undefined> {
    return this.op(() => this.get<SiteRow>('sites', id));
  }
  getSiteByName(name: string): Promise<SiteRow | undefined> {
    return this.op(() => this.rows<SiteRow>('sites').find((r) => r.name === name));
  }
  listSites(): Promise<SiteRow[]> {
    return this.op(() => this.rows<SiteRow>('sites').sort(by((r) => r.name)));
  }
  touchSite(id: string, now: number): Promise<void> {
    return this.op(() => void this.update<SiteRow>('sites', (r) => r.id === id, () => ({ last_seen_at: now })));
  }
  touchSites(ids: readonly string[], now: number): Promise<void> {
    const set = new Set(ids);
    return this.op(() => void this.update<SiteRow>('sites', (r) => set.has(r.id), () => ({ last_seen_at: now })));
  }
  revokeSite(id: string): Promise<boolean> {
    return this.op(() => this.update<SiteRow>('sites', (r) => r.id === id && r.status !== 'revoked', () => ({ status: 'revoked' })) === 1);
  }
  setSitePublicKey(id: string, publicKey: string): Promise<void> {
    return this.op(() => void this.update<SiteRow>('sites', (r) => r.id === id, () => ({ public_key: publicKey })));
  }

  // ---- studies ----
  createStudy(row: StudyRow): Promise<void> {
    return this.op(() => this.insert('studies', row));
  }
  getStudy(id: string): Promise<StudyRow | undefined> {
    return this.op(() => this.get<StudyRow>('studies', id));
  }
  listStudies(): Promise<StudyRow[]> {
    return this.op(() => this.rows<StudyRow>('studies').sort(by((r) => r.created_at)));
  }
  listStudiesByStatus(status: string): Promise<StudyRow[]> {
    return this.op(() => this.rows<StudyRow>('studies').filter((r) => r.status === status).sort(by((r) => r.created_at)));
  }
  transitionStudy(id: string, from: string[], to: string, now: number, extra: { error?: string | null } = {}): Promise<void> {
    return this.op(() => {
      const s = this.get<StudyRow>('studies', id);
      if (!s || !from.includes(s.status)) throw new StoreConflict(s ? `study ${id} is ${s.status}; expected ${from.join(' or ')}` : `no study ${id}`);
      this.update<StudyRow>('studies', (r) => r.id === id, () => ({ status: to, updated_at: now, ...(extra.error !== undefined ? { error: extra.error } : {}) }));
      if (to !== 'running') this.update<TaskRow>('tasks', (r) => r.study_id === id && (r.status === 'issued' || r.status === 'delivered'), () => ({ status: 'expired' }));
    });
  }
  startStudy(id: string, participants: string[], initial: ModelVersionRow | undefined, now: number): Promise<void> {
    return this.transaction(async (tx) => {
      await tx.transitionStudy(id, ['created'], 'running', now);
      await (tx as MemoryStore).op(() => this.update<StudyRow>('studies', (r) => r.id === id, () => ({ participants: JSON.stringify(participants) })));
      if (initial) await tx.putModelVersion(initial);
    });
  }
  claimStudy(id: string, instance: string, now: number, leaseMs: number): Promise<boolean> {
    return this.op(() => this.update<StudyRow>('studies', (r) => r.id === id && (r.claimed_by === null || r.claimed_by === instance || (r.claimed_until !== null && r.claimed_until < now)),
      () => ({ claimed_by: instance, claimed_until: now + leaseMs })) === 1);
  }

  // ---- model versions ----
  putModelVersion(row: ModelVersionRow): Promise<void> {
    return this.op(() => this.insert('model_versions', row));
  }
  getModelVersion(id: string): Promise<ModelVersionRow | undefined> {
    return this.op(() => this.get<ModelVersionRow>('model_versions', id));
  }
  listModelVersions(studyId: string): Promise<ModelVersionRow[]> {
    return this.op(() => this.rows<ModelVersionRow>('model_versions').filter((r) => r.study_id === studyId).sort(by((r) => r.round)));
  }
  latestModelVersion(studyId: string): Promise<ModelVersionRow | undefined> {
    return this.op(() => this.rows<ModelVersionRow>('model_versions').filter((r) => r.study_id === studyId).sort(by((r) => -r.round))[0]);
  }

  // ---- rounds, tasks, updates ----
  openRound(round: RoundRow, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void> {
    return this.transaction(async (tx) => {
      await (tx as MemoryStore).op(() => {
        if (this.get('rounds', round.study_id, round.round)) throw new StoreConflict(`round ${round.round} of study ${round.study_id} already exists`);
        this.insert('rounds', round);
        for (const t of tasks) this.insert('tasks', t);
      });
      if (inTx) await inTx(tx);
    });
  }
  getRound(studyId: string, round: number): Promise<RoundRow | undefined> {
    return this.op(() => this.get<RoundRow>('rounds', studyId, round));
  }
  openRoundOf(studyId: string): Promise<RoundRow | undefined> {
    return this.op(() => this.rows<RoundRow>('rounds').find((r) => r.study_id === studyId && r.status === 'open'));
  }
  extendOpenRound(studyId: string, round: number, byMs: number): Promise<void> {
    const ms = Math.round(byMs);
    return this.op(() => {
      if (this.update<RoundRow>('rounds', (r) => r.study_id === studyId && r.round === round && r.status === 'open', (r) => ({ deadline_at: r.deadline_at + ms })) === 0) return;
      this.update<TaskRow>('tasks', (r) => r.study_id === studyId && r.round === round && (r.status === 'issued' || r.status === 'delivered'), (r) => ({ deadline_at: r.deadline_at + ms }));
    });
  }
  listRounds(studyId: string): Promise<RoundRow[]> {
    return this.op(() => this.rows<RoundRow>('rounds').filter((r) => r.study_id === studyId).sort(by((r) => r.round)));
  }
  pendingTasks(siteId: string): Promise<TaskRow[]> {
    return this.op(() => this.rows<TaskRow>('tasks').filter((r) => r.site_id === siteId && (r.status === 'issued' || r.status === 'delivered')).sort(by((r) => r.created_at)));
  }
  getTask(id: string): Promise<TaskRow | undefined> {
    return this.op(() => this.get<TaskRow>('tasks', id));
  }
  issuedTasksSince(since: number): Promise<Pick<TaskRow, 'id' | 'site_id' | 'created_at'>[]> {
    return this.op(() => this.rows<TaskRow>('tasks').filter((r) => r.status === 'issued' && r.created_at >= since).map((r) => ({ id: r.id, site_id: r.site_id, created_at: r.created_at })));
  }
  listTasks(studyId: string, round: number): Promise<TaskRow[]> {
    return this.op(() => this.rows<TaskRow>('tasks').filter((r) => r.study_id === studyId && r.round === round).sort(by((r) => r.site_id)));
  }
  markDelivered(taskId: string, now: number): Promise<boolean> {
    return this.op(() => this.update<TaskRow>('tasks', (r) => r.id === taskId && r.status === 'issued', () => ({ status: 'delivered', delivered_at: now })) === 1);
  }
  refuseTask(taskId: string, now: number): Promise<boolean> {
    return this.op(() => this.update<TaskRow>('tasks', (r) => r.id === taskId && (r.status === 'issued' || r.status === 'delivered'), () => ({ status: 'refused', done_at: now })) === 1);
  }
  failTask(row: TaskErrorsTable): Promise<boolean> {
    return this.op(() => {
      if (this.update<TaskRow>('tasks', (r) => r.id === row.task_id && (r.status === 'issued' || r.status === 'delivered'), () => ({ status: 'failed', done_at: row.at })) !== 1) return false;
      this.insert('task_errors', row);
      return true;
    });
  }
  listTaskErrors(studyId: string, round?: number): Promise<TaskErrorsTable[]> {
    return this.op(() => this.rows<TaskErrorsTable>('task_errors').filter((r) => r.study_id === studyId && (round === undefined || r.round === round)).sort(by((r) => r.at, (r) => r.task_id)));
  }
  siteMayReadModel(siteId: string, versionId: string): Promise<boolean> {
    return this.op(() => this.rows<TaskRow>('tasks').some((r) => r.site_id === siteId && r.model_version_id === versionId));
  }
  resetRound(studyId: string, round: number): Promise<void> {
    return this.op(() => {
      this.delete<UpdateRow>('updates', (r) => r.study_id === studyId && r.round === round);
      this.update<TaskRow>('tasks', (r) => r.study_id === studyId && r.round === round && ['issued', 'delivered', 'done'].includes(r.status),
        () => ({ status: 'issued', delivered_at: null, done_at: null }));
    });
  }
  acceptUpdate(update: UpdateRow, inTx?: (tx: Store) => Promise<void>): Promise<void> {
    return this.transaction(async (tx) => {
      await (tx as MemoryStore).op(() => {
        const closed = this.update<TaskRow>('tasks', (r) => r.id === update.task_id && r.site_id === update.site_id && (r.status === 'issued' || r.status === 'delivered'),
          () => ({ status: 'done', done_at: update.received_at }));
        if (closed !== 1) throw new StoreConflict(`task ${update.task_id} is not open for this site`);
        if (this.get<RoundRow>('rounds', update.study_id, update.round)?.status !== 'open') throw new StoreConflict(`round ${update.round} is no longer open`);
        this.insert('updates', update);
      });
      if (inTx) await inTx(tx);
    });
  }
  createUpload(row: UploadRow): Promise<void> {
    return this.op(() => {
      if (this.rows<UploadRow>('uploads').some((u) => u.task_id === row.task_id && u.digest === row.digest)) throw new StoreConflict(`already exists: uploads task_id, digest = ${row.task_id}, ${row.digest}`);
      this.insert('uploads', row);
    });
  }
  getUpload(id: string): Promise<UploadRow | undefined> {
    return this.op(() => this.get<UploadRow>('uploads', id));
  }
  findUpload(taskId: string, digest: string): Promise<UploadRow | undefined> {
    return this.op(() => this.rows<UploadRow>('uploads').find((u) => u.task_id === taskId && u.digest === digest));
  }
  deleteUpload(id: string): Promise<void> {
    return this.op(() => void this.delete<UploadRow>('uploads', (u) => u.id === id));
  }
  staleUploads(): Promise<UploadRow[]> {
    return this.op(() => this.rows<UploadRow>('uploads').filter((u) => {
      const t = this.get<TaskRow>('tasks', u.task_id);
      return t !== undefined && t.status !== 'issued' && t.status !== 'delivered';
    }).sort(by((u) => u.created_at)));
  }
  listUpdates(studyId: string, round: number): Promise<UpdateRow[]> {
    return this.op(() => this.rows<UpdateRow>('updates').filter((r) => r.study_id === studyId && r.round === round).sort(by((r) => r.site_id)));
  }
  countUpdates(studyId: string, round: number): Promise<number> {
    return this.op(() => this.rows<UpdateRow>('updates').filter((r) => r.study_id === studyId && r.round === round).length);
  }
  roundProgress(studyId: string, round: number): Promise<RoundProgress> {
    return this.op(() => {
      const tasks = this.rows<TaskRow>('tasks').filter((r) => r.study_id === studyId && r.round === round);
      return {
        tasks: tasks.length,
        updates: this.rows<UpdateRow>('updates').filter((r) => r.study_id === studyId && r.round === round).length,
        closedWithoutResult: tasks.filter((t) => t.status === 'refused' || t.status === 'failed').length,
      };
    });
  }
  commitRound(a: CommitRoundArgs): Promise<void> {
    return this.transaction(async (tx) => {
      await (tx as MemoryStore).op(() => {
        const n = this.update<RoundRow>('rounds', (r) => r.study_id === a.studyId && r.round === a.round && r.status === 'open',
          () => ({ status: 'committed', committed_at: a.now, ...(a.model ? { model_version_id: a.model.id } : {}) }));
        if (n !== 1) throw new StoreConflict(`round ${a.round} of ${a.studyId} is not open`);
        this.update<TaskRow>('tasks', (r) => r.study_id === a.studyId && r.round === a.round && (r.status === 'issued' || r.status === 'delivered'), () => ({ status: 'expired' }));
        if (a.model) this.insert('model_versions', a.model);
        for (const m of a.metrics) this.insert('metrics', m);
        if (a.strategyState) this.insert('strategy_state', a.strategyState);
        this.update<StudyRow>('studies', (r) => r.id === a.studyId, () => ({
          updated_at: a.now, ...(a.advanceTo !== undefined ? { current_round: a.advanceTo } : {}), ...(a.studyStatus ? { status: a.studyStatus } : {}),
        }));
      });
      if (a.inTx) await a.inTx(tx);
    });
  }
  issueTasks(studyId: string, round: number, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void> {
    return this.transaction(async (tx) => {
      await (tx as MemoryStore).op(() => {
        if (this.get<RoundRow>('rounds', studyId, round)?.status !== 'open') throw new StoreConflict(`round ${round} of study ${studyId} is not open`);
        for (const t of tasks) this.insert('tasks', t);
      });
      if (inTx) await inTx(tx);
    });
  }
  expireTask(taskId: string, now: number): Promise<boolean> {
    return this.op(() => this.update<TaskRow>('tasks', (r) => r.id === taskId && (r.status === 'issued' || r.status === 'delivered'), () => ({ status: 'expired', done_at: now })) === 1);
  }
  asyncTasks(studyId: string, round: number, versionId: string, taskIds: readonly string[]): Promise<TaskRow[]> {
    const named = new Set(taskIds);
    return this.op(() => this.rows<TaskRow>('tasks').filter((r) => r.study_id === studyId && r.round === round && (r.status === 'issued' || r.status === 'delivered' || r.model_version_id === versionId || named.has(r.id)))
      .sort(by((r) => r.site_id, (r) => r.created_at)));
  }
  unfoldedUpdates(studyId: string, round: number): Promise<UpdateRow[]> {
    return this.op(() => this.rows<UpdateRow>('updates').filter((r) => r.study_id === studyId && r.round === round && !this.get('async_contributions', r.task_id))
      .sort(by((r) => r.received_at, (r) => r.task_id)));
  }
  commitVersion(a: CommitVersionArgs): Promise<void> {
    return this.transaction(async (tx) => {
      await (tx as MemoryStore).op(() => {
        if (this.update<StudyRow>('studies', (r) => r.id === a.studyId && r.current_round === a.version - 1, () => ({ current_round: a.version, updated_at: a.now })) !== 1) {
          throw new StoreConflict(`study ${a.studyId} is not at version ${a.version - 1}: version ${a.version} was committed already or out of order`);
        }
        if (this.update<RoundRow>('rounds', (r) => r.study_id === a.studyId && r.round === a.round && r.status === 'open', () => ({ deadline_at: a.deadlineAt })) !== 1) {
          throw new StoreConflict(`round ${a.round} of ${a.studyId} is not open`);
        }
        for (const c of a.contributions) this.insert('async_contributions', c);
        this.insert('model_versions', a.model);
        for (const m of a.metrics) this.insert('metrics', m);
        if (a.strategyState) this.insert('strategy_state', a.strategyState);
      });
      if (a.inTx) await a.inTx(tx);
    });
  }
  listContributions(studyId: string): Promise<AsyncContributionsTable[]> {
    return this.op(() => this.rows<AsyncContributionsTable>('async_contributions').filter((r) => r.study_id === studyId).sort(by((r) => r.version, (r) => r.at, (r) => r.task_id)));
  }
  latestStrategyState(studyId: string): Promise<StrategyStateRow | undefined> {
    return this.op(() => this.rows<StrategyStateRow>('strategy_state').filter((r) => r.study_id === studyId).sort(by((r) => -r.round))[0]);
  }
  listMetrics(studyId: string): Promise<MetricRow[]> {
    return this.op(() => this.rows<MetricRow & { id: number }>('metrics').filter((r) => r.study_id === studyId).sort(by((r) => r.round, (r) => r.id))
      .map(({ id: _id, ...m }) => m));
  }
  countRefusal(r: CountedRefusal): Promise<number> {
    return this.op(() => {
      const same = this.rows<RefusalRow & { id: number }>('refusals').find((x) => x.task_id === r.task_id && x.code === r.code);
      if (!same) {
        this.insert('refusals', { ...r, count: 1, last_at: r.at });
        return 1;
      }
      this.update<RefusalRow & { id: number }>('refusals', (x) => x.id === same.id, (x) => ({ count: x.count + 1, last_at: r.at }));
      return same.count + 1;
    });
  }
  listRefusals(studyId?: string): Promise<RefusalRow[]> {
    return this.op(() => this.rows<RefusalRow & { id: number }>('refusals').filter((r) => !studyId || r.study_id === studyId).sort(by((r) => r.id))
      .map(({ id: _id, ...r }) => r));
  }

  // ---- trust layer ----
  createUser(row: UserRow): Promise<void> {
    return this.op(() => this.insert('users', row));
  }
  getUser(id: string): Promise<UserRow | undefined> {
    return this.op(() => this.get<UserRow>('users', id));
  }
  getUserByName(name: string): Promise<UserRow | undefined> {
    return this.op(() => this.rows<UserRow>('users').find((r) => r.name === name));
  }
  listUsers(): Promise<UserRow[]> {
    return this.op(() => this.rows<UserRow>('users').sort(by((r) => r.created_at, (r) => r.name)));
  }
  activateUser(id: string, publicKey: string): Promise<boolean> {
    return this.op(() => this.update<UserRow>('users', (r) => r.id === id && r.status === 'invited', () => ({ status: 'active', public_key: publicKey })) === 1);
  }
  revokeUser(id: string): Promise<boolean> {
    return this.op(() => this.update<UserRow>('users', (r) => r.id === id && r.status !== 'revoked', () => ({ status: 'revoked' })) === 1);
  }
  setUserPublicKey(id: string, publicKey: string): Promise<boolean> {
    return this.op(() => this.update<UserRow>('users', (r) => r.id === id && r.status === 'active', () => ({ public_key: publicKey })) === 1);
  }
  createUserInvite(row: { token_hash: string; user_id: string; created_at: number; expires_at: number }): Promise<void> {
    return this.op(() => this.insert('user_invites', { ...row, used_at: null }));
  }
  consumeUserInvite(tokenHash: string, now: number): Promise<string | undefined> {
    type I = { token_hash: string; user_id: string; expires_at: number; used_at: number | null };
    return this.op(() => {
      const n = this.update<I>('user_invites', (r) => r.token_hash === tokenHash && r.used_at === null && r.expires_at > now, () => ({ used_at: now }));
      return n === 1 ? this.get<I>('user_invites', tokenHash)!.user_id : undefined;
    });
  }
  rememberNonce(keyId: string, nonce: string, ts: number): Promise<boolean> {
    return this.op(() => {
      if (this.get('request_nonces', keyId, nonce)) return false;
      this.insert('request_nonces', { key_id: keyId, nonce, ts });
      return true;
    });
  }
  rememberNonceIfActive(keyId: string, nonce: string, ts: number, publicKey: string): Promise<boolean> {
    return this.op(() => {
      const owner = this.get<{ status: string; public_key: string | null }>(keyId.startsWith('site-') ? 'sites' : 'users', keyId);
      if (owner?.status !== 'active' || owner.public_key !== publicKey || this.get('request_nonces', keyId, nonce)) return false;
      this.insert('request_nonces', { key_id: keyId, nonce, ts });
      return true;
    });
  }
  pruneNonces(before: number): Promise<number> {
    return this.op(() => this.delete<{ ts: number }>('request_nonces', (r) => r.ts < before));
  }
  declareCohorts(siteId: string, sizes: Record<string, number>, now: number): Promise<void> {
    return this.op(() => {
      for (const [dataset, size] of Object.entries(sizes)) this.s.t.site_cohorts.set(`${siteId}\u0000${dataset}`, { site_id: siteId, dataset, size, declared_at: now });
    });
  }
  cohortSize(siteId: string, dataset: string): Promise<number | undefined> {
    return this.op(() => this.get<{ size: number }>('site_cohorts', siteId, dataset)?.size);
  }
  snapshotStudyCohorts(studyId: string, dataset: string, siteIds: readonly string[], at: number): Promise<void> {
    return this.op(() => {
      for (const siteId of siteIds) {
        const c = this.get<{ size: number }>('site_cohorts', siteId, dataset);
        if (c && !this.get('study_cohorts', studyId, siteId)) this.insert('study_cohorts', { study_id: studyId, site_id: siteId, dataset, size: c.size, declared_at: at });
      }
    });
  }
  studyCohortSize(studyId: string, siteId: string): Promise<number | undefined> {
    return this.op(() => this.get<{ size: number }>('study_cohorts', studyId, siteId)?.size);
  }
  listCohorts(siteId: string): Promise<Record<string, number>> {
    type C = { site_id: string; dataset: string; size: number };
    return this.op(() => Object.fromEntries(this.rows<C>('site_cohorts').filter((r) => r.site_id === siteId).sort(by((r) => r.dataset)).map((r) => [r.dataset, r.size])));
  }

  // ---- governance ----
  createInstitution(i: Institution): Promise<void> {
    return this.op(() => this.insert('institutions', { id: i.id, name: i.name, kind: i.kind, jurisdiction: i.jurisdiction, created_at: i.createdAt }));
  }
  getInstitution(id: string): Promise<Institution | undefined> {
    return this.op(() => {
      const r = this.get<Parameters<typeof toInstitution>[0]>('institutions', id);
      return r && toInstitution(r);
    });
  }
  private institutions(): Institution[] {
    return this.rows<Parameters<typeof toInstitution>[0]>('institutions').sort(by((r) => r.id)).map(toInstitution);
  }
  listInstitutions(): Promise<Institution[]> {
    return this.op(() => this.institutions());
  }
  linkSite(siteId: string, inst: Institution): Promise<void> {
    return this.op(() => void this.update<Row>('sites', (r) => r.id === siteId, () => ({ institution_id: inst.id, institution: inst.name, jurisdiction: inst.jurisdiction })));
  }
  listMemberships(): Promise<SiteMembership[]> {
    type V = Parameters<typeof memberships>[0][number];
    return this.op(() => memberships(this.rows<V>('sites').sort(by((r) => r.name)), this.institutions()));
  }
  getLifecycleRow(studyId: string): Promise<LifecycleRow | undefined> {
    return this.op(() => this.get<LifecycleRow>('study_governance', studyId)); // transactions run one at a time: no lock needed
  }
  putLifecycle(studyId: string, state: string, lifecycle: unknown, at: number, expectVersion?: number): Promise<boolean> {
    return this.op(() => {
      if (expectVersion === undefined) {
        this.insert('study_governance', { study_id: studyId, state, lifecycle: JSON.stringify(lifecycle), version: 1, updated_at: at });
        return true;
      }
      return this.update<LifecycleRow>('study_governance', (r) => r.study_id === studyId && r.version === expectVersion,
        () => ({ state, lifecycle: JSON.stringify(lifecycle), version: expectVersion + 1, updated_at: at })) === 1;
    });
  }
  addEvent(e: { studyId: string | null; kind: string; actor: string; data: unknown; at: number }): Promise<void> {
    return this.op(() => this.insert('governance_events', { study_id: e.studyId, kind: e.kind, actor: e.actor, data: JSON.stringify(e.data ?? null), at: e.at }));
  }
  listEvents(studyId?: string): Promise<GovernanceEvent[]> {
    type E = Parameters<typeof toEvent>[0] & { id: number };
    return this.op(() => this.rows<E>('governance_events').filter((r) => !studyId || r.study_id === studyId).sort(by((r) => r.id)).map(toEvent));
  }
  putSiteProfile(siteId: string, p: SiteProfile): Promise<void> {
    return this.op(() => void this.s.t.site_profiles.set(siteId, { site_id: siteId, compute: JSON.stringify(p.compute), datasets: JSON.stringify(p.datasets), updated_at: p.updatedAt }));
  }
  getSiteProfile(siteId: string): Promise<SiteProfile | undefined> {
    type P = { compute: string; datasets: string; updated_at: number };
    return this.op(() => {
      const r = this.get<P>('site_profiles', siteId);
      return r && { compute: JSON.parse(r.compute), datasets: JSON.parse(r.datasets), updatedAt: r.updated_at };
    });
  }

  // ---- compute ----
  putResource(r: { id: string; name: string; institution: string; jurisdiction: string; scheduler: string }, spec: unknown, at: number): Promise<'created' | 'updated'> {
    return this.op(() => {
      const row = { name: r.name, institution_id: r.institution, jurisdiction: r.jurisdiction, scheduler: r.scheduler, spec: JSON.stringify(spec), status: 'active', updated_at: at };
      const old = this.get<Row>('compute_resources', r.id);
      this.s.t.compute_resources.set(r.id, { id: r.id, ...row, created_at: old ? old.created_at : at });
      return old ? 'updated' : 'created';
    });
  }
  listResources(): Promise<ResourceRow[]> {
    type R = { id: string; institution_id: string; jurisdiction: string; scheduler: string; status: string; spec: string; created_at: number; updated_at: number };
    return this.op(() => this.rows<R>('compute_resources').sort(by((r) => r.id)).map((r) => ({
      id: r.id, institutionId: r.institution_id, jurisdiction: r.jurisdiction, scheduler: r.scheduler, status: r.status, spec: JSON.parse(r.spec), createdAt: r.created_at, updatedAt: r.updated_at,
    })));
  }
  getPlacement(taskId: string): Promise<Placement | undefined> {
    return this.op(() => {
      const r = this.get<Parameters<typeof toPlacement>[0]>('task_placements', taskId);
      return r && toPlacement(r);
    });
  }
  putPlacement(p: Placement): Promise<void> {
    return this.op(() => this.insert('task_placements', { task_id: p.taskId, study_id: p.studyId, site_id: p.siteId, resource_id: p.resourceId, reason: p.reason, placed_at: p.placedAt, job_id: p.jobId, state: p.state }));
  }
  updatePlacement(taskId: string, set: { jobId?: string | null; state?: string }): Promise<void> {
    return this.op(() => void this.update<Row>('task_placements', (r) => r.task_id === taskId, () => ({ ...(set.jobId !== undefined ? { job_id: set.jobId } : {}), ...(set.state ? { state: set.state } : {}) })));
  }
  listPlacements(opts: { activeOnly?: boolean } = {}): Promise<Placement[]> {
    type P = Parameters<typeof toPlacement>[0];
    return this.op(() => this.rows<P>('task_placements').filter((r) => !opts.activeOnly || ['placed', 'submitted', 'running'].includes(r.state)).sort(by((r) => r.placed_at)).map(toPlacement));
  }
  addUsage(u: UsageRow): Promise<boolean> {
    return this.op(() => {
      if (this.get('compute_usage', u.taskId)) return false;
      this.insert('compute_usage', {
      task_id: u.taskId, study_id: u.studyId, site_id: u.siteId, site_institution: u.siteInstitution, site_country: u.siteCountry, resource_id: u.resourceId,
      institution: u.institution, country: u.country, scheduler: u.scheduler, cpu_seconds: u.cpuSeconds, gpu_seconds: u.gpuSeconds, wall_seconds: u.wallSeconds,
      cpu_basis: u.cpuBasis, job_id: u.jobId, recorded_at: u.recordedAt,
      });
      return true;
    });
  }
  listUsage(studyId?: string): Promise<UsageRow[]> {
    return this.op(() => this.rows<Row>('compute_usage').filter((r) => !studyId || r.study_id === studyId).sort(by((r) => r.recorded_at as number, (r) => r.task_id as string)).map((r) => ({
      taskId: r.task_id as string, studyId: r.study_id as string, siteId: r.site_id as string, siteInstitution: r.site_institution as string, siteCountry: r.site_country as string,
      resourceId: r.resource_id as string, institution: r.institution as string, country: r.country as string, scheduler: r.scheduler as string, cpuSeconds: r.cpu_seconds as number,
      gpuSeconds: r.gpu_seconds as number, wallSeconds: r.wall_seconds as number, cpuBasis: r.cpu_basis as string, jobId: r.job_id as string | null, recordedAt: r.recorded_at as number,
    })));
  }
  putModelCard(c: ModelCardRow): Promise<void> {
    return this.op(() => {
      if (!this.get('model_cards', c.studyId)) this.insert('model_cards', { study_id: c.studyId, json: JSON.stringify(c.json), markdown: c.markdown, audit_head: c.auditHead, created_at: c.createdAt });
    });
  }
  getModelCard(studyId: string): Promise<ModelCardRow | undefined> {
    type M = { study_id: string; json: string; markdown: string; audit_head: string | null; created_at: number };
    return this.op(() => {
      const r = this.get<M>('model_cards', studyId);
      return r && { studyId: r.study_id, json: JSON.parse(r.json), markdown: r.markdown, auditHead: r.audit_head, createdAt: r.created_at };
    });
  }

  // ---- audit chain ----
  /** Memory writes no batches: every row is appended at once. */
  queueAuditRow(): boolean {
    return false;
  }
  appendAuditRow(build: (head: { seq: number; hash: string }) => AuditRow): Promise<AuditRow> {
    return this.op(() => {
      const head = this.get<{ seq: number; hash: string }>('audit_head', 1)!;
      const row = build({ seq: head.seq, hash: head.hash });
      this.insert('audit_log', row);
      this.s.t.audit_head.set('1', { id: 1, seq: row.seq, hash: row.hash });
      return row;
    });
  }
  appendAuditRows(build: (head: { seq: number; hash: string }) => AuditRow[]): Promise<AuditRow[]> {
    return this.op(() => {
      const head = this.get<{ seq: number; hash: string }>('audit_head', 1)!;
      const rows = build({ seq: head.seq, hash: head.hash });
      for (const row of rows) this.insert('audit_log', row);
      const last = rows.at(-1);
      if (last) this.s.t.audit_head.set('1', { id: 1, seq: last.seq, hash: last.hash });
      return rows;
    });
  }
  listAuditRows(opts: { after?: number; limit?: number } = {}): Promise<AuditRow[]> {
    return this.op(() => {
      const rows = this.rows<AuditRow>('audit_log').filter((r) => opts.after === undefined || r.seq > opts.after).sort(by((r) => r.seq));
      return opts.limit === undefined ? rows : rows.slice(0, opts.limit);
    });
  }
  auditHead(): Promise<{ seq: number; hash: string }> {
    return this.op(() => {
      const h = this.get<{ seq: number; hash: string }>('audit_head', 1)!;
      return { seq: h.seq, hash: h.hash };
    });
  }

  // ---- privacy ledger ----
  recordSpend(e: SpendEntry): Promise<boolean> {
    const s = e.spend;
    return this.op(() => {
      if (this.get('privacy_ledger', e.taskId)) return false;
      this.insert('privacy_ledger', {
        task_id: e.taskId, study_id: e.studyId, site_id: e.siteId, round: e.round, mechanism: s.mechanism, sample_rate: s.sampleRate,
        noise_multiplier: s.noiseMultiplier, steps: s.steps, epsilon: s.epsilon, delta: s.delta, budget_epsilon: s.budgetEpsilon, budget_delta: s.budgetDelta, at: e.at,
      });
      return true;
    });
  }
  studySpend(studyId: string): Promise<SiteSpend[]> {
    return this.op(() => spendOf(this.rows<PrivacyLedgerTable>('privacy_ledger').filter((r) => r.study_id === studyId).sort(by((r) => r.site_id, (r) => r.round, (r) => r.at))));
  }
  ledgerRows(studyId: string): Promise<PrivacyLedgerTable[]> {
    return this.op(() => this.rows<PrivacyLedgerTable>('privacy_ledger').filter((r) => r.study_id === studyId).sort(by((r) => r.round, (r) => r.site_id)));
  }
}

/** Results leave the store as copies (rows, arrays of rows), so a caller's change never reaches the tables. */
function copyOut<T>(v: T): T {
  if (Array.isArray(v)) return v.map((x) => (x && typeof x === 'object' && !(x instanceof Uint8Array) ? copy(x) : x)) as T;
  if (v && typeof v === 'object' && !(v instanceof Uint8Array)) return copy(v);
  return v;
}
