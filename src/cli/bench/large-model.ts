/**
 * `setu bench large-model`: one round of N sites × a model of P float32 parameters through a real coordinator
 * process (`setu coordinator start`) over HTTP: sites enrolled over the API, every request signed, the study lead's
 * initial weights uploaded, each site downloading the global model and uploading its update, the coordinator
 * aggregating and committing the new version.
 *
 *   setu bench large-model [--params 250000000] [--sites 4] [--tensors 4] [--strategy fedavg] [--dp] [--async] [--store sqlite|postgres] [--pg URL] [--cpu-prof DIR] [--json]
 *
 * `--dp` runs the study under client-level DP-FedAvg with central noise (σ = 1, C = 1: stream-dp.ts, two passes over
 * the updates and a Gaussian draw per value); `--async` as an asynchronous FedBuff study whose one buffer holds every
 * site's update (stream-async-fold.ts); both together, the async fold under DP. Each needs FedAvg.
 * `--strategy` is any of STREAMED_STRATEGIES (FedAvg by default; FedAdam, FedYogi, FedAdagrad, FedAvgM, Krum,
 * MultiKrum…), so each one's figures come from this same harness (Krum with one Byzantine site from 5 sites, none below).
 *
 * Figures, each against a baseline measured in the same run on the same bytes:
 *  - round wall time (the study started → round 1 committed; downloads and uploads each run for all sites at once);
 *  - the coordinator's peak RSS during the round (VmHWM of /proc/<pid>/status of a coordinator restarted on the same
 *    data directory after the setup, so the setup's upload of initial weights is not counted; its peak is shown too),
 *    against the goal 2 × model + 300 MB whatever N, and the resident set sampled per phase of the round;
 *  - aggregation throughput (update bytes over the seconds the coordinator reports in
 *    `setu_aggregation_seconds_total`) against copying the same update bytes in this process (memcpy), and beside it
 *    reading the same bytes from files in the aggregation's slices (the I/O alone, no sums);
 *  - upload throughput (N signed uploads at once: each chunk signed over its digest, streamed to disk and hashed
 *    on the way, the whole update fsynced and its digest and values checked at completion) against N plain HTTP PUTs of the same
 *    bodies at once to a bare node:http server on loopback that discards them (the ratio's baseline), and, beside
 *    it, one that writes each body to a file on the same disk (not fsynced).
 * With a model of at most 64 MiB the new version is downloaded and compared byte for byte with the in-memory
 * aggregate of the same updates (what the test suite runs).
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, UsageError } from '../args.js';
import { RESULT_META_KEY, type StudySpec, type TaskMessage, type TrainerDeclaration } from '../../protocol/api.js';
import { encodeSafetensors } from '../../protocol/safetensors.js';
import { bodySha256Hex, generateSigningKeys, signChunkRequest, signRequest } from '../../protocol/signing.js';
import { mapWeights, tensor, type Weights } from '../../protocol/tensors.js';
import { HttpClient } from '../../site/http.js';
import { adminClient, freePort, startCoordinatorProcess, waitFor } from '../../testing/processes.js';
import { createTempDatabase, PG_BASE } from '../../testing/pg.js';
import { aggregateRound, collect } from '../../coordinator/fit-aggregate.js';
import { strategyNeeds } from '../../learning/strategies/registry.js';
import { hostStrategy, STREAMED_STRATEGIES, type HostedStrategy } from '../../coordinator/strategy-host.js';
import { DEFAULT_SLICE_BYTES, bytesSource } from '../../coordinator/stream-aggregate.js';
import { asyncTaskId } from '../../coordinator/async-rounds.js';

export interface LargeModelOptions {
  params: number;
  sites: number;
  tensors: number;
  /** The study's strategy (one of STREAMED_STRATEGIES; default FedAvg). */
  strategy?: string;
  store: 'sqlite' | 'postgres';
  pg?: string;
  /** Client-level DP-FedAvg with central noise (σ = 1, C = 1). */
  dp?: boolean;
  /** An asynchronous (FedBuff) study, one buffer of every site's update. */
  async?: boolean;
  /** A directory for the round's coordinator's CPU profile (node --cpu-prof): where an upload's time goes. */
  cpuProf?: string;
  log?: (s: string) => void;
}

