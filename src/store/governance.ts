/**
 * Governance and compute-federation tables (migration 0003_governance) and the store functions over them.
 * Every function takes the Store's Kysely instance or an open transaction, so a route can change a study's
 * lifecycle, record the governance event and append the audit entry in one transaction.
 *
 *   institutions         consortium members: hospital | university | compute_centre | company, with a jurisdiction
 *   sites.institution_id  a site belongs to one institution (added column)
 *   study_governance     each study's lifecycle (draft → proposed → approvals → running → completed|stopped), JSON
 *   governance_events    the governance history of studies (transitions, policy refusals, placements), readable
 *                        without the audit chain's keys; the audit chain holds the signed copy
 *   site_profiles        what a site agent declares: its compute mode and needs, its example counts per dataset
 *   compute_resources    the shared compute registry
 *   task_placements      where a placed site's task runs (resource, reason, scheduler job id)
 *   compute_usage        CPU- and GPU-seconds of every task, with who contributed and who consumed them
 *   model_cards          the transparency report written when a study completes, sealed by the audit head
 */
import { sql, type Kysely, type Migration, type Transaction } from 'kysely';
import type { Dialect } from './migrations.js';

export interface InstitutionsTable { id: string; name: string; kind: string; jurisdiction: string; created_at: number }
export interface StudyGovernanceTable { study_id: string; state: string; lifecycle: string; version: number; updated_at: number }
export interface GovernanceEventsTable { id?: number; study_id: string | null; kind: string; actor: string; data: string; at: number }
export interface SiteProfilesTable { site_id: string; compute: string; datasets: string; updated_at: number }
export interface ComputeResourcesTable {
  id: string; name: string; institution_id: string; jurisdiction: string; scheduler: string; spec: string; status: string;
  created_at: number; updated_at: number;
}
export interface TaskPlacementsTable {
  task_id: string; study_id: string; site_id: string; resource_id: string; reason: string; placed_at: number;
  job_id: string | null; state: string;
}
export interface ComputeUsageTable {
  task_id: string; study_id: string; site_id: string; site_institution: string; site_country: string;
  resource_id: string; institution: string; country: string; scheduler: string;
  cpu_seconds: number; gpu_seconds: number; wall_seconds: number; cpu_basis: string; job_id: string | null; recorded_at: number;
}
export interface ModelCardsTable { study_id: string; json: string; markdown: string; audit_head: string | null; created_at: number }
/** The columns of tables owned elsewhere that these functions read. */
export interface SitesView { id: string; name: string; institution: string | null; jurisdiction: string | null; institution_id: string | null; status: string }

export interface GovDatabase {
  institutions: InstitutionsTable;
  study_governance: StudyGovernanceTable;
  governance_events: GovernanceEventsTable;
  site_profiles: SiteProfilesTable;
  compute_resources: ComputeResourcesTable;
  task_placements: TaskPlacementsTable;
  compute_usage: ComputeUsageTable;
  model_cards: ModelCardsTable;
  sites: SitesView;
}

/** Anything that can run a query: the store's db or a transaction over it (their schema types differ). */
export type GovDb = Kysely<GovDatabase> | Transaction<GovDatabase>;
// The Store's Kysely is typed with the core schema; these tables live beside it in the same database.
export const gov = (db: unknown): GovDb => db as GovDb;

