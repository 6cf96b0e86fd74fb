/**
 * A worker process of `setu bench live` (live.ts forks it): many real site agents in one process, each with its own
 * state directory, enrolled with its own invite and signing its own requests (the `SiteAgent` class of
 * site/agent.ts, unchanged). With `prepared`, an agent's trainer uploads a prepared update (`preparedUpdate`)
 * instead of training, so the coordinator is what is measured; the update is still a valid one: the study's tensors
 * with their shapes and dtype, the site's declared example count, the agent's metadata and its usage report.
 *
 * The same file is the bare-POST sink of the yardsticks (`{ sink: true }`): a plain node:http server in its own
 * process that reads each body and answers 200, the floor any upload route sits on.
 */
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import YAML from 'yaml';
import { enrol, SiteAgent } from '../../site/agent.js';
import { loadSiteConfig } from '../../site/config.js';
import { declaredCohort } from '../../site/datasets.js';
import type { EvaluateOutcome, FitOutcome, Trainer, TrainerInput } from '../../site/trainers/trainer.js';
import type { Weights } from '../../protocol/tensors.js';

export interface WorkerSite {
  /** 0-based index over the whole run: seeds its prepared updates. */
  index: number;
  name: string;
  token: string;
  center: number;
  dir: string;
}

export type WorkerCommand =
  | { kind: 'agents'; url: string; prepared: boolean; pollWaitMs: number; sites: WorkerSite[]; logFile: string }
  | { kind: 'sink' }
  | { kind: 'stop' };

export type WorkerReport = { kind: 'enrolled'; sites: number } | { kind: 'sink'; port: number } | { kind: 'failed'; message: string };

/** A small, fast, seeded generator (mulberry32): the harness regenerates the very same values to check the mean. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The prepared update of site `index` for `round`, in the layout of `like` (tensor names in sorted order): values
 * in [-0.1, 0.1), exact in float32. Deterministic, so the harness computes the FedAvg it expects from these alone.
 */
export function preparedUpdate(like: Weights, index: number, round: number): Weights {
  const out = Object.create(null) as Weights;
  for (const [t, k] of Object.keys(like).sort().entries()) {
    const src = like[k]!;
    const rand = mulberry32(Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(round + 1, 0x85ebca6b) ^ Math.imul(t + 1, 0xc2b2ae35));
    const data = new Float32Array(src.data.length);
    for (let i = 0; i < data.length; i++) data[i] = (rand() - 0.5) * 0.2;
    out[k] = { shape: [...src.shape], data, ...(src.dtype ? { dtype: src.dtype } : {}) };
  }
  return out;
}

/** The trainer of a prepared site: no training, the prepared update with the site's real example count. */
export class PreparedTrainer implements Trainer {
  readonly description = 'prepared updates (setu bench live)';
  constructor(
    private readonly index: number,
    private readonly examples: number,
  ) {}

  async fit(input: TrainerInput): Promise<FitOutcome> {
    return { weights: preparedUpdate(input.global, this.index, input.task.round), numExamples: this.examples, trainMetrics: { loss: 0.5 }, commit: [] };
  }

  async evaluate(): Promise<EvaluateOutcome> {
    return { metrics: { loss: 0.5 }, examples: this.examples };
  }
}

const controller = new AbortController();
const running: Promise<void>[] = [];

async function startAgents(cmd: Extract<WorkerCommand, { kind: 'agents' }>): Promise<void> {
  const log = (site: string) => (m: string) => appendFileSync(cmd.logFile, `${new Date().toISOString()} ${site}: ${m}\n`);
  const queue = [...cmd.sites];
  // A few enrolments at a time: each makes a key pair and reads its dataset, and the coordinator takes them in turn.
  const enrolOne = async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      mkdirSync(s.dir, { recursive: true });
      const file = join(s.dir, 'site.yaml');
      writeFileSync(file, YAML.stringify({ coordinator: cmd.url, stateDir: 'state', pollWaitMs: cmd.pollWaitMs, datasets: { heart: { format: 'fed-heart-disease', center: s.center } } }));
      const cfg = loadSiteConfig(file);
      await enrol(cfg, s.token, log(s.name));
      const trainer = cmd.prepared ? new PreparedTrainer(s.index, await declaredCohort(cfg, 'heart')) : undefined;
      const agent = new SiteAgent(cfg, { log: log(s.name), signal: controller.signal, ...(trainer ? { trainer } : {}) });
      running.push(agent.run().catch((e) => log(s.name)(`agent stopped: ${(e as Error).message}`)));
    }
  };
  await Promise.all(Array.from({ length: 8 }, enrolOne));
}

function startSink(): Promise<number> {
  const server = http.createServer((req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ received: n }));
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

const send = (r: WorkerReport) => process.send?.(r);

if (process.send) {
  process.on('message', (cmd: WorkerCommand) => {
    if (cmd.kind === 'stop') {
      controller.abort();
      void Promise.allSettled(running).then(() => process.exit(0));
      // Agents blocked in a long-poll see the abort at once; nothing here may keep the process past that.
      setTimeout(() => process.exit(0), 5000).unref();
      return;
    }
    const work = cmd.kind === 'sink' ? startSink().then((port) => send({ kind: 'sink', port })) : startAgents(cmd).then(() => send({ kind: 'enrolled', sites: cmd.sites.length }));
    work.catch((e) => send({ kind: 'failed', message: (e as Error).stack ?? String(e) }));
  });
  process.on('disconnect', () => process.exit(0));
}
