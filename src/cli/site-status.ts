/**
 * `setu site status [--state-dir D | --config site.yaml] [--json]`: at the hospital, what the site agent is doing,
 * read from its own state directory (site/status.ts), so it answers when the coordinator is unreachable too.
 */
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { UsageError, parse } from './args.js';
import { OperatorError } from './failures.js';
import { loadSiteConfig } from '../site/config.js';
import { liveState, readStatus, budgetsOf, STATUS_FILE } from '../site/status.js';
import { table } from './table.js';

export async function siteStatusCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { 'state-dir': { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' } });
  if (values['state-dir'] && values.config) throw new UsageError('give --state-dir or --config, not both');
  const dir = values['state-dir'] ? resolve(values['state-dir']) : values.config ? loadSiteConfig(values.config).stateDirAbs : resolve('state');
  if (!existsSync(dir)) throw new OperatorError(`no state directory at ${dir}: give the agent's --state-dir, or --config site.yaml`);
  const s = readStatus(dir);
  if (!s) throw new OperatorError(`no agent status in ${dir} (${STATUS_FILE} is written by \`setu site start\`; has an agent run on this state directory?)`);
  // The accounts are read now: they may have moved on since the agent last wrote its status.
  const status = { ...s, state: liveState(s), budgets: budgetsOf(dir) };
  if (values.json) {
    process.stdout.write(JSON.stringify(status) + '\n');
    return 0;
  }
  const ago = (iso: string | null) => (iso ? `${iso} (${since(iso)} ago)` : 'never');
  const t = status.lastTask;
  const lines = [
    `site ${status.siteName} (${status.siteId}) · coordinator ${status.coordinator}`,
    `agent: ${status.state} (PID ${status.pid}, started ${status.startedAt})`,
    `last contact with the coordinator: ${ago(status.lastContact)}`,
    `last task: ${t ? `${t.taskId} (${t.kind}, round ${t.round}) ${t.outcome}${t.reason ? `: ${t.reason}` : ''}${t.endedAt ? `, ended ${ago(t.endedAt)}` : `, since ${ago(t.startedAt)}`}` : 'none yet'}`,
    `last error: ${status.lastError ? `${status.lastError.message} (${ago(status.lastError.at)})` : 'none'}`,
    `results waiting to be sent: ${status.pendingResults}`,
  ];
  const studies = Object.entries(status.budgets);
  lines.push('', studies.length
    ? table(['study', 'ε budget', 'ε spent', 'ε left', 'δ', 'tasks charged'], studies.map(([id, b]) => [id, b.epsilon, b.spent.toFixed(4), b.left.toFixed(4), b.delta, b.charges]), ['l', 'r', 'r', 'r', 'r', 'r'])
    : 'privacy budget: no differentially private study has run here');
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

function since(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
