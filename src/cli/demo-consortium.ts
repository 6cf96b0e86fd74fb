/**
 * The demo's consortium: the four Fed-Heart-Disease hospitals stand in for two Indian and two Japanese hospitals,
 * each of an institution with its own site admin, and a study lead; the study goes through the governance every
 * consortium study does (proposal, each site admin's approval with terms, the IN and JP policy check, sign-offs and
 * the release), so the dashboard shows the India–Japan consortium as it would be. People's keys are made here and,
 * like every file the demo writes, kept mode 600 in the data directory (`people/<name>.key`) so one can log in to
 * the dashboard as any of them.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { writeKeyFile } from '../coordinator/auth.js';
import type { InviteResponse, UserInviteResponse } from '../protocol/api.js';
import { HEART_CENTERS } from '../site/data/heart.js';
import { UsageError } from './args.js';

/** Which institution each bundled hospital's data stands in for (the data are UCI's; the placement is the demo's). */
export const DEMO_INSTITUTIONS = [
  { id: 'aiims-delhi', name: 'AIIMS New Delhi', jurisdiction: 'IN', site: HEART_CENTERS[0], admin: 'arjun' },
  { id: 'pgimer', name: 'PGIMER Chandigarh', jurisdiction: 'IN', site: HEART_CENTERS[1], admin: 'meera' },
  { id: 'osaka-univ', name: 'Osaka University Hospital', jurisdiction: 'JP', site: HEART_CENTERS[2], admin: 'kenji' },
  { id: 'kyoto-univ', name: 'Kyoto University Hospital', jurisdiction: 'JP', site: HEART_CENTERS[3], admin: 'aiko' },
] as const;

export const DEMO_LEAD = 'priya';

export interface DemoPeople {
  lead: HttpClient;
  /** Site admin of each site, by site name. */
  siteAdmins: Map<string, HttpClient>;
  /** Invite token of each site, by site name. */
  invites: Map<string, string>;
}

/** What the demo leaves in a data directory; a directory holding any of it without the marker is not the demo's. */
const DEMO_ENTRIES = ['coordinator', 'sites', 'people', 'logs'];
const MARKER = '.setu-demo';

/**
 * Prepares the data directory: made (mode 700) if new; emptied of an earlier demo's files when the marker says the
 * demo wrote them, so `setu demo --data-dir D` can run again on the same D; refused when D holds a coordinator or
 * sites the demo did not make (a real deployment's data is never deleted).
 */
export function prepareDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const present = readdirSync(dir).filter((f) => DEMO_ENTRIES.includes(f));
  if (present.length && !existsSync(join(dir, MARKER))) {
    throw new UsageError(`--data-dir ${dir} holds ${present.join(', ')} that an earlier setu demo did not write; give the demo a directory of its own`);
  }
  for (const f of present) rmSync(join(dir, f), { recursive: true, force: true });
  writeFileSync(join(dir, MARKER), 'written by setu demo: the demo replaces coordinator/, sites/, people/ and logs/ here when it runs again\n', { mode: 0o600 });
}

async function enrolUser(admin: HttpClient, url: string, dataDir: string, name: string, role: string, institution?: string): Promise<HttpClient> {
  const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name, role, ttlHours: 1, ...(institution ? { institution } : {}) });
  const keys = generateSigningKeys();
  await new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
  const dir = join(dataDir, 'people');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeKeyFile(join(dir, `${name}.key`), { keyId: inv.userId, privateKey: keys.privateKeyPem, publicKey: keys.publicKeyRaw, coordinator: url });
  return new HttpClient({ baseUrl: url, signer: { keyId: inv.userId, privateKey: keys.privateKey }, giveUpAfterMs: 10_000 });
}

/** Institutions, a study lead, a site admin per institution, and an invite per site. */
export async function setUpConsortium(admin: HttpClient, url: string, dataDir: string): Promise<DemoPeople> {
  const siteAdmins = new Map<string, HttpClient>();
  const invites = new Map<string, string>();
  for (const i of DEMO_INSTITUTIONS) {
    await admin.json('POST', '/v1/institutions', { id: i.id, name: i.name, kind: 'hospital', jurisdiction: i.jurisdiction });
    siteAdmins.set(i.site, await enrolUser(admin, url, dataDir, i.admin, 'site_admin', i.id));
    invites.set(i.site, (await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: i.site, institution: i.id, ttlHours: 1 })).token);
  }
  const lead = await enrolUser(admin, url, dataDir, DEMO_LEAD, 'study_lead', DEMO_INSTITUTIONS[0].id);
  return { lead, siteAdmins, invites };
}

/** Proposal and every site admin's approval, under the terms a heart-disease research study would get. */
export async function approveStudy(p: DemoPeople, studyId: string): Promise<void> {
  await p.lead.json('POST', `/v1/studies/${studyId}/propose`, {});
  for (const [site, admin] of p.siteAdmins) {
    await admin.json('POST', `/v1/studies/${studyId}/approve`, { site, terms: { purpose: 'heart-disease risk research (Setu demo)', conditions: ['no commercial use'] } });
  }
}

/** The sign-offs the IN and JP policies ask for (each site's admin; a consortium admin for IN), then the release. */
export async function releaseModel(p: DemoPeople, admin: HttpClient, studyId: string): Promise<void> {
  for (const [site, a] of p.siteAdmins) await a.json('POST', `/v1/studies/${studyId}/signoff`, { site });
  await admin.json('POST', `/v1/studies/${studyId}/signoff`, {});
  await p.lead.json('POST', `/v1/studies/${studyId}/release`, {});
}
