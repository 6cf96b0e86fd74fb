/**
 * The Python interpreter for tests that run real PyTorch (the Python SDK, the worked examples): the first of
 * $SETU_PYTHON, /usr/bin/python3 (Debian's, where python3-torch installs) and `python3` that imports torch, sklearn
 * and numpy. Outside CI a machine without them skips those tests with the reason; in CI (process.env.CI, as in
 * pg.ts) their absence fails the run, since .ci/run installs them.
 */
import { spawnSync } from 'node:child_process';

export const PYTHON_PACKAGES = 'python3-torch python3-torchvision python3-sklearn python3-numpy python3-pip python3-venv python3-setuptools python3-yaml';

let found: { python: string } | { skip: string } | undefined;

export function torchPython(): { python: string } | { skip: string } {
  if (found) return found;
  const candidates = [process.env.SETU_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch, sklearn, numpy'], { encoding: 'utf8' });
    if (r.status === 0) return (found = { python });
  }
  const why = `no Python with torch, sklearn and numpy (tried ${candidates.join(', ')}); install: apt-get install ${PYTHON_PACKAGES}`;
  if (process.env.CI) throw new Error(`required in CI: ${why}`);
  return (found = { skip: why });
}

/** For node:test's `skip` option: false when a torch Python is there, else the reason. */
export function skipWithoutTorch(): string | false {
  const p = torchPython();
  return 'skip' in p ? p.skip : false;
}

/** The interpreter (call only when skipWithoutTorch() is false). */
export function python(): string {
  const p = torchPython();
  if ('skip' in p) throw new Error(p.skip);
  return p.python;
}
