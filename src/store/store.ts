/**
 * The coordinator's state store: ONE interface (`Store`) with three implementations that pass one shared
 * suite (store-suite.ts): SQL over SQLite (libsql, the default) and PostgreSQL (pg) in sql-store.ts, and
 * in-memory in memory-store.ts (engine unit tests, simulations). `openStore(url)` picks one by its URL.
 *
 * Every multi-row change that must be all-or-nothing (opening a round, accepting an update, committing an
 * aggregate, a governance decision with its audit entry) is one transaction: `store.transaction(async (tx) =>
 * …)`, where `tx` is itself a Store whose calls join that transaction (a nested `tx.transaction` joins it too).
 * A crash leaves the store at the last committed step.
 *
 * Errors callers may act on: `StoreConflict` (a compare-and-set found the row elsewhere, or a unique key is
 * taken: 409), `StoreUnavailable` (connection lost, timeout, disk full: transient, 503 with Retry-After).
 * The SQL implementation classifies driver errors by their codes (sql-errors.ts).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type {
  AuditLogTable, InvitesTable, MetricsTable, ModelVersionsTable, RefusalsTable, RoundsTable, SitesTable, StrategyStateTable, StudiesTable,
  TasksTable, UpdatesTable, UsersTable,
} from './schema.js';
import type {
  GovernanceEvent, Institution, LifecycleRow, ModelCardRow, Placement, ResourceRow, SiteMembership, SiteProfile, UsageRow,
} from './governance.js';
import type { PrivacyLedgerTable, SiteSpend, SpendEntry } from './privacy.js';
import type { CountedRefusal } from './audit-bounds.js';
import type { TaskErrorsTable } from './task-errors.js';
import type { BlobStore } from './blobs/blob-store.js';
import type { AsyncContributionsTable, CommitVersionArgs } from './async.js';
import type { UploadsTable } from './uploads.js';
import type { PeerSignals } from './peer-signals.js';

export type SiteRow = SitesTable;
export type StudyRow = StudiesTable;
export type TaskRow = TasksTable;
export type RoundRow = RoundsTable;
export type InviteRow = InvitesTable;
export type UserRow = UsersTable;
export type UpdateRow = UpdatesTable;
export type ModelVersionRow = ModelVersionsTable;
export type MetricRow = Omit<MetricsTable, 'id'>;
export type RefusalRow = Omit<RefusalsTable, 'id'>;
export type StrategyStateRow = StrategyStateTable;
/** One audit-chain entry as stored (`data` is canonical JSON text); governance/audit-store.ts signs and parses. */
export type AuditRow = AuditLogTable;
export type { GovernanceEvent, Institution, LifecycleRow, ModelCardRow, Placement, ResourceRow, SiteMembership, SiteProfile, UsageRow, SiteSpend, SpendEntry };
export type LedgerRow = PrivacyLedgerTable;
export type { CountedRefusal };
export type TaskErrorRow = TaskErrorsTable;
export type AsyncContributionRow = AsyncContributionsTable;
export type { CommitVersionArgs };
/** A chunked upload of a task's result (uploads.ts); its bytes so far are `store.blobs.partial(id)`. */
export type UploadRow = UploadsTable;

/** Thrown when a state change is refused because the row is not in the state the caller expected, or a unique key is taken. */
export class StoreConflict extends Error {
  override name = 'StoreConflict';
}

/** The store cannot answer now (connection lost, timeout, disk full): transient; the API answers 503 with Retry-After. */
export class StoreUnavailable extends Error {
  override name = 'StoreUnavailable';
}

export type Backend = 'memory' | 'sqlite' | 'postgres';

/**
 * Which store's transaction callback the current async context runs in. A call on that store itself (not on
 * its `tx`) from inside the callback is refused: on SQLite and in memory it would wait for the transaction it
 * runs in, forever; on PostgreSQL it would run outside the transaction on a second connection, and enough of
 * them at once starve the pool.
 */
const insideTransactionOf = new AsyncLocalStorage<object>();
/**
 * Transaction callbacks running now, of every store. While none runs the storage is disabled: an enabled
 * AsyncLocalStorage installs promise hooks that run for every promise of the process (5.8% of the coordinator's CPU
 * under 1,000 sites, bench live --cpu-prof), yet only the promises of a transaction's callback need its mark. The
 * first `runInside` enables it again; a promise made while it was off carries no mark, which is right: no
 * transaction was running to be inside of.
 */
