/**
 * Test helpers that run the real `setu` binary as separate OS processes: a coordinator and site
 * agents talking HTTP over loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { readKeyFile } from '../coordinator/auth.js';
import { randomBytes } from 'node:crypto';
import { generateSigningKeys } from '../protocol/signing.js';
import { ApiError, HttpClient } from '../site/http.js';

export const SETU_MAIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Runs `setu args…`; `nodeArgs` go to node itself (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
export function runSetu(args: string[], logFile: string, nodeArgs: string[] = []): ChildProcess {
  mkdirSync(dirname(logFile), { recursive: true });
  const child = spawn(process.execPath, [...nodeArgs, SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  return child;
}

/**
 * Starts `setu coordinator start` and resolves once it says it is listening (its `{"event":"listening"}` line),
 * rejects if it exits first. A coordinator that neither listens nor exits within a minute is killed, so it
 * cannot keep the test process alive.
 */
export async function startCoordinatorProcess(dataDir: string, port: number, logFile: string, opts: { db?: string; args?: string[]; nodeArgs?: string[] } = {}): Promise<ChildProcess> {
  const child = runSetu(['coordinator', 'start', '--data-dir', dataDir, '--port', String(port), ...(opts.db ? ['--db', opts.db] : []), ...(opts.args ?? [])], logFile, opts.nodeArgs);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const done = (e?: Error) => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      if (e) reject(e);
      else resolve();
    };
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('"event":"listening"')) done();
    };
    const onExit = (code: number | null) => done(new Error(`coordinator exited with ${code}; see ${logFile}`));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done(new Error(`coordinator did not listen within 60 s; see ${logFile}`));
    }, 60_000);
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
  });
  return child;
}

/**
 * Writes a heart site config for `center` and starts its agent with an invite token. `extra` adds site.yaml keys
 * (a privacy budget, say). Started again on the same `dir` it is the same, enrolled site (the token is then unused).
 */
export function startHeartSite(dir: string, coordinatorUrl: string, center: number, token: string, extra: Record<string, unknown> = {}): ChildProcess {
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'site.yaml');
  writeFileSync(cfg, YAML.stringify({ coordinator: coordinatorUrl, stateDir: 'state', pollWaitMs: 5000, datasets: { heart: { format: 'fed-heart-disease', center } }, ...extra }));
  return runSetu(['site', 'start', '--config', cfg, '--token', token], join(dir, 'agent.log'));
}

/**
 * Invites and starts heart sites hospital-0 … hospital-(n-1) (agent processes under `dir/site-k`, pushed onto
 * `children` so the caller stops them) and resolves once all n are enrolled.
 */
/** Enrols heart sites hospital-0…n-1 (site c over center c), each with `extra(c)` in its site.yaml, and waits until all are enrolled. */
export async function enrolHeartSites(admin: HttpClient, url: string, dir: string, n: number, children: ChildProcess[], extra: (center: number) => Record<string, unknown> = () => ({}), timeoutMs = 30_000): Promise<void> {
  for (let c = 0; c < n; c++) {
    const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: `hospital-${c}` });
    children.push(startHeartSite(join(dir, `site-${c}`), url, c, inv.token, extra(c)));
  }
  await waitFor(`${n} enrolled sites`, async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === n ? true : undefined), timeoutMs);
}

export async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) return undefined;
      const done = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      return done;
    }),
  );
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * An operator client with the consortium admin's credential from a coordinator's data directory.
 * Every end-to-end test gets its admin access here, so a change of credential scheme changes one place.
 */
export function adminClient(dataDir: string, url: string, giveUpAfterMs = 20_000): HttpClient {
  const k = readKeyFile(join(dataDir, 'admin.key'));
  return new HttpClient({ baseUrl: url, signer: { keyId: k.keyId, privateKey: k.privateKey }, giveUpAfterMs });
}

/**
 * A study lead's client: the admin invites a user with role study_lead, whose key is made here and registered.
 * Studies are created by study leads (governance/roles.ts), not by the consortium admin.
 */
export async function studyLeadClient(admin: HttpClient, url: string, name = `lead-${randomBytes(3).toString('hex')}`): Promise<HttpClient> {
  const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name, role: 'study_lead', ttlHours: 1 });
  const keys = generateSigningKeys();
  await new HttpClient({ baseUrl: url, giveUpAfterMs: 20_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
  return new HttpClient({ baseUrl: url, signer: { keyId: inv.userId, privateKey: keys.privateKey }, giveUpAfterMs: 20_000 });
}

/** An operator client signed with the bootstrap admin key of an in-process coordinator. */
export function adminOf(c: { url: string; adminKey: { keyId: string; privateKey: string } | undefined }): HttpClient {
  if (!c.adminKey) throw new Error('this coordinator has no bootstrap admin key');
  return new HttpClient({ baseUrl: c.url, signer: { keyId: c.adminKey.keyId, privateKey: c.adminKey.privateKey }, giveUpAfterMs: 20_000 });
}

/** Awaits a call that the coordinator must refuse, and returns the refusal (status, code, message). */
export async function refused(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error('expected the coordinator to refuse');
}
