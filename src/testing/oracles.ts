/**
 * Independent reference tools that tests compare against: R (Rscript with the `survival` package) and the
 * system Python (/usr/bin/python3 with numpy, pandas, statsmodels). Outside CI a missing tool skips the
 * test with the reason; under CI (`CI` set and not "false") it fails, because CI installs them.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const inCi = (): boolean => !!process.env.CI && process.env.CI !== 'false';

export const PYTHON = '/usr/bin/python3';

function probe(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return `${cmd} is not installed (${r.error.message})`;
  if (r.status !== 0) return `${cmd} ${args.join(' ')} failed: ${r.stderr.trim().split('\n').slice(-1)[0]}`;
  return null;
}

const cache = new Map<string, string | null>();
function skipReason(key: string, check: () => string | null): string | false {
  if (!cache.has(key)) cache.set(key, check());
  const why = cache.get(key)!;
  if (why === null) return false;
  if (inCi()) throw new Error(`CI: ${why}; .ci/run must install it`);
  return why;
}

/** false when R with `survival` is there; else the reason to skip (outside CI). */
export function rSkipReason(): string | false {
  return skipReason('R', () => probe('Rscript', ['-e', 'suppressMessages(library(survival))']));
}

/** false when /usr/bin/python3 has the given modules; else the reason to skip (outside CI). */
export function pythonSkipReason(modules: string[]): string | false {
  return skipReason(`py:${modules.join(',')}`, () => probe(PYTHON, ['-c', `import ${modules.join(', ')}`]));
}

function runScript(cmd: string, ext: string, script: string, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'setu-oracle-'));
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    writeFileSync(join(dir, `script.${ext}`), script);
    const r = spawnSync(cmd, [join(dir, `script.${ext}`)], { cwd: dir, encoding: 'utf8', timeout: 300_000, maxBuffer: 256 * 1024 * 1024 });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}):\n${r.stderr}`);
    return r.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs an R script (in a temporary directory holding `files`) and returns its stdout. */
export function runR(script: string, files: Record<string, string> = {}): string {
  return runScript('Rscript', 'R', script, files);
}

export function runPython(script: string, files: Record<string, string> = {}): string {
  return runScript(PYTHON, 'py', script, files);
}

/**
 * Parses lines `key v1 v2 …` (what the oracle scripts print with full precision) into numbers;
 * `NA`, `NaN` and `Inf` map to NaN/±Infinity.
 */
export function parseKeyed(text: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length < 1 || parts[0] === '') continue;
    out.set(parts[0]!, parts.slice(1).map((v) => (v === 'NA' || v === 'NaN' ? NaN : v === 'Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v))));
  }
  return out;
}
