/**
 * `setu bench sdk`: the Python SDK's overhead. A round of the breast-cancer example through Setu (a coordinator and
 * three site-agent processes over loopback HTTP; each task a fresh `python3 trainer.py` through the SDK: process
 * start, torch import, weights in and out as safetensors, the upload, FedAvg) against the same training in a plain
 * PyTorch loop (reference.py: the same model, data, seeds and local epochs, the three sites one after another in one
 * process, FedAvg in memory), measured in the same run. Both must end at the same model (the example's own check).
 *
 *   setu bench sdk [--epochs 2,40] [--rounds 3] [--python /usr/bin/python3] [--keep DIR] [--json]
 *
 * Ratio = median Setu fit round (opened → committed, from the coordinator's store) / median plain round. The last
 * column is what one trainer process costs before it trains: `python3 -c "import torch, setu_trainer.torch"`, timed
 * in the same run (median of three), since each task of the contract is a fresh process.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { parse, UsageError } from '../args.js';
import { table } from '../table.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const EXAMPLE = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'examples', 'pytorch-breast-cancer');

interface Row {
  epochs: number;
  rounds: number;
  setuRoundS: number;
  plainRoundS: number;
  ratio: number;
  overheadS: number;
  accuracyDiff: number;
  /** Wall seconds of a Python start plus `import torch, setu_trainer.torch`. */
  startS: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    child.stderr.on('data', (b: Buffer) => (out += b));
    child.on('close', (code) => done({ code, out }));
  });
}

const USAGE = 'usage: setu bench sdk [--epochs 2,40] [--rounds 3] [--python PATH] [--keep DIR] [--json]';

export async function main(argv: string[]): Promise<number> {
  let v;
  try {
    v = parse(argv, { epochs: { type: 'string' }, rounds: { type: 'string' }, python: { type: 'string' }, keep: { type: 'string' }, json: { type: 'boolean' } }).values;
  } catch (e) {
    throw new UsageError(`setu bench sdk: ${(e as Error).message}\n${USAGE}`);
  }
  const epochs = (v.epochs ?? '2,40').split(',').map((s) => Number(s));
  const rounds = Number(v.rounds ?? 3);
  if (epochs.some((e) => !Number.isInteger(e) || e < 1) || !Number.isInteger(rounds) || rounds < 1) throw new UsageError('setu bench sdk: --epochs takes positive integers (2,40), --rounds a positive integer');
  const python = v.python ?? process.env.SETU_PYTHON ?? '/usr/bin/python3';
  const root = v.keep ? resolve(v.keep) : mkdtempSync(join(tmpdir(), 'setu-bench-sdk-'));
  const rows: Row[] = [];
  try {
    for (const e of epochs) {
      const work = join(root, `epochs-${e}`);
      mkdirSync(work, { recursive: true });
      const study = YAML.parse(readFileSync(join(EXAMPLE, 'study.yaml'), 'utf8')) as { name: string; rounds: number; fit: { epochs: number } };
      study.name = `bench-sdk-e${e}`;
      study.rounds = rounds;
      study.fit.epochs = e;
      writeFileSync(join(work, 'study.yaml'), YAML.stringify(study));
      process.stderr.write(`sdk: ${rounds} rounds of ${e} local epochs at 3 sites, through Setu and in plain PyTorch …\n`);
      const r = await run('bash', [join(EXAMPLE, 'run.sh')], { WORK: work, SETU_PYTHON: python, STUDY_FILE: join(work, 'study.yaml') });
      if (r.code !== 0) {
        process.stderr.write(r.out);
        throw new Error(`the example failed (exit ${r.code}); its files are in ${work}`);
      }
      const s = JSON.parse(readFileSync(join(work, 'study.json'), 'utf8')) as { rounds: { round: number; kind: string; openedAt: number; committedAt: number | null }[] };
      const setu = s.rounds.filter((x) => x.kind === 'fit' && x.committedAt !== null).map((x) => (x.committedAt! - x.openedAt) / 1000);
      const plain = (JSON.parse(readFileSync(join(work, 'reference.json'), 'utf8')) as { roundSeconds: number[] }).roundSeconds;
      const diff = Number(/pooled accuracy differs by ([0-9.]+)/.exec(r.out)?.[1] ?? NaN);
      const [su, pl] = [median(setu), median(plain)];
      const starts: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const p = await run(python, ['-c', 'import torch, setu_trainer.torch'], { PYTHONPATH: join(ROOT, 'python', 'setu_trainer') });
        if (p.code !== 0) throw new Error(`${python} cannot import torch and the SDK: ${p.out}`);
        starts.push((performance.now() - t0) / 1000);
      }
      rows.push({ epochs: e, rounds, setuRoundS: su, plainRoundS: pl, ratio: su / pl, overheadS: su - pl, accuracyDiff: diff, startS: median(starts) });
    }
  } finally {
    if (!v.keep) rmSync(root, { recursive: true, force: true });
  }
  if (v.json) {
    process.stdout.write(JSON.stringify({ bench: 'sdk', python, sites: 3, rows }) + '\n');
    return 0;
  }
  process.stdout.write(`Python SDK overhead: a fit round of 3 sites through Setu (3 agent processes, one trainer process per task, HTTP)\nagainst the same training in a plain PyTorch loop (3 sites one after another, one process); medians over ${rounds} rounds\n\n`);
  process.stdout.write(table(['local epochs', 'Setu round s', 'plain round s', 'ratio', 'overhead s/round', '|Δ accuracy|', 'python+torch start s'],
    rows.map((x) => [x.epochs, x.setuRoundS.toFixed(2), x.plainRoundS.toFixed(3), `${x.ratio.toFixed(1)}×`, x.overheadS.toFixed(2), x.accuracyDiff.toFixed(4), x.startS.toFixed(2)])) + '\n');
  return 0;
}
