#!/usr/bin/env node
/**
 * `setu`: one command for every role. Subcommands map to modules; each returns an exit code.
 */
import { UsageError } from './args.js';
import { ConfigError } from '../site/config.js';
import { ApiError } from '../site/http.js';

const HELP = `setu: federated learning across hospitals; patient data stays at each site.

  setu demo [--seed N] [--json] [--data-dir D]     the four-hospital demo federation on real data
  setu coordinator start [--data-dir D] [--db postgres://…] [--host H] [--port P]
  setu site invite --name N [--institution I] [--jurisdiction IN|JP|…]
  setu site enrol --config site.yaml --token <invite>
  setu site start --config site.yaml [--token <invite>]
  setu site list | revoke <id>
  setu study create --file study.yaml | list | start <id> | status <id> [--watch] | stop <id>
  setu bench <flamby-heart|aggregate|peer|secagg|dp-heart> [options]
  setu sim [--sites N] [--sample K] [--rounds R]
  setu compute <subcommand>

Operator commands reach the coordinator at --coordinator (or SETU_COORDINATOR, default
http://127.0.0.1:7070) with --token (or SETU_TOKEN, or <data-dir>/admin.token).`;

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP + '\n');
      return 0;
    case 'demo':
      return (await import('./demo.js')).main(argv.slice(1));
    case 'coordinator':
      return (await import('./processes.js')).coordinatorCommand(sub, rest);
    case 'site':
      if (sub === 'start' || sub === 'enrol') return (await import('./processes.js')).siteProcessCommand(sub, rest);
      return (await import('./operator.js')).siteCommand(sub, rest);
    case 'study':
      return (await import('./operator.js')).studyCommand(sub, rest);
    case 'bench':
      return (await import('./bench/index.js')).main(argv.slice(1));
    case 'sim':
      return (await import('./sim.js')).main(argv.slice(1));
    case 'compute':
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
    if (e instanceof UsageError || e instanceof ConfigError) process.stderr.write(`setu: ${e.message}\n`);
    else if (e instanceof ApiError) process.stderr.write(`setu: the coordinator refused: ${e.message} (HTTP ${e.status} ${e.code})\n`);
    else process.stderr.write(`setu: ${(e as Error).stack ?? e}\n`);
    process.exitCode = e instanceof UsageError || e instanceof ConfigError ? 2 : 1;
  },
);
