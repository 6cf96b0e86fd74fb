/**
 * `setu demo`: the four-hospital Fed-Heart-Disease federation, for real. An embedded coordinator
 * (SQLite in a temporary directory) and four site agents, each a separate OS process reading only its
 * own hospital's file, talk HTTP over loopback and run FLamby's protocol: FedAvg, 15 rounds of 100 local
 * SGD steps, lr 0.001, batch 4. Beside it, the baselines a clinician asks for, trained in this process:
 * Pooled (all data in one place, which the federation exists to avoid) and each hospital alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { initialWeights } from '../coordinator/engine.js';
import { HttpClient } from '../site/http.js';
import type { StudySpec } from '../protocol/api.js';
import { decodeSafetensors } from '../protocol/safetensors.js';
import type { Weights } from '../protocol/tensors.js';
import { HEART_CENTERS, defaultHeartDir, loadHeartPooled, type HeartPooledData } from '../site/data/heart.js';
import { createModel } from '../learning/models/registry.js';
import { trainCentral } from '../learning/client.js';
import { deriveSeed } from '../learning/rng.js';
import type { Model } from '../learning/types.js';
import { UsageError, intFlag, parse } from './args.js';
import { DEMO_INSTITUTIONS, approveStudy, prepareDataDir, releaseModel, setUpConsortium } from './demo-consortium.js';
import { pct, table } from './table.js';

export interface DemoResult {
  pooledTest: number;
  perSite: number[];
}

export interface DemoOutput {
  seed: number;
  results: Record<string, DemoResult>;
  federation: { studyId: string; rounds: number; sites: string[]; seconds: number; dataDir: string | null };
  /** What protected the updates (SecAgg+ always: the IN and JP policies ask for it) and, with DP, what each site spent. */
  privacy: DemoPrivacy;
}

export interface DemoPrivacy {
  secagg: boolean;
  dp: { level: 'sample' | 'client'; epsilon: number; delta: number; clipNorm: number; lr: number; spent: Record<string, number> } | null;
}

/**
 * The demo study's privacy: SecAgg+ always (the demo's hospitals are Indian and Japanese, and both countries'
 * policies ask for updates leaving them to be masked; it changes no accuracy of the demo, only what the coordinator
 * can read), and DP when --dp-epsilon asks for it. The flags are checked before anything starts.
 */
export function demoPrivacy(v: { secagg?: boolean | undefined; 'dp-epsilon'?: string | undefined; 'dp-delta'?: string | undefined; 'dp-level'?: string | undefined; 'dp-clip'?: string | undefined }): NonNullable<StudySpec['privacy']> {
  const num = (x: string | undefined, name: string, dflt: number, ok: (n: number) => boolean, what: string): number => {
    if (x === undefined) return dflt;
    const n = Number(x);
    if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`--${name} must be ${what}, got ${x}`);
    return n;
  };
  const dpAsked = v['dp-epsilon'] !== undefined;
  if (!dpAsked && (v['dp-delta'] !== undefined || v['dp-level'] !== undefined || v['dp-clip'] !== undefined)) throw new UsageError('--dp-delta, --dp-level and --dp-clip need --dp-epsilon');
  const out: NonNullable<StudySpec['privacy']> = { secagg: {} };
  if (dpAsked) {
    const level = v['dp-level'] ?? 'sample';
    if (level !== 'sample' && level !== 'client') throw new UsageError(`--dp-level must be sample or client, got ${level}`);
    out.dp = {
      level,
      epsilon: num(v['dp-epsilon'], 'dp-epsilon', 1, (n) => n > 0 && n <= 1000, 'a number in (0, 1000]'),
      delta: num(v['dp-delta'], 'dp-delta', 1e-3, (n) => n > 0 && n < 1, 'a number in (0, 1)'),
      clipNorm: num(v['dp-clip'], 'dp-clip', level === 'sample' ? 1 : 0.1, (n) => n > 0, 'a positive number'),
      // Under SecAgg+ the coordinator sees only the sum, so client-level noise is the sites' (distributed).
      ...(level === 'client' ? { mode: 'distributed' } : {}),
    } as NonNullable<StudySpec['privacy']>['dp'];
  }
  return out;
}

/** DP-SGD trains at lr 0.01: at FLamby's 0.001 the clipped runs are under-trained after 1500 steps (see bench dp-heart). */
export const DP_SGD_LR = 0.01;

