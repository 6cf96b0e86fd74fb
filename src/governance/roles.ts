/**
 * Roles and the permission table: which role may perform which API action. The coordinator checks
 * `can(role, action)` on every route, then the action's scope (a site admin acts only for sites of their own
 * institution, a study lead only on studies they lead, a site agent only on its own tasks and updates).
 * Deny by default: an action or role missing from the table is refused.
 */

export const ROLES = ['consortium_admin', 'study_lead', 'site_admin', 'auditor', 'site'] as const;
export type Role = (typeof ROLES)[number];

/** Where a granted action applies; the coordinator resolves ownership against the store. */
export type Scope =
  | 'any' // the whole consortium
  | 'own-institution' // sites, users and compute of the caller's institution
  | 'own-study' // studies the caller leads
  | 'own-site'; // the calling site agent's own tasks, updates and keys

interface ActionSpec {
  doc: string;
  grants: Partial<Record<Role, Scope>>;
}

/**
 * Every action the public API exposes. Reading is deliberately narrower than one might expect: site agents
 * see their own tasks only, and no role can download another site's individual update (there is no action
 * for it: the coordinator never serves one).
 */
export const ACTIONS = {
  'consortium.view': { doc: 'list institutions, sites, users and their jurisdictions', grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any' } },
  'institution.create': { doc: 'register an institution with its kind and jurisdiction', grants: { consortium_admin: 'any' } },
  'user.create': { doc: 'create a user, give them a role and register their public key', grants: { consortium_admin: 'any' } },
  'user.revoke': { doc: "revoke a user's key; later requests with it get 401", grants: { consortium_admin: 'any' } },
  'invite.create': { doc: 'issue a one-time, expiring enrolment invite for a site', grants: { consortium_admin: 'any', site_admin: 'own-institution' } },
  'site.revoke': { doc: "revoke a site's key; it can no longer poll or upload", grants: { consortium_admin: 'any', site_admin: 'own-institution' } },
  'key.rotate': { doc: "replace one's own public key, signed with the old key", grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any', site: 'own-site' } },
  'study.create': { doc: 'write a study draft (model, strategy, sites, privacy settings)', grants: { study_lead: 'any' } },
  'study.propose': { doc: 'submit a draft to the sites for approval', grants: { study_lead: 'own-study' } },
  'study.view': { doc: 'read a study, its rounds, per-round metrics and approvals', grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any', site: 'own-site' } },
  'study.approve': { doc: "approve a study for one's site, with data-use terms", grants: { site_admin: 'own-institution' } },
  'study.decline': { doc: "decline a study for one's site, with a reason", grants: { site_admin: 'own-institution' } },
  'study.withdraw': { doc: "withdraw one's site from a study; its data is unused from the next round on", grants: { site_admin: 'own-institution' } },
  'study.start': { doc: 'start an approved study after the jurisdiction policy check passes', grants: { study_lead: 'own-study', consortium_admin: 'any' } },
  'study.stop': { doc: 'stop a running study for good', grants: { study_lead: 'own-study', consortium_admin: 'any' } },
  'task.poll': { doc: "long-poll for the calling site's next task", grants: { site: 'own-site' } },
  'update.submit': { doc: 'upload the result of a task the site was given', grants: { site: 'own-site' } },
  'model.download': { doc: 'download an aggregated global model version (never an individual update)', grants: { study_lead: 'own-study', site: 'own-site', consortium_admin: 'any' } },
  'model.signoff': { doc: 'record a sign-off on releasing a model, as a jurisdiction policy requires', grants: { consortium_admin: 'any', study_lead: 'own-study', site_admin: 'own-institution' } },
  'model.release': { doc: 'release a model once every required sign-off is in', grants: { study_lead: 'own-study', consortium_admin: 'any' } },
  'model.card.view': { doc: "read a completed study's model card", grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any' } },
  'privacy.view': { doc: 'read the privacy ledger: (ε, δ) spent per site and study', grants: { consortium_admin: 'any', study_lead: 'own-study', site_admin: 'own-institution', auditor: 'any', site: 'own-site' } },
  'compute.register': { doc: 'register or update a compute resource and its capacity', grants: { consortium_admin: 'any', site_admin: 'own-institution' } },
  'compute.view': { doc: 'list compute resources, queues and the usage ledger', grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any' } },
  'policy.view': { doc: 'read jurisdiction policies and the result of a study check', grants: { consortium_admin: 'any', study_lead: 'any', site_admin: 'any', auditor: 'any' } },
  'audit.view': { doc: 'read and verify the audit chain', grants: { consortium_admin: 'any', auditor: 'any' } },
  'audit.export': { doc: 'export the audit chain for an external auditor', grants: { consortium_admin: 'any', auditor: 'any' } },
} as const satisfies Record<string, ActionSpec>;

export type Action = keyof typeof ACTIONS;

export function isRole(x: unknown): x is Role {
  return typeof x === 'string' && (ROLES as readonly string[]).includes(x);
}

export function isAction(x: unknown): x is Action {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ACTIONS, x);
}

/** The scope within which `role` may perform `action`, or null when it may not at all. */
export function scopeOf(role: string, action: string): Scope | null {
  if (!isRole(role) || !isAction(action)) return null;
  const grants = ACTIONS[action].grants as Partial<Record<Role, Scope>>;
  return grants[role] ?? null;
}

/** True when `role` may perform `action` somewhere; the caller still checks the scope. */
export function can(role: string, action: string): boolean {
  return scopeOf(role, action) !== null;
}

/** Roles allowed to perform `action`, for error messages ("needs study_lead or consortium_admin"). */
export function rolesFor(action: Action): Role[] {
  return ROLES.filter((r) => can(r, action));
}
