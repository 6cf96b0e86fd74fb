#!/usr/bin/env node
/**
 * `setu`: one command for every role. Subcommands map to modules; each returns an exit code.
 * `--help` anywhere prints the help of the command it follows (help.ts, rendered from the command's own flags);
 * an operator's mistake (a bad flag, an unreachable or untrusted coordinator, a refused key) is one line on stderr.
 */
import { readFileSync } from 'node:fs';
import { UsageError, requestHelp } from './args.js';
import { GROUPS, commandHelp, groupCommands, groupHelp, topHelp } from './help.js';
import { OperatorError, describeFailure } from './failures.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    process.stdout.write(`setu ${version()}\n`);
    return 0;
  }
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(topHelp(version()) + '\n');
    return 0;
  }
  if (!GROUPS.includes(cmd)) throw new UsageError(`unknown command "${cmd}" (commands: ${GROUPS.join(', ')}); run setu --help`);
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  // A group of subcommands (study, site, …) without one: list them.
  const single = commandHelp(cmd) !== undefined;
  // `setu analytics` has an overview of its own (every query with its flags) and names its queries itself (with
  // aliases such as kaplan-meier): it answers for the whole group.
  const ownsGroup = cmd === 'analytics';
  // `setu site dataset` likewise answers --help for each of its own subcommands (check, preview, explain).
  const ownsHelp = cmd === 'site' && sub === 'dataset';
  if (ownsGroup && (sub === undefined || sub === '--help' || sub === '-h')) return dispatch(cmd, sub, rest, argv);
  if (!single && (sub === undefined || sub.startsWith('-'))) {
    if (wantsHelp || sub === undefined) {
      process[wantsHelp ? 'stdout' : 'stderr'].write(groupHelp(cmd) + '\n');
      return wantsHelp ? 0 : 2;
    }
    throw new UsageError(`setu ${cmd} needs a command first: ${groupCommands(cmd).map((c) => c.path.split(' ')[1]).join(', ')}`);
  }
  const path = single ? cmd : `${cmd} ${sub}`;
  if (!commandHelp(path) && !ownsGroup) throw new UsageError(`unknown command "setu ${path}" (setu ${cmd}: ${groupCommands(cmd).map((c) => c.path.split(' ')[1]).join(', ')})`);
  if (wantsHelp && !ownsHelp) requestHelp(path);
  return dispatch(cmd, sub, rest, argv);
}

async function dispatch(cmd: string, sub: string | undefined, rest: string[], argv: string[]): Promise<number> {
  switch (cmd) {
    case 'demo':
      return (await import('./demo.js')).main(argv.slice(1));
    case 'coordinator':
      return (await import('./processes.js')).coordinatorCommand(sub, rest);
    case 'site':
      if (sub === 'start' || sub === 'enrol') return (await import('./processes.js')).siteProcessCommand(sub, rest);
      if (sub === 'run-task') return (await import('./processes.js')).siteRunTask(rest);
      if (sub === 'dataset') return (await import('./dataset.js')).siteDatasetCommand(rest);
      if (sub === 'status') return (await import('./site-status.js')).siteStatusCommand(rest);
      return (await import('./operator.js')).siteCommand(sub, rest);
    case 'study':
      if (sub === 'privacy') return (await import('./privacy.js')).studyPrivacyCommand(rest);
      if (sub === 'export') return (await import('./results.js')).studyExportCommand(rest);
      if (sub === 'results') return (await import('./study-results.js')).studyResultsCommand(rest);
      if (sub && (await import('./governance.js')).STUDY_GOVERNANCE_COMMANDS.includes(sub)) return (await import('./governance.js')).studyGovernanceCommand(sub, rest);
      return (await import('./operator.js')).studyCommand(sub, rest);
    case 'user':
      return (await import('./users.js')).userCommand(sub, rest);
    case 'audit':
      return (await import('./audit.js')).auditCommand(sub, rest);
    case 'bench':
      return (await import('./bench/index.js')).main(argv.slice(1));
    case 'sim':
      return (await import('./sim.js')).main(argv.slice(1));
    case 'analytics':
      return (await import('./analytics.js')).analyticsCommand(argv.slice(1));
    case 'institution':
      return (await import('./governance.js')).institutionCommand(sub, rest);
    case 'model':
      if (sub === 'card') return (await import('./model.js')).modelCommand(sub, rest);
      return (await import('./results.js')).modelResultsCommand(sub, rest);
    case 'compute':
      // The coordinator's registry, queues and ledger; `ledger --file` and the other subcommands work offline.
      if (sub && (await import('./governance.js')).COMPUTE_ONLINE.includes(sub)) return (await import('./governance.js')).computeOnlineCommand(sub, rest);
      if (sub === 'ledger') return (await import('./governance.js')).computeLedgerCommand(rest);
      return (await import('./compute.js')).main(argv.slice(1));
    default:
      throw new UsageError(`unknown command "${cmd}"; run setu --help`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const f = describeFailure(e);
    process.stderr.write(`setu: ${f.message}\n`);
    if (process.env.SETU_DEBUG && e instanceof OperatorError && e.cause instanceof Error) process.stderr.write(`${e.cause.stack}\n`);
    process.exitCode = f.exitCode;
  },
);