export interface LargeModelResult {
  strategy: string;
  dp: boolean;
  async: boolean;
  params: number;
  sites: number;
  store: 'sqlite' | 'postgres';
  modelBytes: number;
  updateBytes: number;
  loadAverage: number[];
  roundMs: number;
  downloadMs: number;
  uploadMs: number;
  /** What the coordinator reports for computing the new version, and by which path (streamed or in_memory). */
  aggregateMs: number;
  aggregatePath: string;
  /** How the updates went up: the chunked upload routes, or one POST each. */
  uploadPath: string;
  peakRssBytes: number;
  /** Largest sampled resident set per phase of the round (start, downloads, uploads, commit). */
  rssPeaks: Record<string, number>;
  setupPeakRssBytes: number;
  rssGoalBytes: number;
  memcpyBytesPerS: number;
  aggregateBytesPerS: number;
  aggregateRatio: number;
  /** Reading the same update bytes from files in the aggregation's slices, and that against memcpy: the I/O alone. */
  readFilesBytesPerS: number;
  readFilesRatio: number;
  /** N plain PUTs at once to a bare server that discards the bodies (the ratio's baseline). */
  plainPutBytesPerS: number;
  /** The same PUTs to a bare server that writes each body to a file on the data directory's disk (no fsync). */
  plainPutFileBytesPerS: number;
  uploadBytesPerS: number;
  /**
   * CPU seconds of the uploads (less sensitive to a loaded machine than their wall time): the coordinator's, the
   * sites' (this process: signing and sending), and the plain PUTs' (client and bare server, both in this process).
   */
  uploadCpuS: number;
  uploadClientCpuS: number;
  plainPutCpuS: number;
  uploadRatio: number;
  uploadFileRatio: number;
  /** Whether the committed version equals the in-memory aggregate byte for byte (checked up to 64 MiB). */
  verified: boolean | 'skipped';
}

const MB = 1e6;
/** The --dp study's client-level DP: σ = 1 on a clip norm of 1, within a budget of (8, 1e-5). */
const BENCH_DP = { epsilon: 8, delta: 1e-5, clipNorm: 1, noiseMultiplier: 1 } as const;
const VERIFY_MAX_BYTES = 64 * 1024 * 1024;
const EXTERNAL: TrainerDeclaration = { kind: 'external', description: 'bench (uploads prepared updates)', models: ['custom'], features: ['evaluate'] };

interface Signer {
  keyId: string;
  privateKey: string;
}

/**
 * One signed request over its own connection; a download is counted and discarded, never kept. `chunk`: signed as
 * the agent signs an upload's chunk (over its digest in x-setu-chunk-sha256, site/upload.ts).
 */
function send(base: string, method: string, path: string, signer: Signer | undefined, body?: Uint8Array, o: { discard?: boolean; type?: string; chunk?: boolean } = {}): Promise<{ status: number; body: Buffer; bytes: number }> {
  const signing = signer && { method, path, keyId: signer.keyId, privateKey: signer.privateKey };
  const headers: Record<string, string> = !signing ? {} : o.chunk && body ? { ...signChunkRequest({ ...signing, chunkSha256: bodySha256Hex(body) }) } : { ...signRequest({ ...signing, body }) };
  if (body) Object.assign(headers, { 'content-type': o.type ?? 'application/octet-stream', 'content-length': String(body.length) });
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (!o.discard) parts.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : undefined);
  });
}

async function ok(r: Promise<{ status: number; body: Buffer; bytes: number }>, what: string) {
  const x = await r;
  if (x.status < 200 || x.status >= 300) throw new Error(`${what}: HTTP ${x.status} ${x.body.toString().slice(0, 500)}`);
  return x;
}

/**
 * One site's update: through the chunked, resumable upload routes (announce size and digest, PUT each chunk at its
 * offset, complete) where the coordinator has them, else in one POST of the result.
 */
