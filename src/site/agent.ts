/**
 * The site agent. It only dials out: it long-polls the coordinator for tasks, runs each one on this
 * site's own data, and uploads the result (weights and metrics, never a row). Everything it must not
 * lose is on its own disk before it is sent, and every network failure is retried with backoff.
 */
import type { SiteConfig } from './config.js';
import { SiteState, writeAtomic, type Credential, type PendingResult, type QueuedResult } from './state.js';
import { ApiError, HttpClient } from './http.js';
import { CHUNKED_UPLOAD_BYTES, uploadInChunks, type ChunkedUploadOptions } from './upload.js';
import type { Cohorts, EnrolResponse, PrivacySpend, TaskMessage, ResultMeta } from '../protocol/api.js';
import { readFileSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { generateSigningKeys, importPrivateKey, publicKeyToRaw } from '../protocol/signing.js';
import { createPublicKey } from 'node:crypto';
import { RESULT_META_KEY } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors, headerLayout, readSafetensorsHeader, viewTensors } from '../protocol/safetensors.js';
import { ExternalTrainer, ExternalTrainerError, externalTrainerOf } from './trainers/external.js';
import { trainerDeclaration } from './trainers/declaration.js';
import type { Trainer } from './trainers/trainer.js';
import { LOCAL_TENSORS_FILE, releaseOf, startingWeights } from './tensor-rules.js';
import { emptyWeights, narrowForTransport, pickWeights } from '../protocol/tensors.js';
import type { TaskProgress } from '../protocol/api.js';
import { datasetFile, declaredCohort, isExtracted, loadSiteDataset, prepareReport, type SiteData } from './datasets.js';
import { readCsv } from './data/csv.js';
import { createModel } from '../learning/models/registry.js';
import { fit } from '../learning/client.js';
import { BatchStream, type BatchStreamState } from '../learning/batches.js';
import { createRng, deriveSeed } from '../learning/rng.js';
import type { Weights } from '../protocol/tensors.js';
import type { SiteLocalPolicy } from '../governance/policy.js';
import type { ComputeResource } from '../compute/types.js';
import { inProcessUsage, loadLocalPolicy, localPolicyRefusal, runPlacedFit, type UsageReport } from './placed.js';
import { placedTrainer, type PlacedTrainerRun } from './placed-trainer.js';
import { budgetRefusal, declaredPlan, declaredRefusal, dpPlanOf, dpSgdPlanOf, loadBudget, privatiseRelease, spendAndPersist, trainPrivately, type DpTaskPlan } from './privacy.js';
import { AuditWitness } from './audit-witness.js';
import { SECAGG_MARK, secaggBody, uploadSecAgg } from './secagg.js';
import { keepRelease, keepReleaseFile, noiseSecret, releaseStagingFile, releasedFor, taskNoiseSeed } from './release.js';
import { allF32, fileHeader, inMemoryReason, writeReleaseFile } from './release-file.js';
import { AgentStatus } from './status.js';
import type { PrivacyBudget } from '../privacy/budget.js';
import { answerAnalyticsTask } from './analytics-task.js';
import { Backoff, RefusedResults, TaskFailure, checkModelFits, pause, reportTaskError } from './task-errors.js';

export interface AgentOptions {
  log?: (msg: string) => void;
  signal?: AbortSignal;
  /**
   * A trainer given in process instead of the one site.yaml names (an application embedding the agent; the load
   * harness's prepared updates, bench/live.ts). It is run like an external trainer: the agent around it is the same.
   */
  trainer?: Trainer;
}

/** The CA to trust for an HTTPS coordinator, from the config's caFile (relative to the config file). */
export function caOf(cfg: SiteConfig): Buffer | undefined {
  return cfg.caFile ? readFileSync(resolve(cfg.configDir, cfg.caFile)) : undefined;
}

/** Training examples per configured dataset: what the site declares, so the coordinator can refuse implausible counts. */
export async function cohortsOf(cfg: SiteConfig, log: (m: string) => void = () => {}): Promise<Cohorts> {
  const out: Cohorts = {};
  for (const key of Object.keys(cfg.datasets)) {
    try {
      out[key] = await declaredCohort(cfg, key, log);
    } catch (e) {
      log(`dataset ${key}: not declared (${(e as Error).message})`);
    }
  }
  return out;
}

/**
 * Enrols the site: makes its Ed25519 key pair (the private key stays in stateDir/site.key, mode 600) and
 * redeems the one-time invite with the public key and the cohort sizes it holds.
 */
export async function enrol(cfg: SiteConfig, token: string, log: (m: string) => void = () => {}): Promise<Credential> {
  const state = new SiteState(cfg.stateDirAbs);
  const existing = state.credential();
  if (existing) return existing;
  // Reuse a key from an interrupted enrolment: the coordinator may already hold its public half.
  let pem = state.privateKeyPem();
  if (!pem) {
    pem = generateSigningKeys().privateKeyPem;
    state.saveKey(pem);
  }
  const publicKey = publicKeyToRaw(createPublicKey(importPrivateKey(pem)));
  const ca = caOf(cfg);
  const http = new HttpClient({ baseUrl: cfg.coordinator, ...(ca ? { ca } : {}), onRetry: (n, d, why) => log(`enrol: coordinator unreachable (${why}); retry ${n} in ${Math.round(d)} ms`) });
  const r = await http.json<EnrolResponse>('POST', '/v1/enrol', { token, publicKey, cohorts: await cohortsOf(cfg, log) });
  const cred: Credential = { coordinator: cfg.coordinator, siteId: r.siteId, siteName: r.siteName };
  // The site's noise secret is made with its identity (release.ts): every DP task's noise derives from it.
  noiseSecret(state);
  state.saveCredential(cred);
  log(`enrolled as ${r.siteName} (${r.siteId})`);
  return cred;
}

