/**
 * The agent's own status, on its own disk: `status.json` in the state directory, rewritten atomically when
 * something changes (a task starts or ends, an error, a contact with the coordinator at most every few seconds).
 * A hospital's operator reads it with `setu site status` without asking the coordinator (which may be the problem):
 * whether the agent runs, when it last reached the coordinator, its last task and how it ended, its last error,
 * results waiting to be sent, and the privacy budget left per study (from the site's own accounts).
 * Nothing secret is in it: no key, no credential beyond the site's id and name, no data.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { replaceFile, type SiteState } from './state.js';
import type { TaskMessage } from '../protocol/api.js';
import { BUDGET_FILE } from './privacy.js';
import { PrivacyBudget, type PrivacyBudgetJSON } from '../privacy/budget.js';
import { pidAlive } from './lock.js';

export const STATUS_FILE = 'status.json';
/** A contact alone (no other change) rewrites the file at most this often. */
const CONTACT_EVERY_MS = 5000;

export type TaskOutcome = 'running' | 'sent' | 'refused' | 'failed';

export interface AgentStatusFile {
  version: 1;
  pid: number;
  siteId: string;
  siteName: string;
  coordinator: string;
  /** `running` while the process lives; `stopped` once it stopped cleanly (a killed agent leaves `running` and a dead PID). */
  state: 'running' | 'stopped';
  startedAt: string;
  updatedAt: string;
  /** The last answer from the coordinator (any request that got an HTTP answer), or null. */
  lastContact: string | null;
  lastTask: { taskId: string; studyId: string; round: number; kind: string; startedAt: string; endedAt: string | null; outcome: TaskOutcome; reason?: string } | null;
  lastError: { at: string; message: string } | null;
  /** Results on disk waiting to be sent. */
  pendingResults: number;
  /** Per study with a DP account here: the cap, spent and left (ε at the cap's δ), and tasks charged. */
  budgets: Record<string, { epsilon: number; delta: number; spent: number; left: number; charges: number }>;
}

export class AgentStatus {
  private s: AgentStatusFile;
  private lastWrite = 0;
  /** The first contact of this run is written at once: "it reached the coordinator" is the news after a start. */
  private contacted = false;

  constructor(
    private readonly state: SiteState,
    who: { siteId: string; siteName: string; coordinator: string },
  ) {
    const now = new Date().toISOString();
    this.s = { version: 1, pid: process.pid, ...who, state: 'running', startedAt: now, updatedAt: now, lastContact: null, lastTask: null, lastError: null, pendingResults: 0, budgets: {} };
    // What the previous run last did is still worth showing.
    const prev = readStatus(state.dir);
    if (prev) {
      this.s.lastTask = prev.lastTask;
      this.s.lastError = prev.lastError;
      this.s.lastContact = prev.lastContact;
    }
    this.write();
  }

  contact(): void {
    const first = !this.contacted;
    this.contacted = true;
    this.s.lastContact = new Date().toISOString();
    if (first || Date.now() - this.lastWrite >= CONTACT_EVERY_MS) this.write();
  }

  taskStarted(t: TaskMessage): void {
    this.s.lastTask = { taskId: t.taskId, studyId: t.studyId, round: t.round, kind: t.kind, startedAt: new Date().toISOString(), endedAt: null, outcome: 'running' };
    this.write();
  }

  /** How the current task ended; a later call for the same task does not overwrite a refusal or failure with `sent`. */
  taskEnded(taskId: string, outcome: Exclude<TaskOutcome, 'running'>, reason?: string): void {
    const t = this.s.lastTask;
    if (!t || t.taskId !== taskId) return;
    if (outcome === 'sent' && t.outcome !== 'running') return;
    t.outcome = outcome;
    t.endedAt = new Date().toISOString();
    if (reason !== undefined) t.reason = reason.slice(0, 500);
    this.write();
  }

  error(message: string): void {
    this.s.lastError = { at: new Date().toISOString(), message: message.slice(0, 1000) };
    this.write();
  }

  stopped(): void {
    this.s.state = 'stopped';
    this.write();
  }

  write(): void {
    this.s.updatedAt = new Date().toISOString();
    this.s.pendingResults = this.state.pendingCount();
    this.s.budgets = budgetsOf(this.state.dir);
    this.lastWrite = Date.now();
    try {
      // Atomic but not fsynced: it shows what the durable files hold (state.ts replaceFile).
      replaceFile(this.state.file(STATUS_FILE), JSON.stringify(this.s, null, 2) + '\n');
    } catch {
      // A status that cannot be written (disk full) must not stop the agent: its work is in the other files.
    }
  }
}

/** Every study account in a state directory: ε cap, spent, left, charges. */
export function budgetsOf(stateDir: string): AgentStatusFile['budgets'] {
  const out: AgentStatusFile['budgets'] = {};
  const root = join(stateDir, 'studies');
  if (!existsSync(root)) return out;
  for (const d of readdirSync(root).sort()) {
    const f = join(root, d, BUDGET_FILE);
    if (!existsSync(f)) continue;
    try {
      const j = JSON.parse(readFileSync(f, 'utf8')) as PrivacyBudgetJSON;
      const b = PrivacyBudget.fromJSON(j);
      out[d] = { epsilon: b.epsilon, delta: b.delta, spent: b.spent(), left: b.remaining(), charges: j.history.length };
    } catch {
      // A damaged account is the agent's problem to report when it next uses it; the status skips it.
    }
  }
  return out;
}

export function readStatus(stateDir: string): AgentStatusFile | undefined {
  const f = join(stateDir, STATUS_FILE);
  if (!existsSync(f)) return undefined;
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as AgentStatusFile;
  } catch {
    return undefined;
  }
}

/** `running` only while its PID lives: an agent killed without a chance to say so reads as not running. */
export function liveState(s: AgentStatusFile): 'running' | 'stopped' | 'not running (killed?)' {
  if (s.state === 'stopped') return 'stopped';
  return pidAlive(s.pid) ? 'running' : 'not running (killed?)';
}
