/**
 * Test helpers for runs that crash site agents or coordinators and compare with an uninterrupted run: real agent
 * processes whose output lines are kept, and a federation set up once on disk (coordinator store, enrolled sites,
 * a created study, a lead whose key the test holds), so that a copy of the folder is the very same federation.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator } from '../coordinator/start.js';
import { SETU_MAIN, adminOf } from './processes.js';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';

export interface Agent {
  name: string;
  dir: string;
  child: ChildProcess;
  /** Every line it wrote (stdout and stderr), across restarts when the same array is passed again. */
  lines: string[];
}

export function startAgent(name: string, dir: string, lines: string[] = [], env: Record<string, string> = {}): Agent {
  const child = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', join(dir, 'site.yaml')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let buf = '';
  const feed = (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  return { name, dir, child, lines };
}

export const exited = (c: ChildProcess): Promise<void> => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r())));

export async function stopAgents(agents: Agent[]): Promise<void> {
  await Promise.all(agents.map(async (a) => {
    if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGTERM');
    await exited(a.child);
  }));
}

/** Runs a `setu` command to its end; rejects with its output when it fails. */
export function runSetuCommand(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`setu ${args.join(' ')} exited ${code}: ${out}`))));
  });
}

export interface Federation {
  studyId: string;
  leadKey: { keyId: string; privateKey: string };
  /** Each site's folder, relative to the federation's root (site.yaml and its state directory are inside). */
  sites: { name: string; rel: string }[];
}

/**
 * Sets up, under `root`, a coordinator (root/coord) on `port`, `centers.length` heart sites enrolled (root/site-k,
 * center k of Fed-Heart-Disease) and the study `spec` created by a study lead, not started; then stops the
 * coordinator. Nothing has run yet, so a copy of `root` is the same federation.
 */
export async function setUpFederation(root: string, port: number, centers: number[], spec: Record<string, unknown>): Promise<Federation> {
  const c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50 });
  try {
    const admin = adminOf(c);
    const sites: Federation['sites'] = [];
    for (const [k, center] of centers.entries()) {
      const rel = `site-${k}`;
      const dir = join(root, rel);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'site.yaml'), YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 2000, datasets: { heart: { format: 'fed-heart-disease', center } } }));
      const name = `hospital-${k}`;
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: name });
      await runSetuCommand(['site', 'enrol', '--config', join(dir, 'site.yaml'), '--token', inv.token]);
      sites.push({ name, rel });
    }
    // The lead's key is made here, so both runs can sign as the same lead.
    const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name: 'lead', role: 'study_lead', ttlHours: 1 });
    const keys = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url, giveUpAfterMs: 20_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
    const leadKey = { keyId: inv.userId, privateKey: keys.privateKeyPem };
    const lead = new HttpClient({ baseUrl: c.url, signer: leadKey, giveUpAfterMs: 20_000 });
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    return { studyId: id, leadKey, sites };
  } finally {
    await c.close();
  }
}

export type StudyDetail = { status: string; error: string | null; round: number; refusals: { round: number; site: string | null; reason: string }[] };
