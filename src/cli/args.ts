/** Small helpers over node:util parseArgs so every subcommand reports bad flags the same way. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export class UsageError extends Error {}

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function intFlag(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new UsageError(`--${name} must be an integer, got "${v}"`);
  return n;
}

export const DEFAULT_DATA_DIR = '.setu';

/** Operator connection: flags, then environment, then the local coordinator's data directory. */
export function operatorTarget(v: { coordinator?: string | undefined; token?: string | undefined; 'data-dir'?: string | undefined }): { url: string; token: string } {
  const url = v.coordinator ?? process.env.SETU_COORDINATOR ?? 'http://127.0.0.1:7070';
  let token = v.token ?? process.env.SETU_TOKEN;
  if (!token) {
    const f = join(v['data-dir'] ?? DEFAULT_DATA_DIR, 'admin.token');
    if (existsSync(f)) token = readFileSync(f, 'utf8').trim();
  }
  if (!token) throw new UsageError('no operator token: pass --token, set SETU_TOKEN, or run where the coordinator\'s --data-dir holds admin.token');
  return { url, token };
}

export const operatorFlags = {
  coordinator: { type: 'string' },
  token: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
} as const;
