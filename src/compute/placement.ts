// Placement: where a site without compute of its own trains. Data never crosses a border unless the jurisdiction
// policy explicitly lists the compute's jurisdiction; among the resources allowed, the one with the most free
// capacity that fits wins, and ties break on the resource id so the same inputs always give the same answer.
import type { ComputeResource, FreeCapacity, GpuSpec } from './types.js';

export interface PlacementRequest {
  siteId: string;
  /** Where the site's data lives (ISO country code). */
  dataJurisdiction: string;
  cpus: number;
  gpus: number;
  ramGiB: number;
  /** Each GPU must have at least this much memory. */
  minGpuMemoryGiB?: number;
  /** Each GPU must be of this type: a GPU's Slurm `gresType` or its `model` (case-insensitive). */
  gpuType?: string;
  /**
   * From the policy layer: jurisdictions whose compute may train on this data. Absent: only the data's own.
   * An in-jurisdiction resource is always preferred over a foreign one the policy allows.
   */
  allowedJurisdictions?: readonly string[];
  /** Instant the job would start, for resources that offer availability windows. Default: now. */
  at?: Date;
}

export interface Rejection { resourceId: string; reason: string }

export type PlacementResult =
  | { ok: true; resource: ComputeResource; free: FreeCapacity; reason: string; rejected: Rejection[] }
  | { ok: false; reason: string; rejected: Rejection[] };

/** Whether a GPU of the resource is of the type asked for (its Slurm GRES type or its model name). */
export function gpuIsType(g: GpuSpec, type: string): boolean {
  const t = type.toLowerCase();
  return g.gresType?.toLowerCase() === t || g.model.toLowerCase() === t;
}

/** "2 × A100-80GB (gres a100, 80 GiB)…": what a resource offers, for refusals. */
export function describeGpus(gpus: readonly GpuSpec[]): string {
  if (gpus.length === 0) return 'no GPUs';
  return gpus.map((g) => `${g.count} × ${g.model} (${g.gresType ? `gres type ${g.gresType}, ` : ''}${g.memoryGiB} GiB)`).join(', ');
}

/** What is free on `r` at `at`: an explicit window covering `at`, else `now`, else the whole capacity. */
export function freeAt(r: ComputeResource, at: Date): FreeCapacity | undefined {
  const windows = r.availability?.windows;
  if (windows && windows.length > 0) {
    const t = at.getTime();
    const w = windows.find((w) => Date.parse(w.from) <= t && t < Date.parse(w.to));
    return w?.free;
  }
  if (r.availability?.now) return r.availability.now;
  return { cpus: r.capacity.cpus, gpus: r.capacity.gpus.reduce((n, g) => n + g.count, 0), ramGiB: r.capacity.ramGiB };
}

function allowedSet(req: PlacementRequest): Set<string> {
  return new Set(req.allowedJurisdictions ?? [req.dataJurisdiction]);
}

/**
 * Whether `resource` may run this request: jurisdiction first (a refusal names both jurisdictions), then capacity.
 * Use it when a resource is named explicitly; `place` uses it for every candidate.
 */
export function checkPlacement(req: PlacementRequest, resource: ComputeResource):
  { ok: true; free: FreeCapacity } | { ok: false; reason: string } {
  const allowed = allowedSet(req);
  if (!allowed.has(resource.jurisdiction)) {
    const policy = req.allowedJurisdictions
      ? `the jurisdiction policy allows compute only in ${[...allowed].sort().join(', ') || 'no jurisdiction'}`
      : 'data may not leave its jurisdiction';
    return {
      ok: false,
      reason: `refused: site ${req.siteId}'s data is in ${req.dataJurisdiction} and resource ${resource.id} is in ` +
        `${resource.jurisdiction}; placing it there would move data across a border (${policy})`,
    };
  }
  const at = req.at ?? new Date();
  const free = freeAt(resource, at);
  if (!free) return { ok: false, reason: `resource ${resource.id} offers no availability window at ${at.toISOString()}` };
  if (req.gpus > 0) {
    // A GPU task goes only where GPUs exist (of its type, with its memory): said before free counts, which change.
    const gpus = resource.capacity.gpus;
    if (gpus.length === 0) return { ok: false, reason: `resource ${resource.id} offers no GPUs; ${req.gpus} requested` };
    const typed = gpus.filter((g) => (req.gpuType === undefined || gpuIsType(g, req.gpuType)) && (req.minGpuMemoryGiB === undefined || g.memoryGiB >= req.minGpuMemoryGiB));
    const have = typed.reduce((n, g) => n + g.count, 0);
    if (have < req.gpus) {
      const want = [req.gpuType !== undefined ? `of type ${req.gpuType}` : '', req.minGpuMemoryGiB !== undefined ? `with ≥${req.minGpuMemoryGiB} GiB` : ''].filter(Boolean).join(' ');
      return { ok: false, reason: `resource ${resource.id} has ${have} GPUs ${want}; ${req.gpus} requested (it offers ${describeGpus(gpus)})` };
    }
  }
  const short: string[] = [];
  if (free.cpus < req.cpus) short.push(`${req.cpus} CPUs requested, ${free.cpus} free`);
  if (free.gpus < req.gpus) short.push(`${req.gpus} GPUs requested, ${free.gpus} free`);
  if (free.ramGiB < req.ramGiB) short.push(`${req.ramGiB} GiB RAM requested, ${free.ramGiB} free`);
  if (short.length) return { ok: false, reason: `resource ${resource.id} lacks capacity: ${short.join('; ')}` };
  return { ok: true, free };
}