let callbacksRunning = 0;

/** Runs a transaction callback marked as inside `root`'s transaction. */
export async function runInside<T>(root: object, fn: () => Promise<T>): Promise<T> {
  callbacksRunning++;
  try {
    return await insideTransactionOf.run(root, fn);
  } finally {
    if (--callbacksRunning === 0) insideTransactionOf.disable();
  }
}

/** Throws when called from inside `root`'s own transaction callback (see insideTransactionOf). */
export function refuseFromInside(root: object): void {
  if (insideTransactionOf.getStore() === root) {
    throw new Error('a store call from inside one of its transactions must go through the transaction handle (tx), not the store: it would wait for the transaction it runs in');
  }
}

/** What commitRound writes together. */
export interface CommitRoundArgs {
  studyId: string;
  round: number;
  now: number;
  model?: ModelVersionRow;
  metrics: MetricRow[];
  strategyState?: StrategyStateRow;
  studyStatus?: string;
  advanceTo?: number;
  inTx?: (tx: Store) => Promise<void>;
}

export interface Store {
  readonly backend: Backend;
  /**
   * Model versions' and updates' bytes, by digest (blobs/blob-store.ts); a transaction's `tx` reads and writes the
   * same blobs (on SQLite through the transaction's handle: a small blob put through it joins the transaction).
   */
  readonly blobs: BlobStore;
  /**
   * Signals to and from the other coordinator processes on the same database (PostgreSQL's LISTEN/NOTIFY,
   * peer-signals.ts); absent where one process owns the store (memory, SQLite).
   */
  readonly peers?: PeerSignals;
  close(): Promise<void>;
  /**
   * Runs `fn` in one transaction and returns its result; `tx` is a Store whose calls join the transaction.
   * When `fn` throws, nothing it did stays. Called on a `tx`, it joins the open transaction.
   */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  /** Every table's rows, by table name (storeDigest hashes them to prove that a request changed nothing). */
  dumpTables(): Promise<Record<string, Record<string, unknown>[]>>;

  // ---- key/value (coordinator identity, readiness probe, normalisation stats, trainer progress) ----
  getKv(key: string): Promise<string | undefined>;
  setKv(key: string, value: string): Promise<void>;

  // ---- site invites and sites ----
  createInvite(row: InviteRow): Promise<void>;
  /** Marks the invite used, atomically: a second enrolment with the same token finds nothing. */
  consumeInvite(tokenHash: string, now: number): Promise<InviteRow | undefined>;
  attachInviteToSite(tokenHash: string, siteId: string): Promise<void>;
  createSite(row: SiteRow): Promise<void>;
  getSite(id: string): Promise<SiteRow | undefined>;
  getSiteByName(name: string): Promise<SiteRow | undefined>;
  listSites(): Promise<SiteRow[]>;
  touchSite(id: string, now: number): Promise<void>;
  /** `touchSite` for many sites in one write (the coordinator's batched last-seen times, server.ts siteTouches). */
  touchSites(ids: readonly string[], now: number): Promise<void>;
  /** False when there is no such site or it was already revoked. */
  revokeSite(id: string): Promise<boolean>;
  setSitePublicKey(id: string, publicKey: string): Promise<void>;

  // ---- studies ----
  createStudy(row: StudyRow): Promise<void>;
  getStudy(id: string): Promise<StudyRow | undefined>;
  listStudies(): Promise<StudyRow[]>;
  listStudiesByStatus(status: string): Promise<StudyRow[]>;
  /** Compare-and-set on the status (StoreConflict when not in one of `from`); a study that stops takes its open tasks with it. */
  transitionStudy(id: string, from: string[], to: string, now: number, extra?: { error?: string | null }): Promise<void>;
  /** created → running with its participants fixed and, when given, the initial model (version 0). */
  startStudy(id: string, participants: string[], initial: ModelVersionRow | undefined, now: number): Promise<void>;
  /** Lease-based claim: several coordinators sharing one PostgreSQL drive each study from one place at a time. */
  claimStudy(id: string, instance: string, now: number, leaseMs: number): Promise<boolean>;

  // ---- model versions ----
  putModelVersion(row: ModelVersionRow): Promise<void>;
  getModelVersion(id: string): Promise<ModelVersionRow | undefined>;
  listModelVersions(studyId: string): Promise<ModelVersionRow[]>;
  latestModelVersion(studyId: string): Promise<ModelVersionRow | undefined>;