const MAIN_JS = resolve(dirname(fileURLToPath(import.meta.url)), 'main.js');

export function heartStudySpec(seed: number, rounds = 15): StudySpec {
  return {
    name: 'Fed-Heart-Disease FedAvg (FLamby protocol)',
    dataset: 'heart',
    model: { kind: 'logistic', inputDim: 13 },
    strategy: { name: 'FedAvg' },
    rounds,
    fit: { localSteps: 100, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } },
    roundTimeoutSeconds: 120,
    seed,
  };
}

/** FLamby's evaluation: every hospital's test set (its own normalisation) and the pooled test set (pooled normalisation). */
export function evaluateHeart(model: Model, w: Weights, data: HeartPooledData): DemoResult {
  return {
    pooledTest: model.evaluate(w, data.test).accuracy!,
    perSite: data.centers.map((c) => model.evaluate(w, c.test).accuracy!),
  };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    seed: { type: 'string' }, json: { type: 'boolean' }, 'data-dir': { type: 'string' }, rounds: { type: 'string' }, verbose: { type: 'boolean' }, dashboard: { type: 'boolean' },
    secagg: { type: 'boolean' }, 'dp-epsilon': { type: 'string' }, 'dp-delta': { type: 'string' }, 'dp-level': { type: 'string' }, 'dp-clip': { type: 'string' },
  });
  const privacy = demoPrivacy(values);
  const seed = intFlag(values.seed, 'seed', 42);
  if (seed < 0 || seed > 2 ** 31 - 1) throw new UsageError(`--seed must be an integer from 0 to ${2 ** 31 - 1}, got ${seed}`);
  const rounds = intFlag(values.rounds, 'rounds', 15);
  if (rounds < 1) throw new UsageError('--rounds must be at least 1');
  const json = !!values.json;
  const say = (s: string) => process.stderr.write(s + '\n');
  const started = Date.now();
  const dataDir = values['data-dir'] ? resolve(values['data-dir']) : mkdtempSync(join(tmpdir(), 'setu-demo-'));
  prepareDataDir(dataDir);
  const logDir = join(dataDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const children: ChildProcess[] = [];
  let coord: RunningCoordinator | undefined;
  const cleanup = async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    await coord?.close();
    if (!values['data-dir']) rmSync(dataDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => void cleanup().then(() => process.exit(sig === 'SIGTERM' ? 143 : 130));
  process.once('SIGINT', onSignal);
  // Agents are child processes: a SIGTERM must stop them too, not leave them polling a dead coordinator.
  process.once('SIGTERM', onSignal);
  try {
    // The coordinator's directory holds its keys and database: only this user may enter it.
    mkdirSync(join(dataDir, 'coordinator'), { mode: 0o700 });
    coord = await startCoordinator({ dataDir: join(dataDir, 'coordinator'), port: 0, tickMs: 200, maxWaitMs: 10_000, log: values.verbose ? (m) => say(`coordinator: ${m}`) : undefined });
    say(`coordinator on ${coord.url} (SQLite in ${join(dataDir, 'coordinator')})`);
    if (values.dashboard) say(`dashboard: ${coord.url}/ (log in with a key file: ${join(dataDir, 'coordinator', 'admin.key')} is the consortium admin, ${join(dataDir, 'people')} holds the study lead's and each site admin's)`);
    if (!coord.adminKey) throw new Error('the demo coordinator wrote no admin.key');
    // Every request below is signed: the admin's key from admin.key, the people's keys made here.
    const admin = new HttpClient({ baseUrl: coord.url, signer: { keyId: coord.adminKey.keyId, privateKey: coord.adminKey.privateKey }, giveUpAfterMs: 10_000 });
    const people = await setUpConsortium(admin, coord.url, dataDir);
    const lead = people.lead;
    const heartDir = defaultHeartDir();
    const siteNames = HEART_CENTERS.map((n) => `${n}`);
    for (let c = 0; c < 4; c++) {
      const name = siteNames[c]!;
      const siteDir = join(dataDir, 'sites', name);
      mkdirSync(siteDir, { recursive: true, mode: 0o700 });
      const cfgFile = join(siteDir, 'site.yaml');
      // With DP, each hospital caps its spend on the study at the study's own (ε, δ).
      const siteBudget = privacy.dp ? { privacy: { budget: { epsilon: privacy.dp.epsilon, delta: privacy.dp.delta } } } : {};
      const jurisdiction = DEMO_INSTITUTIONS[c]!.jurisdiction;
      writeFileSync(cfgFile, YAML.stringify({ coordinator: coord.url, stateDir: 'state', pollWaitMs: 10_000, jurisdiction, datasets: { heart: { format: 'fed-heart-disease', dir: heartDir, center: c } }, ...siteBudget }), { mode: 0o600 });
      const log = createWriteStream(join(logDir, `${name}.log`), { mode: 0o600 });
      const child = spawn(process.execPath, [MAIN_JS, 'site', 'start', '--config', cfgFile, '--token', people.invites.get(name)!], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.pipe(log);
      child.stderr!.pipe(log);
      if (values.verbose) child.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
      children.push(child);
    }
    say(`4 site agents started (separate processes; logs in ${values['data-dir'] ? logDir : 'the temporary directory'}): ${DEMO_INSTITUTIONS.map((i) => `${i.site} at ${i.name} (${i.jurisdiction})`).join(', ')}`);

    const spec = heartStudySpec(seed, rounds);
    spec.privacy = privacy;
    if (privacy.dp?.level === 'sample') spec.fit.optimizer.lr = DP_SGD_LR;
    // Wait until every agent has enrolled, then start the study with all four.
    for (let i = 0; ; i++) {
      const sites = await admin.json<{ name: string }[]>('GET', '/v1/sites');
      if (sites.length === 4) break;
      const dead = children.find((c) => c.exitCode !== null);
      if (dead) throw new Error(`a site agent exited early (code ${dead.exitCode}); see ${logDir}`);
      if (i > 300) throw new Error('site agents did not enrol within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const { id: studyId } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    // Consortium sites take part only with their own site admin's approval; the start checks the IN and JP policies.
    await approveStudy(people, studyId);
    const done = new Promise<string>((resolveDone) => {
      coord!.bus.on((e) => {
        if (e.type === 'study.status' && e.studyId === studyId && ['completed', 'failed', 'stopped'].includes(e.status)) resolveDone(e.status + (e.error ? `: ${e.error}` : ''));
        if (e.type === 'update.accepted' && e.studyId === studyId && e.round <= rounds) progress(`round ${e.round}/${rounds} · ${e.received}/${e.expected} sites reported`);
        if (e.type === 'round.committed' && e.studyId === studyId && e.kind === 'fit') {
          const loss = e.metrics['fit.loss'];
          const acc = e.metrics['evaluate.accuracy'];
          progress(`round ${e.round}/${rounds} · committed · train loss ${loss?.toFixed(4) ?? '–'} · test acc (model ${e.round - 1}) ${pct(acc)}`, true);
        }
      });
    });
    const isTty = process.stderr.isTTY;
    let lastLine = '';
    function progress(line: string, final = false) {
      if (isTty) {
        process.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
      } else if (final && line !== lastLine) say(line);
      lastLine = line;
    }
    await lead.json('POST', `/v1/studies/${studyId}/start`, {});
    const privLine = ` · ${['SecAgg+', privacy.dp ? `${privacy.dp.level === 'sample' ? 'DP-SGD' : 'DP-FedAvg'} at ε=${privacy.dp.epsilon}, δ=${privacy.dp.delta}` : ''].filter(Boolean).join(', ')}`;
    say(`study ${studyId} started: FedAvg, ${rounds} rounds × 100 local SGD steps, lr ${spec.fit.optimizer.lr}, batch 4, seed ${seed}${privLine}`);

    // Baselines in this process while the federation trains (they need all data in one place).
    const data = loadHeartPooled();
    const model = createModel(spec.model);
    const init = initialWeights(spec);
    const results: Record<string, DemoResult> = {};
    const central = (d: typeof data.train, label: string) =>
      trainCentral({ model, weights: init, data: d, epochs: 50, batchSize: 4, optimizer: { kind: 'adam', lr: 0.001 }, seed: deriveSeed(seed, label) }).weights;
    results['Pooled'] = evaluateHeart(model, central(data.train, 'Pooled'), data);
    for (let c = 0; c < 4; c++) results[`Local${c}`] = evaluateHeart(model, central(data.centers[c]!.train, `Local${c}`), data);

    const status = await withTimeout(done, 300_000, 'the federation did not finish within 5 minutes');
    if (!status.startsWith('completed')) throw new Error(`study ended ${status}`);
    const final = await lead.request('GET', `/v1/studies/${studyId}/model`);
    const fedW = decodeSafetensors(final.body).weights;
    // Per-site accuracy as the sites themselves reported it in the final evaluation round...
    const detail = await lead.json<{ metrics: { round: number; site: string | null; phase: string; name: string; value: number }[] }>('GET', `/v1/studies/${studyId}`);
    const reported = siteNames.map((n) => detail.metrics.find((m) => m.round === rounds && m.site === n && m.phase === 'evaluate' && m.name === 'accuracy')?.value);
    // ...which must equal what the same weights give here on the same rows: a check that nothing was lost on the wire.
    const fed = evaluateHeart(model, fedW, data);
    reported.forEach((v, i) => {
      if (v === undefined || Math.abs(v - fed.perSite[i]!) > 1e-9) throw new Error(`site ${siteNames[i]} reported accuracy ${v} but the final model gives ${fed.perSite[i]}`);
    });
    results['FedAvg'] = fed;
    const seconds = (Date.now() - started) / 1000;
    const ordered: Record<string, DemoResult> = { FedAvg: results['FedAvg']!, Pooled: results['Pooled']!, Local0: results['Local0']!, Local1: results['Local1']!, Local2: results['Local2']!, Local3: results['Local3']! };
    let dp: DemoPrivacy['dp'] = null;
    if (privacy.dp) {
      // The spend as the coordinator's privacy ledger holds it (what each site's accountant reported).
      const report = await lead.json<{ sites: { site: string; spent: { epsilon: number } }[] }>('GET', `/v1/studies/${studyId}/privacy`);
      const spent = Object.fromEntries(siteNames.map((n) => [n, report.sites.find((x) => x.site === n)?.spent.epsilon ?? 0]));
      dp = { level: privacy.dp.level, epsilon: privacy.dp.epsilon, delta: privacy.dp.delta, clipNorm: privacy.dp.clipNorm, lr: spec.fit.optimizer.lr, spent };
    }
    const output: DemoOutput = { seed, results: ordered, federation: { studyId, rounds, sites: siteNames, seconds, dataDir: values['data-dir'] ? dataDir : null }, privacy: { secagg: true, dp } };
    // The sign-offs the IN and JP policies ask for, then the release: the model card and the governance view show both.
    await releaseModel(people, admin, studyId);
    say(`model released, signed off by the site admins of ${[...people.siteAdmins.keys()].join(', ')} and the consortium admin`);
    if (json) process.stdout.write(JSON.stringify(output) + '\n');
    else {
      process.stdout.write(
        '\n' +
          table(
            ['method', 'pooled test', ...siteNames.map((n, i) => `${i}:${n}`)],
            Object.entries(ordered).map(([k, r]) => [k, pct(r.pooledTest), ...r.perSite.map(pct)]),
          ) +
          `\n\nAccuracy on each hospital's test split, and on the pooled test split (the 254 test patients of all four in one place, as FLamby evaluates), seed ${seed}.\n` +
          `FedAvg was trained over HTTP by 4 separate site processes (demo wall time ${seconds.toFixed(1)} s); Pooled is the baseline trained on all the data in one place, Local0–3 each hospital alone.\n` +
          privacyText(output.privacy) +
          `Data: UCI Heart Disease (Janosi, Steinbrunn, Pfisterer, Detrano, 1988), CC BY 4.0, preprocessed as FLamby's Fed-Heart-Disease.\n`,
      );
    }
    if (values.dashboard) {
      // The dashboard outlives the training: keep everything up until Ctrl-C (or SIGTERM), which cleans up.
      say(`the study has finished; the dashboard stays up at ${coord.url}/ until Ctrl-C`);
      await new Promise<never>(() => {});
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

function privacyText(p: DemoPrivacy): string {
  const lines: string[] = [];
  if (p.secagg) lines.push('Updates were aggregated under SecAgg+: the coordinator only ever held masked vectors and their sum.');
  if (p.dp) {
    const spent = Object.entries(p.dp.spent).map(([s, e]) => `${s} ε=${e.toFixed(3)}`).join(', ');
    lines.push(`${p.dp.level === 'sample' ? 'Sample-level DP-SGD' : 'Client-level DP-FedAvg'} (clip ${p.dp.clipNorm}, lr ${p.dp.lr}) at target ε=${p.dp.epsilon}, δ=${p.dp.delta}; spent per site (δ=${p.dp.delta}): ${spent}.`);
  }
  return lines.join('\n') + '\n';
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(message)), ms)))]).finally(() => clearTimeout(t));
}