async function uploadUpdate(base: string, signer: Signer, taskId: string, body: Uint8Array, digest: string): Promise<'chunked' | 'single'> {
  const task = encodeURIComponent(taskId);
  const announced = await send(base, 'POST', `/v1/agent/tasks/${task}/uploads`, signer, new TextEncoder().encode(JSON.stringify({ size: body.length, digest })), { type: 'application/json' });
  if (announced.status === 404) {
    await ok(send(base, 'POST', `/v1/agent/tasks/${task}/result`, signer, body), `the upload of ${taskId}`);
    return 'single';
  }
  if (announced.status !== 200) throw new Error(`announcing the upload of ${taskId}: HTTP ${announced.status} ${announced.body.toString().slice(0, 500)}`);
  const up = JSON.parse(announced.body.toString()) as { uploadId: string; received: number; chunkBytes: number };
  for (let at = up.received; at < body.length; at += up.chunkBytes) {
    await ok(send(base, 'PUT', `/v1/agent/uploads/${up.uploadId}?offset=${at}`, signer, body.subarray(at, Math.min(body.length, at + up.chunkBytes)), { chunk: true }), `chunk ${at} of ${taskId}`);
  }
  await ok(send(base, 'POST', `/v1/agent/uploads/${up.uploadId}/complete`, signer), `completing the upload of ${taskId}`);
  return 'chunked';
}

/** A model of `params` float32 values in `tensors` tensors, filled from `seed` (a cheap generator: the values do not matter, their bytes do). */
function fillModel(w: Weights, seed: number): void {
  let x = (seed * 2654435761) >>> 0 || 1;
  for (const t of Object.values(w)) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      d[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.1;
    }
  }
}

