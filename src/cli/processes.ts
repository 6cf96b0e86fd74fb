/**
 * Long-running commands: `setu coordinator start` and `setu site start|enrol`.
 * Both stop cleanly on SIGINT/SIGTERM.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { startCoordinator } from '../coordinator/start.js';
import { CoordinatorKeyError } from '../coordinator/auth.js';
import { createLogger, parseLogLevel, type Logger } from '../observability/logger.js';
import { ConfigError, loadSiteConfig, type SiteConfig } from '../site/config.js';
import { SiteAgent, caOf, enrol } from '../site/agent.js';
import { SiteState } from '../site/state.js';
import { StateLockedError, acquireStateLock, type StateLock } from '../site/lock.js';
import { ApiError, HttpClient } from '../site/http.js';
import { importPrivateKey } from '../protocol/signing.js';
import { DEFAULT_DATA_DIR, UsageError, intFlag, parse, tokenFrom } from './args.js';
import { OperatorError } from './failures.js';
import type { LimitOptions } from '../coordinator/plugins/limits.js';

const stamp = () => new Date().toISOString().slice(11, 19);
const logTo = (prefix: string) => (m: string) => process.stderr.write(`${stamp()} ${prefix} ${m}\n`);

export async function coordinatorCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub !== 'start') throw new UsageError('setu coordinator start [--data-dir D] [--db postgres://…] [--blob-dir D] [--host H] [--port P] [--log-level L]');
  const { values } = parse(argv, {
    'data-dir': { type: 'string' },
    db: { type: 'string' },
    'blob-dir': { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'body-limit': { type: 'string' },
    'upload-chunk-bytes': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'log-level': { type: 'string' },
    ...Object.fromEntries(Object.keys(LIMIT_FLAGS).map((f) => [f, { type: 'string' as const }])),
  });
  const limits = limitFlags(values);
  if (!!values['tls-cert'] !== !!values['tls-key']) throw new UsageError('--tls-cert and --tls-key go together');
  if (values.port !== undefined) {
    const p = intFlag(values.port, 'port', 7070);
    if (p < 0 || p > 65535) throw new UsageError(`--port must be between 0 and 65535, got ${p}`);
  }
  const logger = coordinatorLogger(values['log-level']);
  let c;
  try {
    c = await startCoordinator({
      dataDir: values['data-dir'] ?? DEFAULT_DATA_DIR,
      ...(values.db ? { db: values.db } : {}),
      ...(values['blob-dir'] ? { blobDir: values['blob-dir'] } : {}),
      host: values.host ?? '127.0.0.1',
      port: intFlag(values.port, 'port', 7070),
      ...(values['body-limit'] ? { bodyLimit: intFlag(values['body-limit'], 'body-limit', 0) } : {}),
      ...(Object.keys(limits).length || values['upload-chunk-bytes'] ? { server: { ...(Object.keys(limits).length ? { limits } : {}), ...(values['upload-chunk-bytes'] ? { uploadChunkBytes: positiveFlag(values['upload-chunk-bytes'], 'upload-chunk-bytes') } : {}) } } : {}),
      ...(values['tls-cert'] ? { https: { cert: readFlagFile(values['tls-cert'], '--tls-cert'), key: readFlagFile(values['tls-key']!, '--tls-key') } } : {}),
      logger,
    });
  } catch (e) {
    if (e instanceof CoordinatorKeyError) throw new UsageError(e.message);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') throw new OperatorError(`cannot listen on ${values.host ?? '127.0.0.1'}:${values.port ?? 7070}: ${(e as Error).message}`, { cause: e });
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

/** The `setu coordinator start` flags of the bounds on open requests (coordinator/plugins/limits.ts). */
const LIMIT_FLAGS: Record<string, keyof LimitOptions> = {
  'max-longpolls-per-site': 'longPollsPerSite',
  'max-uploads': 'uploads',
  'max-upload-bytes': 'uploadBytes',
  'max-uploads-per-site': 'uploadsPerSite',
  'max-streams-per-user': 'streamsPerIdentity',
  'max-round-bytes': 'roundBytes',
};

function limitFlags(values: Record<string, unknown>): LimitOptions {
  const o: LimitOptions = {};
  for (const [flag, key] of Object.entries(LIMIT_FLAGS)) {
    const v = values[flag];
    if (typeof v !== 'string') continue;
    const n = intFlag(v, flag, 0);
    if (n < 1) throw new UsageError(`--${flag} must be a whole number of at least 1, got ${v}`);
    o[key] = n;
  }
  return o;
}

function positiveFlag(v: string, flag: string): number {
  const n = intFlag(v, flag, 0);
  if (n < 1) throw new UsageError(`--${flag} must be a whole number of at least 1, got ${v}`);
  return n;
}

