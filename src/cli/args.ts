/** Small helpers over node:util parseArgs so every subcommand reports bad flags the same way. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { readKeyFile } from '../coordinator/auth.js';
import { HttpClient, type Signer } from '../site/http.js';
import { renderCommandHelp } from './help.js';

export class UsageError extends Error {}

/**
 * Help mode: main.ts sets the command path when the command line asks for --help; the command's own parse()
 * call then prints that command's help, from the very options it declares, and exits 0.
 */
let helpPath: string | undefined;
export function requestHelp(path: string): void {
  helpPath = path;
}

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, allowPositionals = false) {
  if (helpPath !== undefined) {
    process.stdout.write(renderCommandHelp(helpPath, options as never, allowPositionals) + '\n');
    process.exit(0);
  }
  try {
    return parseArgs({ args: joinNegativeValues(argv, options), options, allowPositionals, strict: true });
  } catch (e) {
    // node's messages carry advice meant for its own examples; say the short thing every subcommand says.
    const err = e as NodeJS.ErrnoException;
    const flag = /'(-[^' ]*)/.exec(err.message)?.[1];
    const known = Object.keys(options).map((k) => `--${k}`).join(', ');
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) throw new UsageError(`unknown option "${flag}"${known ? ` (this command takes ${known})` : ''}`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) {
      if (/does not take an argument/.test(err.message)) throw new UsageError(`${flag} takes no value`);
      const next = argv[argv.indexOf(flag) + 1];
      if (/ambiguous/.test(err.message) && next !== undefined) throw new UsageError(`${flag} needs a value, got the option "${next}"; to give a value that starts with "-", write ${flag}=${next}`);
      throw new UsageError(`${flag} needs a value`);
    }
    if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      const arg = /'([^']*)'/.exec(err.message)?.[1] ?? '';
      throw new UsageError(`unexpected argument "${arg}"${known ? ` (this command takes only options: ${known})` : ''}`);
    }
    throw new UsageError(err.message.split('\n')[0]!);
  }
}

/** `--seed -1` means the value -1 (node's parser would call it an ambiguous option): pass it as `--seed=-1`. */
function joinNegativeValues(argv: string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** A number flag: undefined when absent, else a finite number (an integer when `integer`), or a UsageError naming the flag. */
export function numFlag(v: string | undefined, name: string, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'}, got "${v}"`);
  return n;
}

export function intFlag(v: string | undefined, name: string, dflt: number): number {
  return numFlag(v, name, true) ?? dflt;
}

export const DEFAULT_DATA_DIR = '.setu';

/** Where `setu user enrol` writes a user's key by default, and where operator commands look for it. */
export const userKeyFile = () => join(process.env.SETU_HOME ?? join(homedir(), '.setu'), 'key.json');

/**
 * Operator connection: the coordinator (--coordinator, SETU_COORDINATOR, default http://127.0.0.1:7070) and
 * the signing key (--key-file, SETU_KEY_FILE, <--data-dir>/admin.key, ~/.setu/key.json, ./.setu/admin.key,
 * first found). Every request is signed with it. --ca-file (or SETU_CA_FILE) trusts a private CA.
 */
export function operatorTarget(v: { coordinator?: string | undefined; 'key-file'?: string | undefined; 'data-dir'?: string | undefined; 'ca-file'?: string | undefined }): { url: string; signer: Signer; keyFile: string; ca?: Buffer } {
  const url = v.coordinator ?? process.env.SETU_COORDINATOR ?? 'http://127.0.0.1:7070';
  const candidates = v['key-file'] ?? process.env.SETU_KEY_FILE;
  let file: string | undefined;
  if (candidates) file = candidates;
  else {
    const tries = [...(v['data-dir'] ? [join(v['data-dir'], 'admin.key')] : []), userKeyFile(), join(DEFAULT_DATA_DIR, 'admin.key')];
    file = tries.find((f) => existsSync(f));
  }
  if (!file) throw new UsageError("no signing key: pass --key-file, set SETU_KEY_FILE, run `setu user enrol`, or run where the coordinator's --data-dir holds admin.key");
  let k;
  try {
    k = readKeyFile(file);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const caFile = v['ca-file'] ?? process.env.SETU_CA_FILE;
  return { url, signer: { keyId: k.keyId, privateKey: k.privateKey }, keyFile: file, ...(caFile ? { ca: readCaFile(caFile, v['ca-file'] ? '--ca-file' : 'SETU_CA_FILE') } : {}) };
}

/** The CA certificate an operator names, or a UsageError saying which setting names a file that is not there. */
export function readCaFile(file: string, setting: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new UsageError(`${setting} ${file}: cannot read the CA certificate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export function operatorClient(v: Parameters<typeof operatorTarget>[0]): HttpClient {
  const t = operatorTarget(v);
  return new HttpClient({ baseUrl: t.url, signer: t.signer, ...(t.ca ? { ca: t.ca } : {}), giveUpAfterMs: 10_000, finalServerErrors: true });
}

export const operatorFlags = {
  coordinator: { type: 'string' },
  'key-file': { type: 'string' },
  'ca-file': { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
} as const;

/**
 * An invite token given as --token, or read from --token-file (what `setu site invite --out` / `setu user add --out`
 * wrote: a token in a file stays out of shell history and can travel by whatever channel the consortium trusts).
 */
export function tokenFrom(v: { token?: string | undefined; 'token-file'?: string | undefined }): string | undefined {
  if (v.token !== undefined && v['token-file'] !== undefined) throw new UsageError('give --token or --token-file, not both');
  if (v['token-file'] === undefined) return v.token;
  let text: string;
  try {
    text = readFileSync(v['token-file'], 'utf8');
  } catch (e) {
    throw new UsageError(`--token-file ${v['token-file']}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const token = text.trim();
  if (!token || /\s/.test(token)) throw new UsageError(`--token-file ${v['token-file']}: expected one invite token`);
  return token;
}

/** Writes an invite token to `file` (mode 600, made fresh: an existing file is not overwritten). */
export function writeTokenFile(file: string, token: string): void {
  mkdirSync(dirname(resolve(file)), { recursive: true });
  try {
    writeFileSync(file, token + '\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`--out ${file} exists; an invite is written to a new file`);
    throw new UsageError(`--out ${file}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * The study a command names: its id, or its name when exactly one study has that name (ids carry a random suffix,
 * so people and scripts can say `setu study start heart-in-jp`).
 */
export async function studyId(api: HttpClient, ref: string): Promise<string> {
  const list = await api.json<{ id: string; name: string }[]>('GET', '/v1/studies');
  if (list.some((s) => s.id === ref)) return ref;
  const named = list.filter((s) => s.name === ref);
  if (named.length === 1) return named[0]!.id;
  if (named.length > 1) throw new UsageError(`${named.length} studies are named "${ref}" (${named.map((s) => s.id).join(', ')}): give the id`);
  throw new UsageError(`no study has the id or name "${ref}"${list.length ? ` (studies: ${list.slice(-8).map((s) => s.id).join(', ')})` : ' (there are no studies yet)'}`);
}