function emptyModel(params: number, tensors: number): Weights {
  const per = Math.floor(params / tensors);
  return mapWeights(Array.from({ length: tensors }, (_, i) => `layer${String(i).padStart(3, '0')}.weight`), (k) => {
    const i = Number(k.slice(5, 8));
    return tensor([i === tensors - 1 ? params - per * (tensors - 1) : per]);
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
/** Linux's USER_HZ (what /proc/<pid>/stat counts in): 100 on every architecture Node runs on. */
const CLOCK_TICKS = 100;

/** VmHWM (peak resident set) of a process, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * The coordinator's resident set sampled every 50 ms, the largest per phase of the round (downloads, uploads, the
 * commit): where a peak comes from, which VmHWM alone cannot say.
 */
function rssByPhase(pid: number) {
  const peaks: Record<string, number> = {};
  let phase = 'start';
  const sample = () => {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      return; // the coordinator exited (a failed round): the error that ended it is reported, not this
    }
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    if (m) peaks[phase] = Math.max(peaks[phase] ?? 0, Number(m[1]) * 1024);
  };
  const timer = setInterval(sample, 50);
  return {
    phase(p: string) {
      sample();
      phase = p;
    },
    stop(): Record<string, number> {
      sample();
      clearInterval(timer);
      return peaks;
    },
  };
}

/** A Prometheus counter's value from the coordinator's /metrics text. */
function counter(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

/**
 * N plain PUTs of `bodies` at once to a bare node:http server on loopback: the upload baselines. With no `dir` it
 * discards what it reads (the transport alone: the ratio's baseline); with one it writes each body to its own file
 * there (same disk as the coordinator's data; written, not fsynced) and answers once the file is closed.
 */
async function plainPuts(bodies: Uint8Array[], dir?: string): Promise<number> {
  let n = 0;
  const server = http.createServer((req, res) => {
    if (!dir) {
      req.on('data', () => {});
      req.on('end', () => res.end('{}'));
      return;
    }
    const file = join(dir, `plain-put-${n++}`);
    const out = createWriteStream(file);
    req.pipe(out);
    out.on('close', () => {
      rmSync(file, { force: true });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    const t0 = performance.now();
    await Promise.all(bodies.map((b) => ok(send(`http://127.0.0.1:${port}`, 'PUT', '/upload', undefined, b), 'plain PUT')));
    return performance.now() - t0;
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

/** Copying every update's bytes once into one model-sized buffer: the aggregation baseline (best of 3). */
function memcpyMs(bodies: Uint8Array[], modelBytes: number): number {
  const target = Buffer.allocUnsafe(modelBytes);
  let best = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    for (const b of bodies) target.set(b.subarray(b.length - modelBytes));
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/**
 * Reading every update's bytes from a file, all the files side by side in the aggregation's slices (DEFAULT_SLICE_BYTES,
 * one slice of each file at a time, into buffers reused): what the streamed aggregation must read before it sums,
 * best of 3. The files are written here, on the coordinator's disk, and read back from the page cache as the
 * coordinator's just-uploaded updates are.
 */
async function readFilesMs(bodies: Uint8Array[], dir: string): Promise<number> {
  const files = bodies.map((b, k) => {
    const f = join(dir, `read-yardstick-${k}`);
    writeFileSync(f, b);
    return f;
  });
  try {
    let best = Infinity;
    for (let rep = 0; rep < 3; rep++) {
      const fhs = await Promise.all(files.map((f) => open(f)));
      const bufs = fhs.map(() => new Uint8Array(DEFAULT_SLICE_BYTES));
      const size = bodies[0]!.length;
      const t0 = performance.now();
      for (let at = 0; at < size; at += DEFAULT_SLICE_BYTES) await Promise.all(fhs.map((fh, k) => fh.read(bufs[k]!, 0, Math.min(DEFAULT_SLICE_BYTES, size - at), at)));
      best = Math.min(best, performance.now() - t0);
      await Promise.all(fhs.map((fh) => fh.close()));
    }
    return best;
  } finally {
    for (const f of files) rmSync(f, { force: true });
  }
}

/** The study's strategy block: the name, and for Krum and Multi-Krum the Byzantine sites the round can tolerate. */
function benchStrategy(o: LargeModelOptions): StudySpec['strategy'] {
  if ((o.dp || o.async) && (o.strategy ?? 'FedAvg').toLowerCase() !== 'fedavg') throw new UsageError(`--${o.dp ? 'dp' : 'async'} runs FedAvg (client-level DP-FedAvg and FedBuff replace its mean), got --strategy ${o.strategy}`);
  // The bench's sites upload prepared updates: no proximal term or control variates (FedProx, SCAFFOLD) to declare.
  // Cyclic asks one site a round; the harness runs every site's upload at once.
  const names = STREAMED_STRATEGIES.filter((n) => strategyNeeds(n).length === 0 && n !== 'Cyclic');
  const name = names.find((n) => n.toLowerCase() === (o.strategy ?? 'FedAvg').toLowerCase());
  if (!name) throw new UsageError(`--strategy must be one of ${names.join(', ')} (the strategies that stream at any size, train every site and need nothing of a trainer), got "${o.strategy}"`);
  if (name !== 'Krum' && name !== 'MultiKrum') return { name };
  if (o.sites < 3) throw new UsageError(`--strategy ${name} needs at least 3 sites, got ${o.sites}`);
  return { name, params: { byzantine: o.sites >= 5 ? 1 : 0 } };
}

export async function runLargeModelBench(o: LargeModelOptions): Promise<LargeModelResult> {
  const log = o.log ?? (() => {});
  const modelBytes = o.params * 4;
  const dataDir = mkdtempSync(join(tmpdir(), 'setu-bench-large-'));
  const pgDb = o.store === 'postgres' ? await createTempDatabase(o.pg ?? PG_BASE) : undefined;
  let child: ChildProcess | undefined;
  try {
    // Room for one update per request and every site's update in flight and in the round.
    const bodyLimit = modelBytes + 1024 * 1024;
    const port = await freePort();
    const start = (nodeArgs: string[] = []) => startCoordinatorProcess(dataDir, port, join(dataDir, 'coordinator.log'), {
      ...(pgDb ? { db: pgDb.url } : {}),
      nodeArgs,
      args: ['--log-level', 'warn', '--body-limit', String(bodyLimit), '--max-upload-bytes', String(o.sites * bodyLimit), '--max-round-bytes', String(o.sites * bodyLimit)],
    });
    child = await start();
    const url = `http://127.0.0.1:${port}`;
    const admin = adminClient(dataDir, url);
    const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name: 'bench-lead', role: 'study_lead', ttlHours: 1 });
    const leadKeys = generateSigningKeys();
    await new HttpClient({ baseUrl: url, giveUpAfterMs: 20_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: leadKeys.publicKeyRaw });
    const lead = { keyId: inv.userId, privateKey: leadKeys.privateKeyPem };
    const leadClient = new HttpClient({ baseUrl: url, signer: lead, giveUpAfterMs: 60_000 });
    const sites: { id: string; signer: Signer }[] = [];
    for (let k = 0; k < o.sites; k++) {
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: `bench-site-${k}` });
      const keys = generateSigningKeys();
      const e = await new HttpClient({ baseUrl: url, giveUpAfterMs: 20_000 }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: keys.publicKeyRaw, cohorts: { bench: 1000 } });
      const signer = { keyId: e.siteId, privateKey: keys.privateKeyPem };
      // Under --dp the sites declare that their agent clips (the bench's prepared updates stand for what it sends).
      await new HttpClient({ baseUrl: url, signer, giveUpAfterMs: 20_000 }).json('PUT', '/v1/agent/trainer', o.dp ? { ...EXTERNAL, features: [...EXTERNAL.features!, 'dp-client'] } : EXTERNAL);
      sites.push({ id: e.siteId, signer });
    }
    const spec = {
      name: 'large-model', dataset: 'bench', model: { kind: 'custom', name: 'bench-net' }, strategy: benchStrategy(o), rounds: 1,
      fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 7200,
      ...(o.dp ? { privacy: { dp: { ...BENCH_DP, level: 'client' } } } : {}),
      ...(o.async ? { async: { bufferSize: o.sites } } : {}),
    } as StudySpec;
    const study = (await leadClient.json<{ id: string }>('POST', '/v1/studies', spec)).id;
    // The model lives in one set of arrays, refilled for the initial weights and each site's update in turn.
    const model = emptyModel(o.params, o.tensors);
    fillModel(model, 0);
    let initial: Uint8Array | undefined = encodeSafetensors(model);
    log(`setup: ${o.sites} sites enrolled, study ${study}; uploading the ${(modelBytes / MB).toFixed(1)} MB initial weights`);
    await ok(send(url, 'PUT', `/v1/studies/${study}/initial-weights`, lead, initial), 'initial weights');
    const globalBytes = modelBytes <= VERIFY_MAX_BYTES ? initial : undefined;
    initial = undefined;
    const setupPeakRssBytes = peakRss(child.pid!);
    // The round runs in a fresh coordinator process on the same data directory (everything above is in its store),
    // so its peak RSS is the round's, not the setup's garbage from decoding the initial weights.
    await stop(child);
    child = await start(o.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', o.cpuProf] : []);
    const pid = child.pid!;
    const bodies: Uint8Array[] = [];
    for (const [k, s] of sites.entries()) {
      fillModel(model, k + 1);
      const taskId = o.async ? asyncTaskId(study, s.id, 0) : `${study}.r1.${s.id}`;
      // Under DP each result reports its site's spend, as an agent's does (one DP-FedAvg release).
      const privacy = o.dp ? { privacy: { mechanism: 'dp-fedavg', sampleRate: 1, noiseMultiplier: BENCH_DP.noiseMultiplier, steps: 1, epsilon: 1, delta: BENCH_DP.delta, budgetEpsilon: BENCH_DP.epsilon, budgetDelta: BENCH_DP.delta } } : {};
      bodies.push(encodeSafetensors(model, { [RESULT_META_KEY]: JSON.stringify({ taskId, numExamples: 100 + k, trainMetrics: { loss: 1 }, ...privacy }) }));
    }
    const updateBytes = bodies[0]!.length;
    const digests = bodies.map((b) => createHash('sha256').update(b).digest('hex'));
    const copyMs = memcpyMs(bodies, modelBytes);
    const plain0 = process.cpuUsage();
    const putMs = await plainPuts(bodies);
    const plainCpu = process.cpuUsage(plain0);
    const plainPutCpuS = (plainCpu.user + plainCpu.system) / 1e6;
    const putFileMs = await plainPuts(bodies, dataDir);
    const readMs = await readFilesMs(bodies, dataDir);
    log(`baselines: memcpy ${(o.sites * modelBytes / MB / (copyMs / 1000)).toFixed(0)} MB/s, reading the updates' files ${(o.sites * updateBytes / MB / (readMs / 1000)).toFixed(0)} MB/s, plain PUT ${(o.sites * updateBytes / MB / (putMs / 1000)).toFixed(0)} MB/s, to files ${(o.sites * updateBytes / MB / (putFileMs / 1000)).toFixed(0)} MB/s`);
    const before = (await ok(send(url, 'GET', '/metrics', undefined), 'metrics')).body.toString();

    const rss = rssByPhase(pid);
    const t0 = performance.now();
    await leadClient.json('POST', `/v1/studies/${study}/start`, {});
    const tasks = await Promise.all(sites.map((s) => waitFor(`${s.id}'s fit task`, async () => {
      const r = await ok(send(url, 'GET', '/v1/agent/task?waitMs=5000', s.signer), 'task poll');
      if (r.status !== 200) return undefined;
      const t = JSON.parse(r.body.toString()) as TaskMessage;
      return t.studyId === study && t.kind === 'fit' ? t : undefined;
    }, 120_000, 10)));
    const d0 = performance.now();
    rss.phase('downloads');
    await Promise.all(sites.map((s, k) => ok(send(url, 'GET', `/v1/agent/models/${encodeURIComponent(tasks[k]!.modelVersionId)}`, s.signer, undefined, { discard: true }), 'model download')));
    const u0 = performance.now();
    rss.phase('uploads');
    const [cpu0, own0] = [cpuSeconds(pid), process.cpuUsage()];
    const uploadPaths = await Promise.all(sites.map((s, k) => uploadUpdate(url, s.signer, tasks[k]!.taskId, bodies[k]!, digests[k]!)));
    const u1 = performance.now();
    const uploadCpuS = cpuSeconds(pid) - cpu0;
    const own = process.cpuUsage(own0);
    const uploadClientCpuS = (own.user + own.system) / 1e6;
    log(`round: downloads ${((u0 - d0) / 1000).toFixed(1)} s, uploads ${((u1 - u0) / 1000).toFixed(1)} s; waiting for the commit`);
    rss.phase('commit');
    await waitFor('round 1 committed', async () => {
      const d = await leadClient.json<{ status: string; error: string | null; rounds: { round: number; status: string }[] }>('GET', `/v1/studies/${study}`);
      if (d.status === 'failed') throw new Error(`the study failed: ${d.error}`);
      return d.rounds.some((r) => r.round === 1 && r.status === 'committed') ? true : undefined;
    }, 3_600_000, 50);
    const roundMs = performance.now() - t0;
    const peakRssBytes = peakRss(pid);
    const rssPeaks = rss.stop();
    const after = (await ok(send(url, 'GET', '/metrics', undefined), 'metrics')).body.toString();
    const path = ['streamed', 'in_memory'].find((p) => counter(after, 'setu_aggregation_seconds_total', `path="${p}"`) > counter(before, 'setu_aggregation_seconds_total', `path="${p}"`)) ?? 'none';
    const aggregateMs = 1000 * (counter(after, 'setu_aggregation_seconds_total', `path="${path}"`) - counter(before, 'setu_aggregation_seconds_total', `path="${path}"`));
    const aggregatedBytes = counter(after, 'setu_aggregation_update_bytes_total', `path="${path}"`) - counter(before, 'setu_aggregation_update_bytes_total', `path="${path}"`);

    let verified: boolean | 'skipped' = 'skipped';
    // The DP noise is drawn fresh, and the async fold's equality with foldBuffer is the test suite's (stream-dp.test.ts).
    if (globalBytes && !o.dp && !o.async) {
      const got = (await ok(send(url, 'GET', `/v1/studies/${study}/model`, lead), 'model download')).body;
      const { elementwise: _streams, serverStep: _step, robustSelection: _krum, ...inMemoryHost } = hostStrategy(spec);
      const rows = sites.map((s, k) => ({ row: { task_id: tasks[k]!.taskId, study_id: study, round: 1, site_id: s.id, digest: null, size: bodies[k]!.length, num_examples: 100 + k, metrics: '{}', received_at: 0 }, source: bytesSource(bodies[k]!) }));
      const want = await collect(aggregateRound({ spec, host: inMemoryHost as HostedStrategy, round: 1, global: bytesSource(globalBytes), updates: rows, asked: o.sites, metadata: { study, round: '1' } }));
      verified = Buffer.from(want).equals(got);
    }
    const memcpyBytesPerS = (o.sites * modelBytes) / (copyMs / 1000);
    const aggregateBytesPerS = aggregatedBytes / (aggregateMs / 1000);
    const plainPutBytesPerS = (o.sites * updateBytes) / (putMs / 1000);
    const plainPutFileBytesPerS = (o.sites * updateBytes) / (putFileMs / 1000);
    const uploadBytesPerS = (o.sites * updateBytes) / ((u1 - u0) / 1000);
    return {
      strategy: spec.strategy.name, dp: !!o.dp, async: !!o.async, params: o.params, sites: o.sites, store: o.store, modelBytes, updateBytes, loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
      roundMs, downloadMs: u0 - d0, uploadMs: u1 - u0, aggregateMs, aggregatePath: path, uploadPath: [...new Set(uploadPaths)].join('+'),
      peakRssBytes, rssPeaks, setupPeakRssBytes, rssGoalBytes: 2 * modelBytes + 300 * MB,
      memcpyBytesPerS, aggregateBytesPerS, aggregateRatio: aggregateBytesPerS / memcpyBytesPerS,
      readFilesBytesPerS: (o.sites * updateBytes) / (readMs / 1000), readFilesRatio: (o.sites * updateBytes) / (readMs / 1000) / memcpyBytesPerS,
      uploadCpuS, uploadClientCpuS, plainPutCpuS,
      plainPutBytesPerS, plainPutFileBytesPerS, uploadBytesPerS, uploadRatio: uploadBytesPerS / plainPutBytesPerS, uploadFileRatio: uploadBytesPerS / plainPutFileBytesPerS, verified,
    };
  } finally {
    if (child) await stop(child);
    rmSync(dataDir, { recursive: true, force: true });
    await pgDb?.drop();
  }
}

/** The figures as a table, each with its baseline, ratio and goal. */
export function table(r: LargeModelResult): string {
  const mbs = (x: number) => `${(x / MB).toFixed(0)} MB/s`;
  const mb = (x: number) => `${(x / MB).toFixed(0)} MB`;
  const rows: [string, string, string, string, string][] = [
    ['figure', 'this run', 'baseline (same run)', 'ratio', 'goal'],
    ['round wall time', `${(r.roundMs / 1000).toFixed(1)} s`, `downloads ${(r.downloadMs / 1000).toFixed(1)} s, uploads ${(r.uploadMs / 1000).toFixed(1)} s`, '', ''],
    ['coordinator peak RSS (round)', mb(r.peakRssBytes), `2 × model + 300 MB = ${mb(r.rssGoalBytes)}`, (r.peakRssBytes / r.rssGoalBytes).toFixed(2), '≤ 1'],
    ['  sampled by phase', Object.entries(r.rssPeaks).map(([p, b]) => `${p} ${mb(b)}`).join(', '), '', '', ''],
    ['coordinator peak RSS (setup)', mb(r.setupPeakRssBytes), 'initial weights upload (another process)', '', ''],
    [`aggregation (${r.aggregatePath})`, `${mbs(r.aggregateBytesPerS)} (${(r.aggregateMs / 1000).toFixed(2)} s)`, `memcpy ${mbs(r.memcpyBytesPerS)}`, r.aggregateRatio.toFixed(2), '≥ 0.3'],
    ['', '', `reading the updates' files ${mbs(r.readFilesBytesPerS)} (their bytes only, no sums)`, r.readFilesRatio.toFixed(2), ''],
    [`upload (${r.uploadPath}, signed, all sites at once)`, mbs(r.uploadBytesPerS), `plain HTTP PUT ${mbs(r.plainPutBytesPerS)} (bodies discarded)`, r.uploadRatio.toFixed(2), '≥ 0.8'],
    ['', '', `plain HTTP PUT to files ${mbs(r.plainPutFileBytesPerS)} (written, no fsync)`, r.uploadFileRatio.toFixed(2), ''],
    ['  CPU of the uploads', `coordinator ${r.uploadCpuS.toFixed(2)} s, sites ${r.uploadClientCpuS.toFixed(2)} s`, `plain PUTs (client and server) ${r.plainPutCpuS.toFixed(2)} s`, '', ''],
  ];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
  const head = `large-model: ${r.strategy}${r.dp ? ' under client-level DP (central noise)' : ''}${r.async ? ' (asynchronous, one buffer of every site)' : ''}, ${r.sites} sites × ${r.params.toLocaleString('en')} float32 parameters (${mb(r.modelBytes)} model, ${mb(r.updateBytes)} per update), ${r.store}; load average ${r.loadAverage.join(' ')}; ` +
    `new version ${r.verified === 'skipped' ? (r.dp || r.async ? 'not compared (fresh noise or async fold: the tests compare it)' : 'not compared (over 64 MiB)') : r.verified ? 'equals the in-memory aggregate byte for byte' : 'DIFFERS from the in-memory aggregate'}\n`;
  return head + rows.map((x) => x.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function main(argv: string[]): Promise<number> {
  let o: LargeModelOptions;
  let json = false;
  try {
    const { values: v } = parse(argv, { params: { type: 'string' }, sites: { type: 'string' }, tensors: { type: 'string' }, store: { type: 'string' }, strategy: { type: 'string' }, pg: { type: 'string' }, 'cpu-prof': { type: 'string' }, dp: { type: 'boolean' }, async: { type: 'boolean' }, json: { type: 'boolean' } });
    const int = (s: string | undefined, name: string, d: number, max: number) => {
      if (s === undefined) return d;
      if (!/^[1-9][0-9]*$/.test(s) || Number(s) > max) throw new UsageError(`--${name} must be an integer from 1 to ${max}, got "${s}"`);
      return Number(s);
    };
    const store = v.store ?? 'sqlite';
    if (store !== 'sqlite' && store !== 'postgres') throw new UsageError(`--store must be sqlite or postgres, got "${store}"`);
    o = { params: int(v.params, 'params', 250_000_000, 500_000_000), sites: int(v.sites, 'sites', 4, 64), tensors: int(v.tensors, 'tensors', 4, 10_000), store, ...(v.strategy ? { strategy: v.strategy } : {}), ...(v.pg ? { pg: v.pg } : {}), ...(v['cpu-prof'] ? { cpuProf: v['cpu-prof'] } : {}), ...(v.dp ? { dp: true } : {}), ...(v.async ? { async: true } : {}) };
    if (o.tensors > o.params) throw new UsageError(`--tensors (${o.tensors}) must not exceed --params (${o.params})`);
    benchStrategy(o); // a bad --strategy is a usage error before anything starts
    json = !!v.json;
  } catch (e) {
    process.stderr.write(`setu bench large-model: ${(e as Error).message}\nusage: setu bench large-model [--params 250000000] [--sites 4] [--tensors 4] [--strategy fedavg] [--dp] [--async] [--store sqlite|postgres] [--pg URL] [--cpu-prof DIR] [--json]\n`);
    return 2;
  }
  let r: LargeModelResult;
  try {
    r = await runLargeModelBench({ ...o, log: (s) => process.stderr.write(s + '\n') });
  } catch (e) {
    process.stderr.write(`setu bench large-model: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(json ? JSON.stringify(r) + '\n' : table(r));
  return r.verified === false ? 1 : 0;
}