export class SiteAgent {
  private readonly state: SiteState;
  private readonly http: HttpClient;
  private readonly log: (m: string) => void;
  private readonly data = new Map<string, SiteData>();
  private readonly privacyRefused = new Set<string>();
  /** How long to wait after a failure in a row (task-errors.ts); reset by a poll that went through. */
  private readonly backoff = new Backoff();
  /** Results the coordinator refused, per task: a task refused three times is given up (task-errors.ts). */
  private readonly refusedResults = new RefusedResults();
  /** The site's own policy (site.yaml `policy:`); it wins over the jurisdiction's, as in FLARE. */
  private readonly policy: SiteLocalPolicy | undefined;
  /** The site's own program, when site.yaml names one (trainer.kind: external), or the trainer given in AgentOptions. */
  private readonly external: Trainer | undefined;
  readonly cred: Credential;
  /** status.json in the state directory (status.ts): what `setu site status` shows. */
  readonly status: AgentStatus;
  /** The newest signed checkpoint of the coordinator's audit head this site was handed (site/audit-witness.ts). */
  readonly witness: AuditWitness;

  constructor(
    private readonly cfg: SiteConfig,
    private readonly opts: AgentOptions = {},
  ) {
    this.state = new SiteState(cfg.stateDirAbs);
    const cred = this.state.credential();
    if (!cred) throw new Error(`site is not enrolled: run \`setu site enrol --config <file> --token <invite>\` first (no credential in ${this.state.credentialFile})`);
    this.cred = cred;
    const pem = this.state.privateKeyPem();
    if (!pem) throw new Error(`site ${cred.siteName} has no signing key (${this.state.keyFile}); enrol again with a new invite`);
    this.log = opts.log ?? (() => {});
    this.policy = loadLocalPolicy(cfg);
    this.witness = new AuditWitness(cfg.stateDirAbs, cred.siteName, this.log);
    this.status = new AgentStatus(this.state, { siteId: cred.siteId, siteName: cred.siteName, coordinator: cfg.coordinator });
    this.external = opts.trainer ?? (cfg.trainer?.kind === 'external' ? externalTrainerOf(cfg) : undefined);
    let lastRetryLog = 0;
    const ca = caOf(cfg);
    this.http = new HttpClient({
      baseUrl: cfg.coordinator,
      signer: { keyId: cred.siteId, privateKey: importPrivateKey(pem) },
      ...(ca ? { ca } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      onRetry: (n, d, why) => {
        if (Date.now() - lastRetryLog > 5000) {
          // A 429/503 is the coordinator at one of its bounds (its message names the limit), not an outage.
          const what = `coordinator ${/^HTTP (429|503)\b/.test(why) ? 'busy' : 'unreachable'} (${why})`;
          this.log(`${what}; retrying (attempt ${n}, next in ${Math.round(d)} ms)`);
          this.status.error(what);
        }
        lastRetryLog = Date.now();
      },
    });
  }

  /** Runs until the signal aborts; status.json says `stopped` after. */
  async run(): Promise<void> {
    try {
      await this.loop();
    } finally {
      this.status.stopped();
    }
  }

  private async loop(): Promise<void> {
    this.log(`polling ${this.cfg.coordinator} for tasks`);
    let declared = false;
    let lastHandled: string | undefined;
    while (!this.opts.signal?.aborted) {
      try {
        if (!declared) {
          // The config may have changed since enrolment: declare the cohorts this site holds now.
          await this.http.json('PUT', '/v1/agent/cohorts', { cohorts: await cohortsOf(this.cfg, this.log) });
          // Whether this site trains on its own machine or needs compute placed by the coordinator.
          await this.http.json('PUT', '/v1/agent/compute', this.cfg.compute ?? { mode: 'own' });
          // What its trainer can do, so a study it cannot serve is refused at start rather than at task time.
          await this.http.json('PUT', '/v1/agent/trainer', trainerDeclaration(this.cfg));
          declared = true;
        }
        await this.flushPending();
        const task = await this.poll();
        if (task) this.witness.see(task.auditCheckpoint);
        // A task this agent refused for its privacy budget stays open at the coordinator until the round closes: do
        // not refuse (and record) it again on every poll.
        const giveUp = task && this.refusedResults.giveUp(task.taskId);
        // The task just handled is back (its result was refused, it could not be placed): wait longer each time.
        if (task && task.taskId === lastHandled && !giveUp) await pause(this.backoff.failed(), this.opts.signal);
        else this.backoff.reset();
        lastHandled = task?.taskId;
        if (task && giveUp) await reportTaskError(this.http, task, giveUp, this.log);
        else if (task && this.privacyRefused.has(task.taskId)) await new Promise((r) => setTimeout(r, 1000));
        // A task this site cannot run is reported once, with its reason (task-errors.ts), and is not retried here.
        else if (task) await this.handle(task).catch((e) => reportTaskError(this.http, task, e, this.log));
      } catch (e) {
        if (this.opts.signal?.aborted) break;
        if (e instanceof ApiError && e.status === 401) throw new Error(`the coordinator refused this site's credential: ${e.message}`);
        this.status.error((e as Error).message);
        const wait = this.backoff.failed();
        this.log(`error: ${(e as Error).message}${this.backoff.streak > 1 ? ` (${this.backoff.streak} in a row; next try in ${Math.round(wait / 1000)} s)` : ''}`);
        await pause(wait, this.opts.signal);
      }
    }
  }

  private async poll(): Promise<TaskMessage | undefined> {
    const wait = this.cfg.pollWaitMs ?? 20_000;
    const r = await this.http.request('GET', `/v1/agent/task?waitMs=${wait}`, undefined, wait + 30_000);
    this.status.contact();
    return r.status === 204 ? undefined : r.json<TaskMessage>();
  }

  /** Loaded once per study: a CSV dataset's encoding and normalisation depend on the study's schema. */
  private dataset(task: TaskMessage): SiteData {
    const k = `${task.studyId}\u0000${task.dataset}`;
    let d = this.data.get(k);
    if (!d) {
      d = loadSiteDataset(this.cfg, task);
      this.data.set(k, d);
    }
    return d;
  }

  /** Runs one task; status.json shows it while it runs and how it ended. */
  async handle(task: TaskMessage): Promise<void> {
    this.status.taskStarted(task);
    try {
      await this.runTask(task);
      this.status.taskEnded(task.taskId, 'sent');
    } catch (e) {
      this.status.taskEnded(task.taskId, 'failed', (e as Error).message);
      throw e;
    }
  }

  private async runTask(task: TaskMessage): Promise<void> {
    const started = Date.now();
    const cpu0 = process.cpuUsage();
    // A task issued again (a coordinator restarted a SecAgg+ round) whose result is still queued here: send that
    // result, do not train (and spend privacy) twice.
    if (this.state.pending().some((p) => p.taskId === task.taskId)) return this.flushPending();
    if (await this.resubmitted(task)) return;
    if (task.kind === 'analytics') {
      // The query answered under this site's own analytics policy (analytics-task.ts); only the answer leaves.
      const out = answerAnalyticsTask(this.cfg, this.state, task, this.cred.siteName, started);
      if ('refusal' in out) return this.refuse(task, out.refusal);
      this.state.savePending({ taskId: task.taskId, studyId: task.studyId, contentType: 'application/json', body: new TextEncoder().encode(JSON.stringify(out.meta)), commit: [] });
      this.log(`task ${task.taskId}: ${task.analytics!.query.kind} query answered; uploading`);
      return this.flushPending();
    }
    if (task.kind === 'prepare') {
      // Only the verdict on the file and, for global normalisation, column sums leave the site.
      const { report, examples } = await prepareReport(this.cfg, task, this.log);
      const meta: ResultMeta = { taskId: task.taskId, numExamples: examples, prepare: report, durationMs: Date.now() - started };
      this.state.savePending({ taskId: task.taskId, studyId: task.studyId, contentType: 'application/json', body: new TextEncoder().encode(JSON.stringify(meta)), commit: [] });
      this.log(`task ${task.taskId}: schema check ${report.problems.length ? `found ${report.problems.length} problem(s)` : 'passed'}; uploading`);
      return this.flushPending();
    }
    if (this.external) return this.handleExternal(task, started, cpu0);
    if (task.model.kind === 'custom') {
      // The coordinator refuses such a study at start (this site declared its trainer); a task is refused all the same.
      return this.refuse(task, `model ${task.model.name} is a custom model; this site trains with the built-in trainer only (site.yaml trainer.kind: external trains it)`);
    }
    const model = createModel(task.model);
    const data = this.dataset(task);
    checkModelFits(task.model, data.train.d);
    const decoded = decodeSafetensors(await this.globalModel(task)).weights;
    // This site's own copy of the study's local tensors replaces the global values (tensor-rules.ts).
    const global = startingWeights(decoded, task.tensorRules, this.state.readBytes(task.studyId, LOCAL_TENSORS_FILE));
    const ev = model.evaluate(global, data.test);
    const evalMetrics = metricsOf(ev);
    let placed: { placement: { resourceId: string }; resource: ComputeResource } | undefined;
    let dp: DpTaskPlan | undefined;
    let budget: PrivacyBudget | undefined;
    let usage: UsageReport | undefined;
    let spend: PrivacySpend | undefined;
    if (task.kind === 'fit') {
      if (this.cfg.compute?.mode === 'placed') {
        // No compute of its own: the coordinator places the training in the data's jurisdiction (or refuses, saying why).
        try {
          placed = await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/placement`, {});
        } catch (e) {
          if (e instanceof ApiError && e.status === 409) return this.log(`task ${task.taskId}: not placed: ${e.message}`);
          throw e;
        }
      }
      const refusal = localPolicyRefusal(this.policy, task, { trainExamples: data.train.n, ...(this.cfg.jurisdiction ? { siteJurisdiction: this.cfg.jurisdiction } : {}),
        ...(placed ? { computeJurisdiction: placed.resource.jurisdiction } : this.cfg.jurisdiction ? { computeJurisdiction: this.cfg.jurisdiction } : {}) });
      if (refusal) {
        this.log(`task ${task.taskId}: refused under this site's local policy: ${refusal}`);
        await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/refuse`, { reason: `local policy: ${refusal}` });
        this.status.taskEnded(task.taskId, 'refused', `local policy: ${refusal}`);
        return;
      }
      // The agent applies client-level DP and SecAgg+ to the release whoever trained (here, a placed job, an external
      // program); DP-SGD runs inside the training, which a placed job's trainer does not do (its agent does not declare
      // dp-sgd, so the coordinator refuses such a study at start). A DP task that would take this site past its budget
      // for the study is a task error, with the numbers.
      if (task.privacy) {
        dp = dpPlanOf(task, data.train.n);
        if (placed && dp?.mechanism === 'dp-sgd') {
          const why = 'privacy: sample-level DP-SGD runs only in the built-in trainer on the site\'s own machine, not in a placed job';
          this.log(`task ${task.taskId}: refused: ${why}`);
          await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/refuse`, { reason: why });
          this.status.taskEnded(task.taskId, 'refused', why);
          this.privacyRefused.add(task.taskId);
          return;
        }
        budget = this.affordable(task, dp);
        // Charged before training, once per task id (privacy.ts): an attempt killed from here on and run again
        // after a restart releases the same output (its noise seed is the task's) and costs nothing more.
        if (dp && budget) spend = spendAndPersist(this.state, task.studyId, budget, dp, task.taskId);
      }
    }
    let pending: PendingResult;
    if (task.kind === 'evaluate') {
      const meta: ResultMeta = { taskId: task.taskId, numExamples: data.train.n, evalMetrics, evalExamples: data.test.n, durationMs: Date.now() - started };
      usage = this.carryUsage(task, meta, inProcessUsage(this.cred.siteName, cpu0, started));
      pending = { taskId: task.taskId, studyId: task.studyId, contentType: 'application/json', body: new TextEncoder().encode(JSON.stringify(meta)), commit: [] };
    } else {
      const cfg = task.fit!;
      // The shuffle stream carries over across rounds and across agent restarts; it is seeded from the
      // study seed and this site's name, so a run is deterministic for a given seed.
      const saved = this.state.readJson<BatchStreamState>(task.studyId, 'stream.json');
      const stream = saved && saved.batchSize === cfg.batchSize && saved.n === data.train.n ? BatchStream.restore(saved) : BatchStream.create(data.train.n, cfg.batchSize, deriveSeed(task.seed, 'stream', this.cred.siteName));
      const clientStateBytes = this.state.readBytes(task.studyId, 'client-state.safetensors');
      const clientState = clientStateBytes ? decodeSafetensors(clientStateBytes).weights : undefined;
      let out: { weights: Weights; numExamples: number; loss: number; clientState?: Weights };
      let streamState: BatchStreamState;
      if (placed) {
        const c = this.cfg.compute?.mode === 'placed' ? this.cfg.compute : {};
        let run;
        try {
          run = await runPlacedFit(this.cfg, placed.resource, { task, siteName: this.cred.siteName, global, stream: saved, clientState, ...c },
            async (jobId, state) => void (await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/job`, { jobId, state })), this.log);
        } catch (e) {
          if (e instanceof ApiError) throw e;
          // The job could not run (scheduler refused it, it failed, no kubectl…): say why and close the task rather
          // than retrying it on every poll until the round's deadline.
          throw new TaskFailure('placement_failed', `placed training on ${placed.resource.id} (${placed.resource.scheduler}) failed: ${(e as Error).message}`);
        }
        out = run.out;
        streamState = run.out.stream;
        usage = run.usage;
      } else {
        // A test knob (site.yaml testing.fitDelayMs): a deliberately slow site.
        if (this.cfg.testing?.fitDelayMs) await pause(this.cfg.testing.fitDelayMs, this.opts.signal);
        this.log(`task ${task.taskId}: training (${dp ? dp.mechanism : 'fit'}, round ${task.round})`);
        out = dp?.mechanism === 'dp-sgd'
          ? trainPrivately({ model, global, data: data.train, task, plan: dp, seed: taskNoiseSeed(this.state, task.studyId, task.taskId) })
          : fit({ model, weights: global, data: data.train, config: cfg, stream, ...(clientState ? { clientState } : {}), rng: createRng(task.seed, 'dropout', this.cred.siteName, task.round) });
        streamState = stream.state();
      }
      const meta: ResultMeta = {
        taskId: task.taskId,
        numExamples: out.numExamples,
        // DP-SGD's mean loss is undefined when Poisson sampling drew no row at all.
        trainMetrics: Number.isFinite(out.loss) ? { loss: out.loss } : {},
        evalMetrics,
        evalExamples: data.test.n,
        durationMs: Date.now() - started,
      };
      if (spend) meta.privacy = spend;
      usage = this.carryUsage(task, meta, usage ?? inProcessUsage(this.cred.siteName, cpu0, started));
      // Only the aggregated tensors leave the site; local ones are kept once the coordinator holds the result.
      const release = releaseOf(out.weights, global, task.tensorRules);
      const body = this.releaseBody(task, global, release.upload, meta, dp);
      const commit: PendingResult['commit'] = [{ name: 'stream.json', data: JSON.stringify(streamState), encoding: 'utf8' }, ...release.commit];
      if (out.clientState) commit.push({ name: 'client-state.safetensors', data: Buffer.from(encodeSafetensors(out.clientState)).toString('base64'), encoding: 'base64' });
      pending = { taskId: task.taskId, studyId: task.studyId, contentType: 'application/octet-stream', body, commit };
    }
    this.log(`task ${task.taskId}: ${task.kind} done in ${Date.now() - started} ms; uploading`);
    await this.queue(task, pending, usage);
  }

  /**
   * The account of a DP fit task's study at this site, when the task's release fits in it (or was charged already:
   * a retry is free); a release that would take the site past its budget is a task error with the numbers.
   */
  private affordable(task: TaskMessage, dp: DpTaskPlan | undefined): PrivacyBudget | undefined {
    if (!dp) return undefined;
    const budget = loadBudget(this.state, this.cfg, task);
    const over = budgetRefusal(budget, dp, task.taskId);
    if (over) throw new TaskFailure('budget_exhausted', over);
    return budget;
  }

  /**
   * The body of a fit result, the same for every trainer: the aggregated tensors (`upload`) clipped and, in
   * distributed mode, noised for client-level DP with the task's seed (privacy.ts privatiseRelease), then as
   * SecAgg+'s pending Δ (masked stage by stage when sent, secagg.ts) or as plain safetensors.
   */
  private releaseBody(task: TaskMessage, global: Weights, upload: Weights, meta: ResultMeta, dp: DpTaskPlan | undefined): Uint8Array {
    let w = upload;
    if (dp?.mechanism === 'dp-fedavg') {
      const p = privatiseRelease(upload, global, dp, taskNoiseSeed(this.state, task.studyId, task.taskId));
      // The site's own view of how much clipping costs it (the norm never leaves the site).
      this.log(`task ${task.taskId}: client-level DP: update norm ${p.norm.toPrecision(4)} ${p.norm > dp.dp.clipNorm ? 'clipped to' : 'within'} C=${dp.dp.clipNorm}${(dp.dp.mode ?? 'central') === 'distributed' ? `, this site's share of the noise added (σ=${dp.plan.noiseMultiplier.toPrecision(4)})` : ''}`);
      w = p.weights;
    }
    // F16/BF16 transport (refused with SecAgg+ and DP at creation) narrows F32 tensors on the way out only.
    return task.privacy?.secagg ? secaggBody(w, pickWeights(global, Object.keys(w)), meta) : encodeSafetensors(narrowForTransport(w, task.updateDtype), { [RESULT_META_KEY]: JSON.stringify(meta) });
  }

  /**
   * Queues a finished task's result with its usage (both on disk before anything is sent) and uploads it. A fit
   * result is also kept as its round's release (release.ts), for a coordinator that asks for the round again.
   */
  private async queue(task: TaskMessage, pending: PendingResult, usage: UsageReport | undefined): Promise<void> {
    const p = usage ? { ...pending, usage } : pending;
    if (task.kind === 'fit' && pending.contentType === 'application/octet-stream') {
      // Queued by a hard link to the kept release: its bytes written (and fsynced) once, not twice.
      const { body: _body, ...meta } = p;
      this.state.savePendingFile(meta, keepRelease(this.state, task, p));
    } else this.state.savePending(p);
    await this.flushPending();
  }

  /**
   * Puts the task's usage in its result's metadata (`ResultMeta.usage`: recorded with the result, no request of its
   * own, and as durable as the queued result); returns it only when it must still go on its own (POST …/usage): a
   * SecAgg+ result's metadata takes the masked route, which records no usage.
   */
  private carryUsage(task: TaskMessage, meta: ResultMeta, usage: UsageReport): UsageReport | undefined {
    if (task.privacy?.secagg) return usage;
    meta.usage = usage;
    return undefined;
  }

  /** The task's global model: in the task itself when it is small (`TaskMessage.modelInline`), else downloaded. */
  private async globalModel(task: TaskMessage): Promise<Uint8Array> {
    return task.modelInline !== undefined ? new Uint8Array(Buffer.from(task.modelInline, 'base64')) : this.downloadModel(task.modelVersionId);
  }

  /**
   * A fit task for a round this site already answered from the same global model (a coordinator restarted the
   * round, as it does for SecAgg+ after a restart): the kept release goes again, re-masked under SecAgg+. Training
   * again from the batch stream that has moved on would change the model and, under DP, spend twice.
   */
  private async resubmitted(task: TaskMessage): Promise<boolean> {
    const again = releasedFor(this.state, task);
    if (!again) return false;
    this.log(`task ${task.taskId}: round ${task.round} was answered already; sending the same update again (no training, no privacy spend)`);
    this.state.savePending(again);
    await this.flushPending();
    return true;
  }

  /** Closes a task this site cannot or will not run, with the reason the study lead sees. */
  private async refuse(task: TaskMessage, reason: string): Promise<void> {
    this.log(`task ${task.taskId}: refused: ${reason}`);
    await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/refuse`, { reason: reason.slice(0, 3900) });
    this.status.taskEnded(task.taskId, 'refused', reason);
  }

  /**
   * A task for the site's own program (external-trainer contract v2): any tensor set, the trainer's own evaluation,
   * its progress lines forwarded to the coordinator. A trainer that crashes, hangs past its timeout, writes NaN or the
   * wrong tensors closes the task with that reason: nothing leaves the site and the round goes on without it.
   */
  private async handleExternal(task: TaskMessage, started: number, cpu0: NodeJS.CpuUsage): Promise<void> {
    let trainer = this.external!;
    let placed: PlacedTrainerRun | undefined;
    let dp: DpTaskPlan | undefined;
    let budget: PrivacyBudget | undefined;
    let spend: PrivacySpend | undefined;
    if (task.kind === 'fit') {
      // No compute of its own: the trainer runs as a job where the coordinator places the task (or nowhere, saying why).
      let where: { resource: ComputeResource } | undefined;
      if (this.cfg.compute?.mode === 'placed') {
        try {
          where = await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/placement`, {});
        } catch (e) {
          if (e instanceof ApiError && e.status === 409) return this.log(`task ${task.taskId}: not placed: ${e.message}`);
          throw e;
        }
      }
      // The trainer reads its file itself; the policy's example floor is checked against the rows that file holds
      // (an extracted source's table as the prepare round wrote it: the hospital's systems are not queried again).
      const src = this.cfg.datasets[task.dataset];
      const trainExamples = src && isExtracted(src) ? readCsv(datasetFile(this.cfg, task.dataset, task.studyId)).rows.length : await declaredCohort(this.cfg, task.dataset, this.log);
      const computeJurisdiction = where?.resource.jurisdiction ?? this.cfg.jurisdiction;
      const refusal = localPolicyRefusal(this.policy, task, { trainExamples, ...(this.cfg.jurisdiction ? { siteJurisdiction: this.cfg.jurisdiction } : {}), ...(computeJurisdiction ? { computeJurisdiction } : {}) });
      if (refusal) return this.refuse(task, `local policy: ${refusal}`);
      // The trainer's own DP-SGD is handed the plan and charged from what it declares (below); client-level DP is
      // charged now, before the program sees the data, as for the built-in trainer.
      dp = task.privacy ? dpPlanOf(task, trainExamples) : undefined;
      budget = this.affordable(task, dp);
      if (dp?.mechanism === 'dp-fedavg' && budget) spend = spendAndPersist(this.state, task.studyId, budget, dp, task.taskId);
      if (where) {
        placed = await placedTrainer(this.cfg, where.resource, task, this.cred.siteName,
          async (jobId, state) => void (await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/job`, { jobId, state })), this.log);
        trainer = externalTrainerOf(this.cfg, placed);
      }
    }
    // A plain fit (no DP, SecAgg+, transport dtype or tensor rules) goes file to file (release-file.ts).
    let downloaded: Uint8Array | undefined;
    const memoryReason = trainer instanceof ExternalTrainer ? inMemoryReason(task) : 'the trainer is given in process';
    if (task.kind === 'fit' && !memoryReason) {
      downloaded = await this.fitByFile(task, trainer as ExternalTrainer, started, cpu0, placed);
      if (!downloaded) return;
    } else if (task.kind === 'fit') this.log(`task ${task.taskId}: release path: memory (${memoryReason})`);
    // Viewed in the downloaded bytes, not copied: the external trainer and the release only read the global model.
    const bytes = downloaded ?? await this.globalModel(task);
    const decoded = viewTensors(bytes, readSafetensorsHeader(bytes));
    const global = startingWeights(decoded, task.tensorRules, this.state.readBytes(task.studyId, LOCAL_TENSORS_FILE));
    const progress = this.progressSender(task);
    const seed = dp ? taskNoiseSeed(this.state, task.studyId, task.taskId) : undefined;
    const input = {
      task, global, siteName: this.cred.siteName, ...(this.opts.signal ? { signal: this.opts.signal } : {}), progress: progress.report,
      ...(dp?.mechanism === 'dp-sgd' ? { dpSgd: dpSgdPlanOf(dp, seed!) } : {}),
    };
    let pending: PendingResult;
    let gpuSeconds = 0;
    let usage: UsageReport | undefined;
    try {
      if (task.kind === 'evaluate') {
        const ev = await trainer.evaluate(input);
        gpuSeconds = ev.gpuSeconds ?? 0;
        const meta: ResultMeta = { taskId: task.taskId, numExamples: ev.examples, evalMetrics: ev.metrics, evalExamples: ev.examples, durationMs: Date.now() - started };
        usage = this.carryUsage(task, meta, placed?.usage() ?? { ...inProcessUsage(this.cred.siteName, cpu0, started), gpuSeconds });
        pending = { taskId: task.taskId, studyId: task.studyId, contentType: 'application/json', body: new TextEncoder().encode(JSON.stringify(meta)), commit: [] };
      } else {
        const out = await trainer.fit(input);
        gpuSeconds = out.gpuSeconds ?? 0;
        if (dp?.mechanism === 'dp-sgd' && budget) {
          // The accountant charges what the trainer declares it did (external.ts has checked it is no less private
          // than the plan), once per task id, before anything leaves the site.
          if (!out.dpSgd) throw new TaskFailure('trainer_failed', `${trainer.description} declared no DP-SGD for a task that asked for it`);
          const did = declaredPlan(dp, out.dpSgd);
          const over = declaredRefusal(budget, dp, did, task.taskId);
          if (over) throw new TaskFailure('budget_exhausted', over);
          spend = spendAndPersist(this.state, task.studyId, budget, did, task.taskId);
        }
        const meta: ResultMeta = { taskId: task.taskId, numExamples: out.numExamples, trainMetrics: out.trainMetrics, ...(out.evalMetrics ? { evalMetrics: out.evalMetrics, evalExamples: out.evalExamples! } : {}), durationMs: Date.now() - started };
        if (spend) meta.privacy = spend;
        usage = this.carryUsage(task, meta, placed?.usage() ?? { ...inProcessUsage(this.cred.siteName, cpu0, started), gpuSeconds });
        pending = { taskId: task.taskId, studyId: task.studyId, contentType: 'application/octet-stream', body: this.releaseBody(task, global, out.weights, meta, dp), commit: out.commit };
      }
    } catch (e) {
      throw trainerFailure(e, trainer);
    } finally {
      progress.close();
    }
    this.log(`task ${task.taskId}: ${task.kind} done by ${trainer.description} in ${Date.now() - started} ms; uploading`);
    // A placed job's usage is the scheduler's accounting; on this machine, GPU time is what the trainer says it used.
    await this.queue(task, pending, usage);
  }

  /**
   * A plain fit file to file: the global model is downloaded to a file (streamed, verified; written there from the task when inline) that is the trainer's
   * input; the trainer's output is checked and written as the release a slice at a time (release-file.ts), kept as
   * the round's release and queued by hard link, then uploaded in chunks from that file. No tensor is held in memory.
   * Returns the model's bytes instead when it has tensors other than F32 (the in-memory path then takes them).
   */
  private async fitByFile(task: TaskMessage, trainer: ExternalTrainer, started: number, cpu0: NodeJS.CpuUsage, placed: PlacedTrainerRun | undefined): Promise<Uint8Array | undefined> {
    const model = this.state.modelFile(task.modelVersionId);
    // A small model comes in the task itself: written to the file a download would have made.
    if (task.modelInline !== undefined) writeAtomic(model, Buffer.from(task.modelInline, 'base64'));
    else await this.http.download(`/v1/agent/models/${encodeURIComponent(task.modelVersionId)}`, model);
    let staging: string | undefined;
    try {
      const layout = headerLayout(fileHeader(model));
      if (!allF32(layout)) {
        this.log(`task ${task.taskId}: release path: memory (the model has tensors other than F32)`);
        const b = readFileSync(model);
        return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      }
      this.log(`task ${task.taskId}: release path: file (the global model, the trainer's output and the release stay on disk)`);
      staging = releaseStagingFile(this.state, task);
      const progress = this.progressSender(task);
      let usage: UsageReport | undefined, digest = '';
      let out;
      try {
        out = await trainer.fitFile({ task, global: emptyWeights(), siteName: this.cred.siteName, ...(this.opts.signal ? { signal: this.opts.signal } : {}), progress: progress.report }, {
          input: model, layout,
          onOutput: (output, r) => {
            // The same metadata, in the same order, as the in-memory path's (handleExternal), so the bodies are equal.
            const meta: ResultMeta = { taskId: task.taskId, numExamples: r.fit.numExamples, trainMetrics: r.fit.metrics, ...(r.evaluate ? { evalMetrics: r.evaluate.metrics, evalExamples: r.evaluate.numExamples } : {}), durationMs: Date.now() - started };
            usage = this.carryUsage(task, meta, placed?.usage() ?? { ...inProcessUsage(this.cred.siteName, cpu0, started), gpuSeconds: r.gpuSeconds });
            digest = writeReleaseFile(output, layout, { [RESULT_META_KEY]: JSON.stringify(meta) }, staging!).digest;
          },
        });
      } catch (e) {
        throw trainerFailure(e, trainer);
      } finally {
        progress.close();
      }
      this.log(`task ${task.taskId}: ${task.kind} done by ${trainer.description} in ${Date.now() - started} ms; uploading`);
      const p: Omit<PendingResult, 'body'> = { taskId: task.taskId, studyId: task.studyId, contentType: 'application/octet-stream', commit: out.commit, ...(usage ? { usage } : {}) };
      const kept = keepReleaseFile(this.state, task, p, staging, digest);
      staging = undefined;
      this.state.savePendingFile(p, kept);
    } finally {
      rmSync(model, { force: true });
      if (staging) rmSync(staging, { force: true });
    }
    await this.flushPending();
    return undefined;
  }

  /**
   * Forwards a trainer's progress lines: every one to the agent's log, the latest to the coordinator at most once a
   * second (the study lead sees it in `setu study status` and on the event stream). A lost report is not retried.
   */
  private progressSender(task: TaskMessage): { report: (p: TaskProgress) => void; close: () => void } {
    let last = 0, timer: NodeJS.Timeout | undefined, latest: TaskProgress | undefined;
    const send = (): void => {
      timer = undefined;
      last = Date.now();
      this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/progress`, latest).catch((e) => this.log(`task ${task.taskId}: progress not forwarded: ${(e as Error).message}`));
    };
    return {
      report: (p) => {
        this.log(`task ${task.taskId}: progress ${JSON.stringify(p)}`);
        latest = p;
        if (timer) return;
        timer = setTimeout(send, Math.max(0, 1000 - (Date.now() - last)));
        timer.unref();
      },
      // The task is over: its result (or refusal) says the rest.
      close: () => clearTimeout(timer),
    };
  }

  /**
   * The task's CPU/GPU-seconds for the coordinator's ledger, from the pending queue, before its result: the round
   * cannot commit before the result arrives, so the ledger (and a model card written at completion) holds every
   * task's compute. A duplicate report (409) is already recorded; once answered, the usage leaves the queue.
   */
  private async reportUsage(p: QueuedResult): Promise<void> {
    if (!p.usage) return;
    try {
      await this.http.json('POST', `/v1/agent/tasks/${encodeURIComponent(p.taskId)}/usage`, p.usage);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (e.status === 401) throw e;
      if (e.status !== 409) this.log(`task ${p.taskId}: usage not recorded: ${e.message}`);
    }
    const { usage: _sent, ...rest } = p;
    this.state.savePendingMeta(rest);
  }

  /**
   * A model version's bytes, downloaded to a file (resumed with a Range after a dropped connection or a restart,
   * verified against its sha256: http.ts download), read, and the file removed.
   */
  private async downloadModel(versionId: string): Promise<Uint8Array> {
    const file = this.state.modelFile(versionId);
    await this.http.download(`/v1/agent/models/${encodeURIComponent(versionId)}`, file);
    try {
      // readFileSync's Buffer is its own allocation (not the small-buffer pool): used as it is, not copied again.
      const b = readFileSync(file);
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /**
   * How a chunked upload reports: each chunk the coordinator holds is a log line (an operator sees a large upload
   * move; `setu bench big-train` waits for one to kill the agent mid-upload). `testing.chunkDelayMs` (a test knob)
   * waits before each chunk: a slow uplink.
   */
  private chunkedOptions(taskId: string): ChunkedUploadOptions {
    const delay = this.cfg.testing?.chunkDelayMs;
    return {
      log: this.log,
      onProgress: (received, size) => this.log(`task ${taskId}: uploaded ${received} of ${size} bytes`),
      ...(delay ? { onChunk: () => pause(delay, this.opts.signal) } : {}),
    };
  }

  /** Uploads every saved result; commits its local state once the coordinator has answered. */
  private async flushPending(): Promise<void> {
    for (const p of this.state.pending()) {
      await this.reportUsage(p);
      if (isSecAggFile(p)) {
        // Masked through the SecAgg+ stages; 'gone' (the round went on without it) still moves the state on.
        // SETU_SECAGG_INLINE_MASKED_BYTES (internal, for tests): the size above which a masked input goes in chunks.
        const inline = Number(process.env['SETU_SECAGG_INLINE_MASKED_BYTES']);
        await uploadSecAgg(this.http, { ...p, body: this.state.pendingBody(p) }, this.log, process.env['SETU_SECAGG_INLINE_MASKED_BYTES'] && Number.isInteger(inline) && inline >= 0 ? { inlineMaskedBytes: inline } : {});
        for (const c of p.commit) this.state.write(p.studyId, c.name, c.encoding === 'base64' ? new Uint8Array(Buffer.from(c.data, 'base64')) : c.data);
        this.state.clearPending(p.taskId);
        continue;
      }
      try {
        // A large update goes in resumable chunks from the file it is kept in; a small one in one body.
        if (p.contentType === 'application/octet-stream' && p.size > CHUNKED_UPLOAD_BYTES) await uploadInChunks(this.http, p.taskId, p.bodyFile, this.chunkedOptions(p.taskId));
        else await this.http.request('POST', `/v1/agent/tasks/${encodeURIComponent(p.taskId)}/result`, { type: p.contentType, data: this.state.pendingBody(p) });
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        // 401: the request, not the result, was refused (revoked key, clock off by over 5 minutes): keep the
        // result for when that is fixed, and stop.
        if (e.status === 401) throw e;
        // 409: the coordinator already has this result (we crashed after sending) or the round closed
        // without it; either way the state must move on. Other 4xx: the result was refused (logged there).
        this.log(`task ${p.taskId}: coordinator answered ${e.status} ${e.code}: ${e.message}`);
        if (e.status !== 409) {
          this.refusedResults.note(p.taskId, e.message);
          this.state.clearPending(p.taskId);
          continue;
        }
      }
      for (const c of p.commit) this.state.write(p.studyId, c.name, c.encoding === 'base64' ? new Uint8Array(Buffer.from(c.data, 'base64')) : c.data);
      this.state.clearPending(p.taskId);
    }
  }
}

/** A trainer's failure as the task error the study lead sees; an abort (the agent stopping) and other errors pass through. */
function trainerFailure(e: unknown, trainer: { readonly description: string }): unknown {
  if (!(e instanceof ExternalTrainerError) || e.kind === 'aborted') return e;
  return new TaskFailure('trainer_failed', `${trainer.description} failed (${e.kind}): ${e.message}`);
}

/** A queued SecAgg+ result, told from its header only (a plain update's body may be a 1 GB file). */
function isSecAggFile(q: QueuedResult): boolean {
  if (q.contentType !== 'application/octet-stream') return false;
  try {
    return fileHeader(q.bodyFile).metadata[SECAGG_MARK] === '1';
  } catch {
    return false;
  }
}

function metricsOf(m: { loss: number; accuracy?: number; auc?: number; cIndex?: number }): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (k !== 'n' && typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  return out;
}

export type { Weights };
