#!/usr/bin/env node
/**
 * `setu`: one command for every role. Subcommands map to modules; each returns an exit code.
 */
import { UsageError } from './args.js';
import { ConfigError } from '../site/config.js';
import { ApiError } from '../site/http.js';

const HELP = `setu: federated learning across hospitals; patient data stays at each site.

  setu demo [--seed N] [--json] [--data-dir D]     the four-hospital demo federation on real data
            [--secagg] [--dp-epsilon E [--dp-delta D] [--dp-level sample|client] [--dp-clip C]]   with SecAgg+ / DP
  setu demo --dashboard [--rounds R]                the same, then keeps the coordinator and its dashboard up
  setu coordinator start [--data-dir D] [--db postgres://…] [--host H] [--port P] [--log-level info|debug|…]
  setu site invite --name N [--institution I] [--jurisdiction IN|JP|…]
  setu site enrol --config site.yaml --token <invite>
  setu site start --config site.yaml [--token <invite>]
  setu site list | revoke <id or name>
  setu user add --name N --role R [--institution I] | enrol --token <invite> [--key-file F] | list | revoke <id> | whoami
  setu audit verify [--file export.jsonl] | export --out file.jsonl | list
  setu study create --file study.yaml | list | start <id> | status <id> [--watch] | stop <id>
  setu bench <flamby-heart|aggregate|peer|secagg|dp-heart> [options]
  setu sim [--sites N] [--sample K] [--rounds R]
  setu compute list | add --file r.yaml | queues | usage | ledger [--json]   the shared compute federation
  setu compute <slurm-check|resources|place|k8s-manifest> …               offline compute tools
  setu institution add --id I --name N --kind hospital|university|compute_centre|company --jurisdiction IN
  setu institution list | link <institution-id> --site <site>
  setu study propose <id> | approve <id> --site S --terms "…" | decline|withdraw <id> --site S --reason "…"
  setu study governance <id> | policy-check <id>
  setu study privacy <id> [--entries] [--json]      (ε, δ) spent per site against its budget
  setu model card <study-id> [--json]                the model card of a completed study

Operator commands reach the coordinator at --coordinator (or SETU_COORDINATOR, default
http://127.0.0.1:7070) and sign every request with the key in --key-file (or SETU_KEY_FILE,
<data-dir>/admin.key, ~/.setu/key.json, ./.setu/admin.key); --ca-file trusts a private CA.`;

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
      if (sub === 'run-task') return siteRunTask(rest);
      return (await import('./operator.js')).siteCommand(sub, rest);
    case 'study':
      if (sub === 'privacy') return (await import('./privacy.js')).studyPrivacyCommand(rest);
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
    case 'institution':
      return (await import('./governance.js')).institutionCommand(sub, rest);
    case 'model':
      return (await import('./model.js')).modelCommand(sub, rest);
    case 'compute':
      // The coordinator's registry, queues and ledger; `ledger --file` and the other subcommands work offline.
      if (sub && (await import('./governance.js')).COMPUTE_ONLINE.includes(sub)) return (await import('./governance.js')).computeOnlineCommand(sub, rest);
      if (sub === 'ledger' && !rest.includes('--file')) return (await import('./governance.js')).computeLedgerCommand(rest);
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

/** `setu site run-task --workdir DIR`: the training step a placed job runs (on a Slurm node, say). */
async function siteRunTask(argv: string[]): Promise<number> {
  const { parse } = await import('./args.js');
  const { values } = parse(argv, { workdir: { type: 'string' } });
  if (!values.workdir) throw new UsageError('setu site run-task --workdir <dir written by the site agent>');
  return (await import('../site/placed.js')).runTaskCommand(values.workdir);
}
