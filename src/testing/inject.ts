/**
 * Test helper: requests to an in-process coordinator through Fastify's `inject()` (no socket), signed like
 * the agent and CLI sign them, plus the two enrolments every HTTP-layer test needs (a user with a role, a
 * site). Use a real process instead where the test is about the process (memory, signals, flags).
 */
import type { FastifyInstance } from 'fastify';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';
import type { StudySpec } from '../protocol/api.js';

export interface Identity {
  keyId: string;
  privateKey: string;
}

export interface InjectOptions {
  as?: Identity;
  json?: unknown;
  raw?: string | Buffer;
  type?: string;
  headers?: Record<string, string>;
  remoteAddress?: string;
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
  json: any;
}

export async function inject(app: FastifyInstance, method: string, path: string, o: InjectOptions = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  let payload: string | Buffer | undefined;
  if (o.json !== undefined) {
    payload = JSON.stringify(o.json);
    headers['content-type'] = 'application/json';
  } else if (o.raw !== undefined) {
    payload = o.raw;
    headers['content-type'] = o.type ?? 'application/octet-stream';
  }
  if (o.as) Object.assign(headers, signRequest({ method, path, body: payload, keyId: o.as.keyId, privateKey: o.as.privateKey }));
  Object.assign(headers, o.headers ?? {});
  const r = await app.inject({ method: method as 'GET', url: path, headers, ...(payload !== undefined ? { payload } : {}), ...(o.remoteAddress ? { remoteAddress: o.remoteAddress } : {}) });
  let json: unknown;
  try {
    json = JSON.parse(r.body);
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, headers: r.headers, body: r.body, json };
}

/** A user with `role`, invited by `admin` and enrolled with a key made here. */
export async function enrolUser(app: FastifyInstance, admin: Identity, name: string, role: string): Promise<Identity & { inviteToken: string }> {
  const inv = await inject(app, 'POST', '/v1/users', { as: admin, json: { name, role } });
  if (inv.status !== 200) throw new Error(`invite ${name}: ${inv.status} ${inv.body}`);
  const keys = generateSigningKeys();
  const e = await inject(app, 'POST', '/v1/users/enrol', { json: { token: inv.json.token, publicKey: keys.publicKeyRaw } });
  if (e.status !== 200) throw new Error(`enrol ${name}: ${e.status} ${e.body}`);
  return { keyId: inv.json.userId as string, privateKey: keys.privateKeyPem, inviteToken: inv.json.token as string };
}

/** A site invited by `admin` and enrolled with a key made here (declaring `cohort` heart examples). */
export async function enrolSite(app: FastifyInstance, admin: Identity, name: string, cohort = 100): Promise<Identity & { inviteToken: string }> {
  const inv = await inject(app, 'POST', '/v1/invites', { as: admin, json: { siteName: name } });
  if (inv.status !== 200) throw new Error(`invite site ${name}: ${inv.status} ${inv.body}`);
  const keys = generateSigningKeys();
  const e = await inject(app, 'POST', '/v1/enrol', { json: { token: inv.json.token, publicKey: keys.publicKeyRaw, cohorts: { heart: cohort } } });
  if (e.status !== 200) throw new Error(`enrol site ${name}: ${e.status} ${e.body}`);
  return { keyId: e.json.siteId as string, privateKey: keys.privateKeyPem, inviteToken: inv.json.token as string };
}

/** A small logistic study on the heart data over the named sites: one local step per round, long deadlines. */
export function heartStudy(name: string, sites: string[], rounds = 1): StudySpec {
  return {
    name,
    dataset: 'heart',
    model: { kind: 'logistic', inputDim: 13 },
    strategy: { name: 'FedAvg' },
    rounds,
    fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } },
    sites,
    roundTimeoutSeconds: 3600,
  };
}
