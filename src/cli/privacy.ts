/**
 * `setu study privacy <id> [--entries] [--json]`: the (ε, δ) each site has spent on a study against its budget,
 * from the coordinator's privacy ledger (GET /v1/studies/:id/privacy).
 */
import { UsageError, operatorClient, operatorFlags, parse, studyId } from './args.js';
import { table } from './table.js';
import type { StudyPrivacyReport } from '../coordinator/routes/privacy.js';

export function renderPrivacy(r: StudyPrivacyReport): string {
  const lines: string[] = [];
  const dp = r.dp;
  lines.push(
    `study ${r.studyId} (${r.status}): ` +
      (dp ? `${dp.level === 'sample' ? 'sample-level DP-SGD' : `client-level DP-FedAvg (${dp.mode ?? 'central'} noise)`}, target ε=${dp.epsilon}, δ=${dp.delta}, clip ${dp.clipNorm}` : 'no differential privacy') +
      `; ${r.secagg ? 'SecAgg+ on' : 'SecAgg+ off'}`,
  );
  if (r.sites.length === 0) lines.push(dp ? 'no DP release recorded yet' : '');
  else {
    lines.push(
      table(
        ['site', 'ε spent', 'δ', 'budget ε', 'remaining', 'releases', 'steps', 'σ', 'q', 'last round'],
        r.sites.map((s) => [s.site, s.spent.epsilon.toFixed(4), String(s.spent.delta), String(s.budget.epsilon), s.remaining.toFixed(4), s.releases, s.steps, s.noiseMultiplier.toFixed(3), s.sampleRate.toFixed(4), s.lastRound]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      ),
    );
  }
  if (r.entries?.length) {
    lines.push('', table(['round', 'site', 'mechanism', 'steps', 'ε after', 'δ'], r.entries.map((e) => [e.round, e.site, e.mechanism, e.steps, e.epsilon.toFixed(4), String(e.delta)]), ['r', 'l', 'l', 'r', 'r', 'r']));
  }
  return lines.filter((l) => l !== '').join('\n');
}

export async function studyPrivacyCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...operatorFlags, entries: { type: 'boolean' } }, true);
  const id = positionals[0];
  if (!id) throw new UsageError('setu study privacy <study-id> [--entries] [--json]');
  const api = operatorClient(values);
  const r = await api.json<StudyPrivacyReport>('GET', `/v1/studies/${encodeURIComponent(await studyId(api, id))}/privacy${values.entries ? '?entries=1' : ''}`);
  process.stdout.write((values.json ? JSON.stringify(r) : renderPrivacy(r)) + '\n');
  return 0;
}
