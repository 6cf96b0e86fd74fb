/**
 * A task's compute usage as the ledger records it, shared by the usage route (routes/compute.ts,
 * POST /v1/agent/tasks/:id/usage) and a result that carries its usage in its metadata (`ResultMeta.usage`,
 * routes/results.ts acceptResult), so the two can never check or attribute differently.
 *
 * The site's institution comes from its own row and the institutions (a handful), not from every site's
 * membership: the route used to read the whole site list per report, a round of N sites cost N² rows.
 */
import type { UsageRequest } from '../protocol/replies.js';
import { memberships, type Institution, type SitesView } from '../store/governance.js';
import type { SiteRow, Store, TaskRow, UsageRow } from '../store/store.js';
import { HttpError } from './auth.js';

export interface UsageToRecord {
  row: UsageRow;
  /** The task ran on placed compute: its placement moves to `done` with the record. */
  placed: boolean;
}

/** Checks a usage report against the task's placement and builds its ledger row; 400 `wrong_resource` when it bills the wrong resource. */
export async function usageRecordOf(store: Store, site: SiteRow, task: TaskRow, u: UsageRequest, at: number): Promise<UsageToRecord> {
  // `site` is the authenticated caller's row (auth.ts): linking a site to an institution makes this coordinator
  // read it again at its next request (identity.changed), another coordinator within CALLER_CACHE_MS, the bound
  // its identity has too. Reading it again here was one statement per result.
  const me = memberships([site as unknown as SitesView], await institutionsFor(store, site))[0];
  const placement = await store.getPlacement(task.id);
  let contributor: { institution: string; country: string; resourceId: string };
  if (placement) {
    // Usage on placed compute must name the resource the coordinator chose: a site cannot bill another partner.
    if (u.resourceId !== placement.resourceId) throw new HttpError(400, 'wrong_resource', `task ${task.id} was placed on ${placement.resourceId}, not ${u.resourceId}`);
    const res = (await store.listResources()).find((r) => r.id === placement.resourceId)!;
    contributor = { institution: res.institutionId, country: res.jurisdiction, resourceId: res.id };
  } else {
    // Trained on the site's own machine: its own institution contributed what it consumed.
    if (u.resourceId !== `site:${site.name}`) throw new HttpError(400, 'wrong_resource', `task ${task.id} ran on the site's own compute; report it as site:${site.name}`);
    contributor = { institution: me?.institutionId ?? me?.institution ?? site.name, country: me?.jurisdiction ?? '??', resourceId: u.resourceId };
  }
  return {
    placed: !!placement,
    row: {
      taskId: task.id, studyId: task.study_id, siteId: site.id, siteInstitution: me?.institutionId ?? me?.institution ?? site.name, siteCountry: me?.jurisdiction ?? '??',
      resourceId: contributor.resourceId, institution: contributor.institution, country: contributor.country, scheduler: u.scheduler,
      cpuSeconds: u.cpuSeconds, gpuSeconds: u.gpuSeconds, wallSeconds: u.wallSeconds, cpuBasis: u.cpuBasis, jobId: u.jobId ?? null, recordedAt: at,
    },
  };
}

/**
 * Institutions as this process last read them, by store. Their rows are only ever inserted (never changed or
 * removed), so a remembered row is the row; only a site whose institution is not among them (linked to one created
 * since, by any coordinator, or naming one by text) reads the list again. It was one statement per result.
 */
const knownInstitutions = new WeakMap<Store, Institution[]>();

async function institutionsFor(store: Store, site: SiteRow): Promise<Institution[]> {
  const known = knownInstitutions.get(store);
  // Its row carries institution_id (selectAll; SitesTable predates the column): a link by id is exact once known,
  // no link and no institution text matches none; a link by name or id text may name one created since.
  const linked = (site as unknown as SitesView).institution_id;
  if (known && (linked ? known.some((i) => i.id === linked) : !site.institution)) return known;
  const fresh = await store.listInstitutions();
  knownInstitutions.set(store, fresh);
  return fresh;
}

/** Records it inside `tx`; false when the task's usage was recorded already (a task's usage counts once). */
export async function recordUsageInTx(tx: Store, r: UsageToRecord): Promise<boolean> {
  if (!(await tx.addUsage(r.row))) return false;
  if (r.placed) await tx.updatePlacement(r.row.taskId, { state: 'done', ...(r.row.jobId ? { jobId: r.row.jobId } : {}) });
  return true;
}