export function governanceMigration(dialect: Dialect): Migration {
  const ms = dialect === 'postgres' ? sql`bigint` : sql`integer`;
  const serial = dialect === 'postgres' ? sql`bigserial` : sql`integer`;
  const real = sql`double precision`;
  return {
    async up(db: Kysely<any>) {
      await db.schema.createTable('institutions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('jurisdiction', 'text', (c) => c.notNull())
        .addColumn('created_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.alterTable('sites').addColumn('institution_id', 'text', (c) => c.references('institutions.id')).execute();
      await db.schema.createTable('study_governance')
        .addColumn('study_id', 'text', (c) => c.primaryKey().references('studies.id'))
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('lifecycle', 'text', (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createTable('governance_events')
        .addColumn('id', serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn('study_id', 'text')
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addColumn('at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('governance_events_study').on('governance_events').column('study_id').execute();
      await db.schema.createTable('site_profiles')
        .addColumn('site_id', 'text', (c) => c.primaryKey().references('sites.id'))
        .addColumn('compute', 'text', (c) => c.notNull())
        .addColumn('datasets', 'text', (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createTable('compute_resources')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('institution_id', 'text', (c) => c.notNull().references('institutions.id'))
        .addColumn('jurisdiction', 'text', (c) => c.notNull())
        .addColumn('scheduler', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('created_at', ms, (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createTable('task_placements')
        .addColumn('task_id', 'text', (c) => c.primaryKey().references('tasks.id'))
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('resource_id', 'text', (c) => c.notNull().references('compute_resources.id'))
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('placed_at', ms, (c) => c.notNull())
        .addColumn('job_id', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createTable('compute_usage')
        .addColumn('task_id', 'text', (c) => c.primaryKey().references('tasks.id'))
        .addColumn('study_id', 'text', (c) => c.notNull())
        .addColumn('site_id', 'text', (c) => c.notNull())
        .addColumn('site_institution', 'text', (c) => c.notNull())
        .addColumn('site_country', 'text', (c) => c.notNull())
        .addColumn('resource_id', 'text', (c) => c.notNull())
        .addColumn('institution', 'text', (c) => c.notNull())
        .addColumn('country', 'text', (c) => c.notNull())
        .addColumn('scheduler', 'text', (c) => c.notNull())
        .addColumn('cpu_seconds', real, (c) => c.notNull())
        .addColumn('gpu_seconds', real, (c) => c.notNull())
        .addColumn('wall_seconds', real, (c) => c.notNull())
        .addColumn('cpu_basis', 'text', (c) => c.notNull())
        .addColumn('job_id', 'text')
        .addColumn('recorded_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('compute_usage_study').on('compute_usage').column('study_id').execute();
      await db.schema.createTable('model_cards')
        .addColumn('study_id', 'text', (c) => c.primaryKey().references('studies.id'))
        .addColumn('json', 'text', (c) => c.notNull())
        .addColumn('markdown', 'text', (c) => c.notNull())
        .addColumn('audit_head', 'text')
        .addColumn('created_at', ms, (c) => c.notNull())
        .execute();
    },
  };
}

/**
 * 0008_lifecycle_version: a version on each study's lifecycle row, advanced by every write, so a decision is a
 * compare-and-set on the row as the decision read it (a state compare let an approval overwrite a withdrawal).
 */
export const lifecycleVersionMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('study_governance').addColumn('version', 'integer', (c) => c.notNull().defaultTo(1)).execute();
  },
};

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

// ---------------------------------------------------------------- institutions

export const INSTITUTION_KINDS = ['hospital', 'university', 'compute_centre', 'company'] as const;
export type InstitutionKind = (typeof INSTITUTION_KINDS)[number];
export interface Institution { id: string; name: string; kind: InstitutionKind; jurisdiction: string; createdAt: number }

export const toInstitution = (r: InstitutionsTable): Institution =>
  ({ id: r.id, name: r.name, kind: r.kind as InstitutionKind, jurisdiction: r.jurisdiction, createdAt: num(r.created_at) });

export async function createInstitution(db: GovDb, i: Institution): Promise<void> {
  await db.insertInto('institutions').values({ id: i.id, name: i.name, kind: i.kind, jurisdiction: i.jurisdiction, created_at: i.createdAt }).execute();
}
export async function getInstitution(db: GovDb, id: string): Promise<Institution | undefined> {
  const r = await db.selectFrom('institutions').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toInstitution(r);
}
export async function listInstitutions(db: GovDb): Promise<Institution[]> {
  return (await db.selectFrom('institutions').selectAll().orderBy('id').execute()).map(toInstitution);
}

/** Links a site to its institution; the site takes the institution's jurisdiction (its data is held there). */
export async function linkSite(db: GovDb, siteId: string, inst: Institution): Promise<void> {
  await db.updateTable('sites').set({ institution_id: inst.id, institution: inst.name, jurisdiction: inst.jurisdiction }).where('id', '=', siteId).execute();
}

export interface SiteMembership { id: string; name: string; status: string; institutionId: string | null; institution: string | null; jurisdiction: string | null }

/**
 * Every site with its institution. A site invited before its institution was linked counts as a member of the
 * institution whose id or name equals the site's `institution` text, so invites naming an institution id link
 * themselves.
 */
export async function listMemberships(db: GovDb): Promise<SiteMembership[]> {
  const [sites, insts] = await Promise.all([
    db.selectFrom('sites').select(['id', 'name', 'institution', 'jurisdiction', 'institution_id', 'status']).orderBy('name').execute(),
    listInstitutions(db),
  ]);
  return memberships(sites, insts);
}

/** The join behind listMemberships, shared by both stores; `sites` ordered by name. */
export function memberships(sites: SitesView[], insts: Institution[]): SiteMembership[] {
  const byKey = new Map<string, Institution>();
  for (const i of insts) { byKey.set(i.name, i); byKey.set(i.id, i); }
  return sites.map((s) => {
    const inst = (s.institution_id ? insts.find((i) => i.id === s.institution_id) : undefined) ?? (s.institution ? byKey.get(s.institution) : undefined);
    return { id: s.id, name: s.name, status: s.status, institutionId: inst?.id ?? null, institution: inst?.name ?? s.institution,
      jurisdiction: inst?.jurisdiction ?? s.jurisdiction };
  });
}

// ---------------------------------------------------------------- study lifecycle

/** A study's lifecycle as stored; `version` advances with every write (the compare-and-set key). */
export interface LifecycleRow { study_id: string; state: string; lifecycle: string; version: number; updated_at: number }

export async function getLifecycleRow(db: GovDb, studyId: string, forUpdate: boolean): Promise<LifecycleRow | undefined> {
  let q = db.selectFrom('study_governance').selectAll().where('study_id', '=', studyId);
  if (forUpdate) q = q.forUpdate(); // PostgreSQL: a second decision on this study waits here until this one commits
  const r = await q.executeTakeFirst();
  return r && { study_id: r.study_id, state: r.state, lifecycle: r.lifecycle, version: num(r.version), updated_at: num(r.updated_at) };
}

/** Inserts (expectVersion undefined) or compare-and-sets on the version; false when another write came first. */
export async function putLifecycle(db: GovDb, studyId: string, state: string, lifecycle: unknown, at: number, expectVersion?: number): Promise<boolean> {
  if (expectVersion === undefined) {
    await db.insertInto('study_governance').values({ study_id: studyId, state, lifecycle: JSON.stringify(lifecycle), version: 1, updated_at: at }).execute();
    return true;
  }
  const r = await db.updateTable('study_governance').set({ state, lifecycle: JSON.stringify(lifecycle), version: expectVersion + 1, updated_at: at })
    .where('study_id', '=', studyId).where('version', '=', expectVersion).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export interface GovernanceEvent { id: number; studyId: string | null; kind: string; actor: string; data: unknown; at: number }

export async function addEvent(db: GovDb, e: { studyId: string | null; kind: string; actor: string; data: unknown; at: number }): Promise<void> {
  await db.insertInto('governance_events').values({ study_id: e.studyId, kind: e.kind, actor: e.actor, data: JSON.stringify(e.data ?? null), at: e.at }).execute();
}

export async function listEvents(db: GovDb, studyId?: string): Promise<GovernanceEvent[]> {
  let q = db.selectFrom('governance_events').selectAll().orderBy('id');
  if (studyId) q = q.where('study_id', '=', studyId);
  return (await q.execute()).map(toEvent);
}

export function toEvent(r: GovernanceEventsTable): GovernanceEvent {
  return { id: num(r.id), studyId: r.study_id, kind: r.kind, actor: r.actor, data: JSON.parse(r.data), at: num(r.at) };
}

// ---------------------------------------------------------------- site profiles

export interface SiteProfile {
  compute: { mode: 'own' | 'placed'; cpus?: number; gpus?: number; ramGiB?: number; minGpuMemoryGiB?: number; gpuType?: string };
  /** Training examples the site holds per dataset key. */
  datasets: Record<string, { trainExamples: number }>;
  updatedAt: number;
}

export async function putSiteProfile(db: GovDb, siteId: string, p: SiteProfile): Promise<void> {
  const row = { compute: JSON.stringify(p.compute), datasets: JSON.stringify(p.datasets), updated_at: p.updatedAt };
  await db.insertInto('site_profiles').values({ site_id: siteId, ...row }).onConflict((oc) => oc.column('site_id').doUpdateSet(row)).execute();
}

export async function getSiteProfile(db: GovDb, siteId: string): Promise<SiteProfile | undefined> {
  const r = await db.selectFrom('site_profiles').selectAll().where('site_id', '=', siteId).executeTakeFirst();
  return r && { compute: JSON.parse(r.compute), datasets: JSON.parse(r.datasets), updatedAt: num(r.updated_at) };
}

// ---------------------------------------------------------------- compute registry, placements, usage

export interface ResourceRow { id: string; institutionId: string; jurisdiction: string; scheduler: string; status: string; spec: unknown; createdAt: number; updatedAt: number }

export async function putResource(db: GovDb, r: { id: string; name: string; institution: string; jurisdiction: string; scheduler: string }, spec: unknown, at: number): Promise<'created' | 'updated'> {
  const exists = await db.selectFrom('compute_resources').select('id').where('id', '=', r.id).executeTakeFirst();
  const row = { name: r.name, institution_id: r.institution, jurisdiction: r.jurisdiction, scheduler: r.scheduler, spec: JSON.stringify(spec), status: 'active', updated_at: at };
  if (exists) {
    await db.updateTable('compute_resources').set(row).where('id', '=', r.id).execute();
    return 'updated';
  }
  await db.insertInto('compute_resources').values({ id: r.id, ...row, created_at: at }).execute();
  return 'created';
}

export async function listResources(db: GovDb): Promise<ResourceRow[]> {
  return (await db.selectFrom('compute_resources').selectAll().orderBy('id').execute()).map((r) => ({
    id: r.id, institutionId: r.institution_id, jurisdiction: r.jurisdiction, scheduler: r.scheduler, status: r.status,
    spec: JSON.parse(r.spec), createdAt: num(r.created_at), updatedAt: num(r.updated_at),
  }));
}

export interface Placement { taskId: string; studyId: string; siteId: string; resourceId: string; reason: string; placedAt: number; jobId: string | null; state: string }
export const toPlacement = (r: TaskPlacementsTable): Placement => ({ taskId: r.task_id, studyId: r.study_id, siteId: r.site_id, resourceId: r.resource_id,
  reason: r.reason, placedAt: num(r.placed_at), jobId: r.job_id, state: r.state });

export async function getPlacement(db: GovDb, taskId: string): Promise<Placement | undefined> {
  const r = await db.selectFrom('task_placements').selectAll().where('task_id', '=', taskId).executeTakeFirst();
  return r && toPlacement(r);
}
export async function putPlacement(db: GovDb, p: Placement): Promise<void> {
  await db.insertInto('task_placements').values({ task_id: p.taskId, study_id: p.studyId, site_id: p.siteId, resource_id: p.resourceId,
    reason: p.reason, placed_at: p.placedAt, job_id: p.jobId, state: p.state }).execute();
}
export async function updatePlacement(db: GovDb, taskId: string, set: { jobId?: string | null; state?: string }): Promise<void> {
  await db.updateTable('task_placements').set({ ...(set.jobId !== undefined ? { job_id: set.jobId } : {}), ...(set.state ? { state: set.state } : {}) })
    .where('task_id', '=', taskId).execute();
}
export async function listPlacements(db: GovDb, opts: { activeOnly?: boolean } = {}): Promise<Placement[]> {
  let q = db.selectFrom('task_placements').selectAll().orderBy('placed_at');
  if (opts.activeOnly) q = q.where('state', 'in', ['placed', 'submitted', 'running']);
  return (await q.execute()).map(toPlacement);
}

export interface UsageRow {
  taskId: string; studyId: string; siteId: string; siteInstitution: string; siteCountry: string; resourceId: string;
  institution: string; country: string; scheduler: string; cpuSeconds: number; gpuSeconds: number; wallSeconds: number;
  cpuBasis: string; jobId: string | null; recordedAt: number;
}

/**
 * Records a task's usage once: false when the task's usage was already recorded. The primary key decides (one
 * INSERT … ON CONFLICT DO NOTHING), not the driver's error text, so two concurrent reports cannot both count.
 */
export async function addUsage(db: GovDb, u: UsageRow): Promise<boolean> {
  const r = await db.insertInto('compute_usage').values({
    task_id: u.taskId, study_id: u.studyId, site_id: u.siteId, site_institution: u.siteInstitution, site_country: u.siteCountry,
    resource_id: u.resourceId, institution: u.institution, country: u.country, scheduler: u.scheduler, cpu_seconds: u.cpuSeconds,
    gpu_seconds: u.gpuSeconds, wall_seconds: u.wallSeconds, cpu_basis: u.cpuBasis, job_id: u.jobId, recorded_at: u.recordedAt,
  }).onConflict((oc) => oc.column('task_id').doNothing()).executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

export async function listUsage(db: GovDb, studyId?: string): Promise<UsageRow[]> {
  let q = db.selectFrom('compute_usage').selectAll().orderBy('recorded_at').orderBy('task_id');
  if (studyId) q = q.where('study_id', '=', studyId);
  return (await q.execute()).map((r) => ({
    taskId: r.task_id, studyId: r.study_id, siteId: r.site_id, siteInstitution: r.site_institution, siteCountry: r.site_country,
    resourceId: r.resource_id, institution: r.institution, country: r.country, scheduler: r.scheduler, cpuSeconds: num(r.cpu_seconds),
    gpuSeconds: num(r.gpu_seconds), wallSeconds: num(r.wall_seconds), cpuBasis: r.cpu_basis, jobId: r.job_id, recordedAt: num(r.recorded_at),
  }));
}

// ---------------------------------------------------------------- model cards

export interface ModelCardRow { studyId: string; json: unknown; markdown: string; auditHead: string | null; createdAt: number }

export async function putModelCard(db: GovDb, c: ModelCardRow): Promise<void> {
  const row = { json: JSON.stringify(c.json), markdown: c.markdown, audit_head: c.auditHead, created_at: c.createdAt };
  await db.insertInto('model_cards').values({ study_id: c.studyId, ...row }).onConflict((oc) => oc.column('study_id').doNothing()).execute();
}

export async function getModelCard(db: GovDb, studyId: string): Promise<ModelCardRow | undefined> {
  const r = await db.selectFrom('model_cards').selectAll().where('study_id', '=', studyId).executeTakeFirst();
  return r && { studyId: r.study_id, json: JSON.parse(r.json), markdown: r.markdown, auditHead: r.audit_head, createdAt: num(r.created_at) };
}
