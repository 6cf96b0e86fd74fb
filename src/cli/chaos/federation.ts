/**
 * One real federation for the chaos harness: `setu coordinator start` and four `setu site start` agents on the
 * bundled heart hospitals, separate processes over HTTP on loopback, SQLite in the coordinator's data directory
 * (or a fresh PostgreSQL database), optionally with the chaos proxy between the agents and the coordinator.
 * Processes are started with the e2e helpers of src/testing/processes.ts; this file adds killing and restarting
 * them on the same store and directories, and follows their output as events.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StudySpec } from '../../protocol/api.js';
import type { HttpClient } from '../../site/http.js';
import { adminClient, freePort, startCoordinatorProcess, startHeartSite, studyLeadClient, waitFor } from '../../testing/processes.js';
import { createTempDatabase } from '../../testing/pg.js';
import { ChaosProxy } from './proxy.js';
import { LineWatcher } from './lines.js';

export const SITES = 4;
const TERMINAL = ['completed', 'failed', 'stopped'];

export interface StudyStatus {
  status: string;
  round: number;
  error: string | null;
}

export interface FederationOptions {
  /** `postgres://…` server: each federation gets its own fresh database there. Default: SQLite. */
  pgBase?: string;
  /** Put the chaos proxy between agents and coordinator. */
  proxy?: boolean;
  /** site.yaml keys every site gets (a privacy budget). */
  siteExtra?: Record<string, unknown>;
  /** Keep the directory (logs, store, site state) after close. */
  keep?: boolean;
}