/** Orders fitting candidates: in-jurisdiction first, then most free GPUs (when asked for), CPUs, RAM, then id. */
function better(req: PlacementRequest, a: { r: ComputeResource; free: FreeCapacity },
  b: { r: ComputeResource; free: FreeCapacity }): number {
  const home = (x: ComputeResource) => (x.jurisdiction === req.dataJurisdiction ? 0 : 1);
  return home(a.r) - home(b.r)
    || (req.gpus > 0 ? b.free.gpus - a.free.gpus : 0)
    || b.free.cpus - a.free.cpus
    || b.free.ramGiB - a.free.ramGiB
    || (a.r.id < b.r.id ? -1 : a.r.id > b.r.id ? 1 : 0);
}

export function place(req: PlacementRequest, resources: readonly ComputeResource[]): PlacementResult {
  const rejected: Rejection[] = [];
  const fits: { r: ComputeResource; free: FreeCapacity }[] = [];
  for (const r of resources) {
    const c = checkPlacement(req, r);
    if (c.ok) fits.push({ r, free: c.free });
    else rejected.push({ resourceId: r.id, reason: c.reason });
  }
  if (fits.length === 0) {
    const allowed = [...allowedSet(req)].sort().join(', ');
    const inJurisdiction = resources.filter((r) => allowedSet(req).has(r.jurisdiction));
    const withGpus = inJurisdiction.filter((r) => r.capacity.gpus.some((g) => req.gpuType === undefined || gpuIsType(g, req.gpuType)));
    const gpuWords = `${req.gpus} GPU${req.gpus === 1 ? '' : 's'}${req.gpuType !== undefined ? ` of type ${req.gpuType}` : ''}`;
    const why = inJurisdiction.length === 0
      ? `no compute resource is registered in ${allowed}, where site ${req.siteId}'s data (${req.dataJurisdiction}) may be processed`
      : req.gpus > 0 && withGpus.length === 0
        ? `the site asks for ${gpuWords} and none of the ${inJurisdiction.length} resource(s) in ${allowed} offers ${req.gpuType !== undefined ? 'that type (register a resource whose capacity.gpus lists it, or change the site\'s compute.gpuType)' : 'GPUs (register a resource whose capacity.gpus lists them, or lower the site\'s compute.gpus)'}`
      : `none of the ${inJurisdiction.length} resource(s) in ${allowed} has capacity for ${req.cpus} CPUs, ${gpuWords}, ` +
        `${req.ramGiB} GiB RAM`;
    return { ok: false, reason: `no placement for site ${req.siteId}: ${why}`, rejected };
  }
  fits.sort((a, b) => better(req, a, b));
  const best = fits[0]!;
  return {
    ok: true,
    resource: best.r,
    free: best.free,
    reason: `placed on ${best.r.id} (${best.r.jurisdiction}, ${best.r.institution}): data stays in ` +
      `${req.dataJurisdiction === best.r.jurisdiction ? req.dataJurisdiction : `policy-allowed ${best.r.jurisdiction}`}; ` +
      `${best.free.cpus} CPUs, ${best.free.gpus} GPUs, ${best.free.ramGiB} GiB free`,
    rejected,
  };
}
