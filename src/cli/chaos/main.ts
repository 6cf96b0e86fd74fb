#!/usr/bin/env node
/**
 * `npm run chaos` (node dist/cli/chaos/main.js): the chaos harness. Runs an uninterrupted baseline study and then
 * each scenario's study under damage, on a real federation, and prints one row per scenario (or --json).
 * Exit status 0 when every check of every scenario holds, 1 when one fails, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { table } from '../table.js';
import { DESCRIPTIONS, FULL, QUICK, SCENARIOS, runChaos, type ChaosReport, type ScenarioName } from './scenarios.js';

export const HELP = `npm run chaos -- [options]      (or: node dist/cli/chaos/main.js [options])

Runs a real federation (coordinator and 4 site agents on the bundled heart data, separate processes over HTTP on
loopback) through each scenario, and checks that the study completes with the model of an uninterrupted run
(made first, in the same invocation) and that no update, privacy charge or usage row is lost or counted twice.

Scenarios:
${SCENARIOS.map((s) => `  ${s.padEnd(18)} ${DESCRIPTIONS[s]}`).join('\n')}

Options:
  --seed N          seed of the moments of damage and of the studies (default 1)
  --quick           the short version CI runs (${QUICK.rounds} rounds, ${QUICK.coordinatorKills} coordinator kills, ${QUICK.agentKills} agent kills…)
                    instead of the full one (${FULL.rounds} rounds, ${FULL.coordinatorKills} coordinator kills, ${FULL.agentKills} agent kills, DP over ${FULL.dpRounds} rounds…)
  --scenario S      run only these (comma-separated, or the flag repeated)
  --store URL       postgres://… server for the coordinators' stores (a fresh database per run); default SQLite
  --keep            keep each run's directory (logs, store, site state) and print where
  --json            print the report as JSON on stdout
  --help            this text
`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, strict: true, options: {
      seed: { type: 'string' }, quick: { type: 'boolean' }, scenario: { type: 'string', multiple: true }, store: { type: 'string' },
      keep: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean' },
    } }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0 || seed > 2 ** 31 - 1) return usage(`--seed must be an integer from 0 to ${2 ** 31 - 1}, got ${values.seed}`);
  const scenarios = values.scenario?.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  const unknown = scenarios?.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
  if (unknown?.length) return usage(`--scenario ${unknown[0]} is not a scenario (scenarios: ${SCENARIOS.join(', ')})`);
  if (values.store !== undefined && !/^postgres(ql)?:\/\//.test(values.store)) return usage(`--store must be a postgres:// URL (SQLite is the default), got ${values.store}`);
  const report = await runChaos({
    seed, quick: !!values.quick, ...(values.store ? { pgBase: values.store } : {}), ...(scenarios ? { scenarios: scenarios as ScenarioName[] } : {}),
    ...(values.keep ? { keep: true } : {}), progress: (m) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} chaos ${m}\n`),
  });
  process.stdout.write(values.json ? JSON.stringify(report) + '\n' : renderReport(report));
  return report.ok ? 0 : 1;
}

function usage(message: string): number {
  process.stderr.write(`chaos: ${message}\nrun npm run chaos -- --help\n`);
  return 2;
}

const mark = (ok: boolean | null | undefined, yes: string) => (ok === null ? 'n/a' : ok ? yes : 'FAIL');

/** One row per scenario, then every failing check with its reason. */
export function renderReport(r: ChaosReport): string {
  const rows = r.scenarios.map((s) => {
    const c = (n: string) => s.checks.find((x) => x.name === n)?.ok;
    return [s.scenario, `${s.kills.coordinator}/${s.kills.agents}/${s.kills.network}`, s.restarts, s.downPastDeadlineSeconds ? s.downPastDeadlineSeconds.toFixed(1) : '–',
      s.wallSeconds.toFixed(1), s.status, c('digest') === null ? 'n/a' : c('digest') ? 'equal' : 'DIFFERS', mark(c('updates'), 'ok'), mark(c('privacy'), 'ok'), mark(c('usage'), 'ok'), s.ok ? 'pass' : 'FAIL'];
  });
  const out = [
    `chaos run: seed ${r.seed}, ${r.quick ? 'quick' : 'full'}, store ${r.store}`,
    ...r.baselines.map((b) => `baseline ${b.kind}: ${b.rounds} rounds uninterrupted in ${b.wallSeconds.toFixed(1)} s, final model ${b.finalDigest?.slice(0, 12)}`),
    '',
    table(['scenario', 'kills c/a/net', 'restarts', 'down past deadline s', 'wall s', 'status', 'digest', 'updates', 'privacy', 'usage', 'result'], rows),
    '',
  ];
  const failing = r.scenarios.flatMap((s) => s.checks.filter((c) => c.ok === false).map((c) => `  ${s.scenario} · ${c.name}: ${c.detail}`));
  if (failing.length) out.push('Failing checks:', ...failing, '');
  for (const s of r.scenarios) if (s.dir) out.push(`${s.scenario}: kept in ${s.dir}`);
  out.push(r.ok ? 'every scenario passed' : `${r.scenarios.filter((s) => !s.ok).length} of ${r.scenarios.length} scenarios failed`, '');
  return out.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (e) => {
    process.stderr.write(`chaos: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