function readFlagFile(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new UsageError(`${flag} ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
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
  const flags = { config: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' } } as const;
  // Only the long-running agent logs; enrol prints one line.
  const { values } = sub === 'start' ? parse(argv, { ...flags, 'log-level': { type: 'string' } }) : parse(argv, flags);
  if (!values.config) throw new UsageError(`setu site ${sub} --config site.yaml${sub === 'enrol' ? ' --token <invite>' : ''}`);
  const token = tokenFrom(values);
  const cfg = loadSiteConfig(values.config);
  // A caFile that is not there is a mistake in site.yaml, not a TLS failure: say so before dialling.
  if (cfg.caFile && !existsSync(resolve(cfg.configDir, cfg.caFile))) throw new ConfigError(`${values.config}: /caFile: ${resolve(cfg.configDir, cfg.caFile)} does not exist`);
  if (sub === 'enrol') {
    const log = logTo(`site`);
    if (!token) throw new UsageError('setu site enrol --config site.yaml --token <invite> (or --token-file F)');
    // Someone is at the terminal: a coordinator that cannot be reached (or trusted) is said within seconds, in one
    // line, rather than retried for ever as the agent itself does.
    const ca = caOf(cfg);
    await new HttpClient({ baseUrl: cfg.coordinator, giveUpAfterMs: 10_000, finalServerErrors: true, ...(ca ? { ca } : {}) }).json('GET', '/v1/health');
    const c = await enrol(cfg, token, log);
    process.stdout.write(`enrolled as ${c.siteName} (${c.siteId}); its private signing key is ${cfg.stateDirAbs}/site.key (mode 600, never sent)\n`);
    return 0;
  }
  const logger = siteLogger('log-level' in values ? (values['log-level'] as string | undefined) : undefined);
  // One agent per state directory (site/lock.ts): a second one is refused at once, naming the PID that holds it.
  const lock = lockStateDir(cfg.stateDirAbs);
  process.once('exit', () => lock.release());
  if (token) await enrol(cfg, token, agentLog(logger));
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  let agent: SiteAgent;
  try {
    agent = new SiteAgent(cfg, { log: agentLog(logger.child({ site: siteName(cfg) })), signal: ac.signal });
  } catch (e) {
    throw new OperatorError((e as Error).message, { cause: e });
  }
  await checkIdentity(cfg, ac.signal, agentLog(logger.child({ site: siteName(cfg) })));
  try {
    await agent.run();
  } catch (e) {
    // run() returns on a signal and throws only when the agent must stop (its key refused): one line, not a trace.
    throw new OperatorError((e as Error).message, { cause: e });
  } finally {
    lock.release();
  }
  return 0;
}

/**
 * The agent's log: pino lines on stderr (stdout stays free for scripts), at --log-level, else SETU_LOG_LEVEL, else
 * info. Secrets are scrubbed by the logger (observability/logger.ts); the agent never logs its key or credential.
 */
function siteLogger(flag: string | undefined): Logger {
  try {
    return createLogger({ name: 'site', destination: 2, ...(flag !== undefined ? { level: parseLogLevel(flag, '--log-level') } : {}) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The agent's free-text messages at their level: failures as warnings, everything else as info. */
function agentLog(logger: Logger): (m: string) => void {
  return (m) => {
    if (/^error: |unreachable|failed|refused|not recorded|not forwarded|damaged|disagree/i.test(m)) logger.warn(m);
    else logger.info(m);
  };
}

function lockStateDir(dir: string): StateLock {
  try {
    return acquireStateLock(dir);
  } catch (e) {
    if (e instanceof StateLockedError) throw new OperatorError(e.message, { cause: e });
    throw e;
  }
}

/**
 * Before polling: one signed request that proves the coordinator is trusted and knows this site's key. An untrusted
 * certificate or a revoked or unknown key fails now, in one line; an unreachable coordinator is waited for, as the
 * agent would (sites reconnect by themselves).
 */
async function checkIdentity(cfg: SiteConfig, signal: AbortSignal, log: (m: string) => void): Promise<void> {
  const state = new SiteState(cfg.stateDirAbs);
  const cred = state.credential()!;
  const pem = state.privateKeyPem()!;
  const ca = caOf(cfg);
  let lastLog = 0;
  const http = new HttpClient({ baseUrl: cfg.coordinator, signer: { keyId: cred.siteId, privateKey: importPrivateKey(pem) }, signal, ...(ca ? { ca } : {}),
    onRetry: (_n, d, why) => {
      if (Date.now() - lastLog > 5000) log(`coordinator unreachable (${why}); retrying in ${Math.round(d)} ms`);
      lastLog = Date.now();
    } });
  try {
    await http.json('GET', '/v1/whoami');
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError && e.status === 401) {
      throw new OperatorError(`site ${cred.siteName}: the coordinator refused this site's key: ${e.message}; ${e.code === 'revoked' ? 'the site was revoked: enrol it again with a new invite (setu site invite), in a fresh stateDir' : 'is this state directory enrolled with this coordinator?'}`);
    }
    throw e;
  }
}

function siteName(cfg: SiteConfig): string {
  return new SiteState(cfg.stateDirAbs).credential()?.siteName ?? '?';
}

/** `setu site run-task --workdir DIR`: the training step a placed job runs (on a Slurm node, say). */
export async function siteRunTask(argv: string[]): Promise<number> {
  const { values } = parse(argv, { workdir: { type: 'string' } });
  if (!values.workdir) throw new UsageError('setu site run-task --workdir <dir written by the site agent>');
  return (await import('../site/placed.js')).runTaskCommand(values.workdir);
}