  // ---- rounds, tasks, updates ----
  /** Opens a round and issues its tasks in one transaction; StoreConflict when the round exists. */
  openRound(round: RoundRow, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void>;
  getRound(studyId: string, round: number): Promise<RoundRow | undefined>;
  openRoundOf(studyId: string): Promise<RoundRow | undefined>;
  /** Moves an open round's deadline, and its open tasks' deadlines, `byMs` later (the coordinator's downtime given back); a closed round is left alone. */
  extendOpenRound(studyId: string, round: number, byMs: number): Promise<void>;
  listRounds(studyId: string): Promise<RoundRow[]>;
  /** Tasks waiting for a site (issued or delivered), oldest first. */
  pendingTasks(siteId: string): Promise<TaskRow[]>;
  /** Tasks still `issued` whose created_at is at least `since` (the long-polls' wake-up, coordinator/task-wake.ts). */
  issuedTasksSince(since: number): Promise<Pick<TaskRow, 'id' | 'site_id' | 'created_at'>[]>;
  getTask(id: string): Promise<TaskRow | undefined>;
  listTasks(studyId: string, round: number): Promise<TaskRow[]>;
  /** An issued task handed to its site: true when it was `issued` (a compare-and-set; false when delivered or closed already). */
  markDelivered(taskId: string, now: number): Promise<boolean>;
  /** An open task the site refused: true when it was open. */
  refuseTask(taskId: string, now: number): Promise<boolean>;
  /**
   * A task its site could not run: closes it as failed and records the error, together, only while it is open
   * (false, writing nothing, when it already has a result, a refusal or an error, or its round closed).
   */
  failTask(row: TaskErrorRow): Promise<boolean>;
  /** A study's task errors (of one round), oldest first. */
  listTaskErrors(studyId: string, round?: number): Promise<TaskErrorRow[]>;
  /** True when `siteId` holds (or held) a task that references model version `versionId`. */
  siteMayReadModel(siteId: string, versionId: string): Promise<boolean>;
  /** A restarted SecAgg+ round: its update rows go and its live tasks (issued, delivered, done) are issued again; refused and expired ones stay closed. */
  resetRound(studyId: string, round: number): Promise<void>;
  /** Records a result and closes its task together; StoreConflict when the task or its round is no longer open. */
  acceptUpdate(update: UpdateRow, inTx?: (tx: Store) => Promise<void>): Promise<void>;

  // ---- chunked uploads (uploads.ts; the bytes are store.blobs.partial(id)) ----
  /** StoreConflict when the id, or the task and digest, are taken. */
  createUpload(row: UploadRow): Promise<void>;
  getUpload(id: string): Promise<UploadRow | undefined>;
  /** The upload of this task's result with these bytes, if one was started. */
  findUpload(taskId: string, digest: string): Promise<UploadRow | undefined>;
  deleteUpload(id: string): Promise<void>;
  /** Uploads whose task is closed, so nothing will complete them (their partial bytes are for the caller to discard). */
  staleUploads(): Promise<UploadRow[]>;
  listUpdates(studyId: string, round: number): Promise<UpdateRow[]>;
  countUpdates(studyId: string, round: number): Promise<number>;
  /** How far a round is, in counts (what the engine's tick and the routes need each time, without reading rows). */
  roundProgress(studyId: string, round: number): Promise<RoundProgress>;
  /** Model version, metrics, strategy state, round status and study progress in one transaction; StoreConflict when the round is not open. */
  commitRound(args: CommitRoundArgs): Promise<void>;
  // ---- asynchronous studies (coordinator/async-rounds.ts; store/async.ts) ----
  /** Issues tasks into a round that is open (an asynchronous study's tasks come one by one); StoreConflict when it is not, or a task id is taken. */
  issueTasks(studyId: string, round: number, tasks: TaskRow[], inTx?: (tx: Store) => Promise<void>): Promise<void>;
  /** Closes an open task as expired (its deadline passed, or its update could only be refused); false when it was not open. */
  expireTask(taskId: string, now: number): Promise<boolean>;
  /** The round's tasks an asynchronous tick needs, by site: the open ones, those against `versionId`, and those named (the buffer's); its cost follows them, not the study's history. */
  asyncTasks(studyId: string, round: number, versionId: string, taskIds: readonly string[]): Promise<TaskRow[]>;
  /** The round's updates that no fold has taken or refused yet (the buffer), oldest first. */
  unfoldedUpdates(studyId: string, round: number): Promise<UpdateRow[]>;
  /** A new version of an asynchronous study: model, metrics, strategy state, contributions, study progress, round deadline, in one transaction; StoreConflict unless the study is at version − 1 and the round open. */
  commitVersion(args: CommitVersionArgs): Promise<void>;
  /** Every folded or refused update of an asynchronous study, by version. */
  listContributions(studyId: string): Promise<AsyncContributionRow[]>;
  latestStrategyState(studyId: string): Promise<StrategyStateRow | undefined>;
  listMetrics(studyId: string): Promise<MetricRow[]>;
  /**
   * Records a refusal of a task for `code`: the first makes the row (count 1), each later one increments it and
   * sets last_at; one statement, so concurrent refusals of one task count exactly. Returns the count.
   */
  countRefusal(r: CountedRefusal): Promise<number>;
  /** Refusals (of a study), oldest first, with their codes and counts. */
  listRefusals(studyId?: string): Promise<RefusalRow[]>;

  // ---- users, user invites, request nonces, declared cohorts ----
  createUser(row: UserRow): Promise<void>;
  getUser(id: string): Promise<UserRow | undefined>;
  getUserByName(name: string): Promise<UserRow | undefined>;
  listUsers(): Promise<UserRow[]>;
  /** Compare-and-set: only an invited user becomes active, with the key it registers. */
  activateUser(id: string, publicKey: string): Promise<boolean>;
  /** False when there is no such user or it was already revoked. */
  revokeUser(id: string): Promise<boolean>;
  /** Replaces an active user's key; false when the user is not active. */
  setUserPublicKey(id: string, publicKey: string): Promise<boolean>;
  createUserInvite(row: { token_hash: string; user_id: string; created_at: number; expires_at: number }): Promise<void>;
  /** Marks the invite used, atomically; returns the invited user's id. */
  consumeUserInvite(tokenHash: string, now: number): Promise<string | undefined>;
  /** True when (keyId, nonce) is new; of two concurrent replays exactly one wins. */
  rememberNonce(keyId: string, nonce: string, ts: number): Promise<boolean>;
  /**
   * `rememberNonce` in one statement with the check that `keyId` (a site id `site-…`, else a user id) is active with
   * `publicKey`: false for a replay and for a revoked, suspended or re-keyed caller (the coordinator then looks again).
   */
  rememberNonceIfActive(keyId: string, nonce: string, ts: number, publicKey: string): Promise<boolean>;
  pruneNonces(before: number): Promise<number>;
  /** Replaces the cohort sizes a site declared for the named datasets (others stay). */
  declareCohorts(siteId: string, sizes: Record<string, number>, now: number): Promise<void>;
  cohortSize(siteId: string, dataset: string): Promise<number | undefined>;
  listCohorts(siteId: string): Promise<Record<string, number>>;
  /** Freezes, inside the start transaction, what each participant had declared for `dataset` (bounds its example counts in the study). */
  snapshotStudyCohorts(studyId: string, dataset: string, siteIds: readonly string[], at: number): Promise<void>;
  /** The cohort a site had declared when the study started (undefined: none then, or the study predates this). */
  studyCohortSize(studyId: string, siteId: string): Promise<number | undefined>;

  // ---- consortium: institutions, memberships ----
  /** StoreConflict when the id is taken. */
  createInstitution(i: Institution): Promise<void>;
  getInstitution(id: string): Promise<Institution | undefined>;
  listInstitutions(): Promise<Institution[]>;
  /** Links a site to its institution; the site takes the institution's jurisdiction. */
  linkSite(siteId: string, inst: Institution): Promise<void>;
  listMemberships(): Promise<SiteMembership[]>;

  // ---- study lifecycle (governance) ----
  /**
   * The study's lifecycle row. `forUpdate` (inside a transaction) locks it until the transaction ends, so
   * concurrent decisions on one study are applied one after the other instead of one overwriting the other.
   */
  getLifecycleRow(studyId: string, opts?: { forUpdate?: boolean }): Promise<LifecycleRow | undefined>;
  /**
   * Writes the lifecycle JSON. Without `expectVersion` it inserts (StoreConflict when the row exists); with it,
   * a compare-and-set on the row's version (every write advances it): false when another write came first.
   */
  putLifecycle(studyId: string, state: string, lifecycle: unknown, at: number, expectVersion?: number): Promise<boolean>;
  addEvent(e: { studyId: string | null; kind: string; actor: string; data: unknown; at: number }): Promise<void>;
  listEvents(studyId?: string): Promise<GovernanceEvent[]>;
  putSiteProfile(siteId: string, p: SiteProfile): Promise<void>;
  getSiteProfile(siteId: string): Promise<SiteProfile | undefined>;

  // ---- compute: resources, placements, usage ----
  putResource(r: { id: string; name: string; institution: string; jurisdiction: string; scheduler: string }, spec: unknown, at: number): Promise<'created' | 'updated'>;
  listResources(): Promise<ResourceRow[]>;
  getPlacement(taskId: string): Promise<Placement | undefined>;
  putPlacement(p: Placement): Promise<void>;
  updatePlacement(taskId: string, set: { jobId?: string | null; state?: string }): Promise<void>;
  listPlacements(opts?: { activeOnly?: boolean }): Promise<Placement[]>;
  /** Records a task's usage once: false when its usage is already recorded (the primary key decides). */
  addUsage(u: UsageRow): Promise<boolean>;
  listUsage(studyId?: string): Promise<UsageRow[]>;
  /** Keeps the first card of a study. */
  putModelCard(c: ModelCardRow): Promise<void>;
  getModelCard(studyId: string): Promise<ModelCardRow | undefined>;

  // ---- audit chain ----
  /**
   * Appends one entry: locks the chain's head (concurrent appenders, even other coordinators, wait), hands it to
   * `build` (which links and signs the entry), stores the entry and moves the head to it.
   */
  appendAuditRow(build: (head: { seq: number; hash: string }) => AuditRow): Promise<AuditRow>;
  /**
   * Inside an accepted result's `inTx` (acceptUpdate) on a SQL store, where the batch is written set-wise: queues
   * the row, to be appended with the batch's others after all its writes under one take of the chain's head (the
   * head's lock then held for two statements, not the whole batch). False elsewhere: append it as usual.
   */
  queueAuditRow(build: (head: { seq: number; hash: string }) => AuditRow): boolean;
  /** Several entries under one take of the head's lock: `build` links and signs them all from the head, in order. */
  appendAuditRows(build: (head: { seq: number; hash: string }) => AuditRow[]): Promise<AuditRow[]>;
  /** Entries in seq order, optionally after a seq, at most `limit`. */
  listAuditRows(opts?: { after?: number; limit?: number }): Promise<AuditRow[]>;
  /** The chain's head: its count (= last seq) and last hash (the genesis hash when empty). */
  auditHead(): Promise<{ seq: number; hash: string }>;

  // ---- privacy ledger ----
  /** Records one DP release; false for a repeat of the same task (the first row is kept). */
  recordSpend(e: SpendEntry): Promise<boolean>;
  /** Per site of a study: its latest total and budget, with the count of releases and steps behind it. */
  studySpend(studyId: string): Promise<SiteSpend[]>;
  /** Every ledger row of a study, oldest first. */
  ledgerRows(studyId: string): Promise<LedgerRow[]>;
}

/** A round's tasks and results counted: it has closed when `updates + closedWithoutResult === tasks`. */
export interface RoundProgress {
  tasks: number;
  updates: number;
  /** Tasks closed without a result: refused or failed by their site (such a task never has an update). */
  closedWithoutResult: number;
}

/**
 * Opens a store: `memory:` (in-memory), `postgres://…` / `postgresql://…`, `sqlite:<path>`, or a plain file
 * path (SQLite). SQL stores are migrated before this returns; `onConnectionError` hears of PostgreSQL
 * connections the server dropped (the store reconnects by itself; default: a line on stderr); `onQuery` hears
 * of every SQL statement (its kind and time, sql-store.ts `statementKind`); `blobDir` puts model versions' and
 * updates' bytes as files there (SqlStoreOptions.blobDir: SQLite's small blobs stay rows; ignored by `memory:`).
 */
export async function openStore(url: string, opts: { onConnectionError?: (e: Error) => void; onQuery?: (kind: string, ms: number) => void; blobDir?: string } = {}): Promise<Store> {
  if (url === 'memory:') {
    const { MemoryStore } = await import('./memory-store.js');
    return new MemoryStore();
  }
  const { openSqlStore } = await import('./sql-store.js');
  return openSqlStore(url, opts);
}