export class Federation {
  readonly coordinatorLines = new LineWatcher();
  readonly siteLines: LineWatcher[] = Array.from({ length: SITES }, () => new LineWatcher());
  readonly siteIds: string[] = [];
  coordinatorRestarts = 0;
  siteRestarts = 0;
  studyId = '';
  /** Set once the study reaches a terminal state (the harness stops its chaos then). */
  final: StudyStatus | undefined;
  private readonly finished = new AbortController();
  private coord: ChildProcess | undefined;
  private readonly sites: (ChildProcess | undefined)[] = [];
  private readonly tokens: string[] = [];
  private poller: NodeJS.Timeout | undefined;
  private admin!: HttpClient;
  proxy: ChaosProxy | undefined;
  /** The last three gaps between "round … (fit) opened" lines. */
  private readonly roundGaps: number[] = [];
  private lastOpenedAt: number | undefined;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly storeUrl: string,
    private readonly dropDb: (() => Promise<void>) | undefined,
    private readonly o: FederationOptions,
  ) {
    this.coordinatorLines.on((l) => {
      if (!/round \d+ \(fit\) opened/.test(l.msg)) return;
      if (this.lastOpenedAt !== undefined && this.roundGaps.push(l.at - this.lastOpenedAt) > 3) this.roundGaps.shift();
      this.lastOpenedAt = l.at;
    });
  }

  /**
   * How long an undamaged round takes: the shortest of the last three gaps between "round … (fit) opened" lines
   * (a kill lengthens the round it hit, never shortens one); 500 ms until two rounds were seen.
   */
  get roundMs(): number {
    return this.roundGaps.length ? Math.min(...this.roundGaps) : 500;
  }

  static async create(o: FederationOptions = {}): Promise<Federation> {
    const dir = mkdtempSync(join(tmpdir(), 'setu-chaos-'));
    const port = await freePort();
    let storeUrl = join(dir, 'coordinator', 'setu.db');
    let drop: (() => Promise<void>) | undefined;
    if (o.pgBase) {
      const db = await createTempDatabase(o.pgBase);
      storeUrl = db.url;
      drop = db.drop;
    }
    return new Federation(dir, port, storeUrl, drop, o);
  }

  get dataDir(): string {
    return join(this.dir, 'coordinator');
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  /** Where the agents dial: the proxy when there is one. */
  get agentUrl(): string {
    return this.proxy ? this.proxy.url : this.url;
  }
  get done(): AbortSignal {
    return this.finished.signal;
  }
  siteDir(i: number): string {
    return join(this.dir, `site-${i}`);
  }
  siteStateDir(i: number): string {
    return join(this.siteDir(i), 'state');
  }
  get pg(): boolean {
    return !!this.o.pgBase;
  }

  async startCoordinator(): Promise<void> {
    const c = await startCoordinatorProcess(this.dataDir, this.port, join(this.dir, 'coordinator.log'), this.o.pgBase ? { db: this.storeUrl } : {});
    this.coordinatorLines.follow(c);
    this.coord = c;
  }

  /** SIGKILL, and resolves once the process is gone (its port and SQLite locks with it). */
  async killCoordinator(): Promise<void> {
    await killNow(this.coord);
    this.coord = undefined;
    // The gap across a restart is the outage, not a round.
    this.lastOpenedAt = undefined;
  }

  async restartCoordinator(): Promise<void> {
    await this.startCoordinator();
    this.coordinatorRestarts++;
  }

  startSite(i: number): void {
    const c = startHeartSite(this.siteDir(i), this.agentUrl, i, this.tokens[i]!, this.o.siteExtra ?? {});
    this.siteLines[i]!.follow(c);
    this.sites[i] = c;
  }

  async killSite(i: number): Promise<void> {
    await killNow(this.sites[i]);
    this.sites[i] = undefined;
  }

  /** Starts the agent again on its own state directory and resolves when it polls again. */
  async restartSite(i: number): Promise<void> {
    const polling = this.siteLines[i]!.next((l) => /polling .* for tasks/.test(l.msg), { timeoutMs: 60_000 });
    this.startSite(i);
    this.siteRestarts++;
    if (!(await polling)) throw new Error(`site ${i} did not poll again within 60 s; see ${this.siteDir(i)}/agent.log`);
  }

  /** Coordinator, proxy, four enrolled sites, and the study created and started. */
  async start(spec: StudySpec): Promise<void> {
    await this.startCoordinator();
    this.admin = adminClient(this.dataDir, this.url, 2_000);
    if (this.o.proxy) {
      this.proxy = new ChaosProxy(this.port);
      await this.proxy.listen();
    }
    const setup = adminClient(this.dataDir, this.url);
    for (let i = 0; i < SITES; i++) {
      const inv = await setup.json<{ token: string }>('POST', '/v1/invites', { siteName: `hospital-${i}` });
      this.tokens.push(inv.token);
      this.startSite(i);
    }
    const sites = await waitFor(`${SITES} enrolled sites`, async () => {
      const s = await setup.json<{ id: string; name: string }[]>('GET', '/v1/sites');
      return s.length === SITES ? s : undefined;
    }, 60_000, 100);
    for (let i = 0; i < SITES; i++) this.siteIds.push(sites.find((s) => s.name === `hospital-${i}`)!.id);
    const lead = await studyLeadClient(setup, this.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    this.studyId = id;
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    this.poller = setInterval(() => void this.poll(), 250);
  }

  /** The study's status from the API, or undefined while the coordinator is down. */
  async status(): Promise<StudyStatus | undefined> {
    if (!this.coord) return undefined;
    try {
      return await this.admin.json<StudyStatus>('GET', `/v1/studies/${this.studyId}`);
    } catch {
      return undefined;
    }
  }

  private polling = false;
  private async poll(): Promise<void> {
    if (this.polling || this.final) return;
    this.polling = true;
    try {
      const s = await this.status();
      if (s && TERMINAL.includes(s.status)) {
        this.final = s;
        this.finished.abort();
      }
    } finally {
      this.polling = false;
    }
  }

  /** Waits for the study's end (at most `ms`); its status then, or undefined on timeout. */
  async waitDone(ms: number): Promise<StudyStatus | undefined> {
    if (this.final) return this.final;
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.done.addEventListener('abort', () => {
        clearTimeout(t);
        r();
      });
    });
    return this.final;
  }

  /** Stops everything (SIGTERM) so the store can be read; keeps the directory. */
  async stop(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    await this.proxy?.close();
    await Promise.all([...this.sites, this.coord].map((c) => stopGently(c)));
    this.coord = undefined;
    this.sites.length = 0;
  }

  async close(): Promise<void> {
    await this.stop();
    if (this.o.keep) return;
    await this.dropDb?.();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function exited(c: ChildProcess): boolean {
  return c.exitCode !== null || c.signalCode !== null;
}

async function killNow(c: ChildProcess | undefined): Promise<void> {
  if (!c || exited(c)) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
}

/** SIGTERM, and SIGKILL after 10 s: a process that does not stop must not keep the harness alive. */
async function stopGently(c: ChildProcess | undefined): Promise<void> {
  if (!c || exited(c)) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}
