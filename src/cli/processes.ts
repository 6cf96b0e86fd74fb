/**
 * Long-running commands: `setu coordinator start` and `setu site start|enrol`.
 * Both stop cleanly on SIGINT/SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { startCoordinator } from '../coordinator/start.js';
import { CoordinatorKeyError } from '../coordinator/auth.js';
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js';
import { loadSiteConfig } from '../site/config.js';
import { SiteAgent, enrol } from '../site/agent.js';
import { DEFAULT_DATA_DIR, UsageError, intFlag, parse } from './args.js';

const stamp = () => new Date().toISOString().slice(11, 19);
const logTo = (prefix: string) => (m: string) => process.stderr.write(`${stamp()} ${prefix} ${m}\n`);

export async function coordinatorCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub !== 'start') throw new UsageError('setu coordinator start [--data-dir D] [--db postgres://…] [--host H] [--port P] [--log-level L]');
  const { values } = parse(argv, {
    'data-dir': { type: 'string' },
    db: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'body-limit': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'log-level': { type: 'string' },
  });
  if (!!values['tls-cert'] !== !!values['tls-key']) throw new UsageError('--tls-cert and --tls-key go together');
  const logger = coordinatorLogger(values['log-level']);
  let c;
  try {
    c = await startCoordinator({
      dataDir: values['data-dir'] ?? DEFAULT_DATA_DIR,
      ...(values.db ? { db: values.db } : {}),
      host: values.host ?? '127.0.0.1',
      port: intFlag(values.port, 'port', 7070),
      ...(values['body-limit'] ? { bodyLimit: intFlag(values['body-limit'], 'body-limit', 0) } : {}),
      ...(values['tls-cert'] ? { https: { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']!) } } : {}),
      logger,
    });
  } catch (e) {
    if (e instanceof CoordinatorKeyError) throw new UsageError(e.message);
    throw e;
  }
  logger.info({ url: c.url }, `listening on ${c.url} (store: ${values.db ? 'postgresql' : 'sqlite'}; audit key ${values['data-dir'] ?? DEFAULT_DATA_DIR}/coordinator.key; ${c.adminKey ? `admin key in ${values['data-dir'] ?? DEFAULT_DATA_DIR}/admin.key` : 'no admin.key in this data directory'})`);
  // For scripts and tests, whatever the log level: the one line that says the coordinator serves now.
  process.stdout.write(JSON.stringify({ event: 'listening', url: c.url }) + '\n');
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await c.close();
  return 0;
}

/** Structured lines on stdout, one JSON object each, at --log-level, else SETU_LOG_LEVEL, else info. */
function coordinatorLogger(flag: string | undefined): Logger {
  try {
    return createLogger({ name: 'coordinator', ...(flag !== undefined ? { level: parseLogLevel(flag, '--log-level') } : {}) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function siteProcessCommand(sub: string, argv: string[]): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string' }, token: { type: 'string' } });
  if (!values.config) throw new UsageError(`setu site ${sub} --config site.yaml${sub === 'enrol' ? ' --token <invite>' : ''}`);
  const cfg = loadSiteConfig(values.config);
  const log = logTo(`site`);
  if (sub === 'enrol') {
    if (!values.token) throw new UsageError('setu site enrol --config site.yaml --token <invite>');
    const c = await enrol(cfg, values.token, log);
    process.stdout.write(`enrolled as ${c.siteName} (${c.siteId}); its private signing key is ${cfg.stateDirAbs}/site.key (mode 600, never sent)\n`);
    return 0;
  }
  if (values.token) await enrol(cfg, values.token, log);
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  const agent = new SiteAgent(cfg, { log: logTo(`site ${new SiteAgentName(cfg).name}`), signal: ac.signal });
  await agent.run();
  return 0;
}

class SiteAgentName {
  readonly name: string;
  constructor(cfg: ReturnType<typeof loadSiteConfig>) {
    try {
      this.name = (JSON.parse(readFileSync(`${cfg.stateDirAbs}/credential.json`, 'utf8')) as { siteName: string }).siteName;
    } catch {
      this.name = '?';
    }
  }
}
