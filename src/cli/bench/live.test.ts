/**
 * `setu bench live` at a small N, so the load harness runs in CI: a real coordinator process, 20 real agents in two
 * worker processes (enrolled with invites, every request signed), two fit rounds of prepared updates. No timing
 * threshold (a loaded 2-core machine would make one flaky): what must hold is that every answer was 2xx, that each
 * round's figures were read, and that each committed model is the exact weighted mean of the prepared updates.
 */
import { it } from 'node:test';
import { existsSync, readdirSync } from 'node:fs';
import assert from 'node:assert/strict';
import { main, modelOf, runLiveBench, table } from './live.js';
import { PG_BASE } from '../../testing/pg.js';

it('20 live sites, 2 fit rounds on SQLite: every answer 2xx, each commit the exact FedAvg of the prepared updates', { timeout: 5 * 60_000 }, async (t) => {
  const before = existsSync('/dev/shm') ? readdirSync('/dev/shm') : [];
  const r = await runLiveBench({ sites: 20, procs: 2, coordinators: 1, store: 'sqlite', pg: PG_BASE, model: 'logistic', rounds: 2, prepared: true, agentState: 'memory', timeoutS: 240 });
  // The agents' state on tmpfs where the machine has one, and gone after the run.
  assert.equal(r.agentState, existsSync('/dev/shm') ? 'memory' : 'disk');
  if (r.agentState === 'memory') assert.deepEqual(readdirSync('/dev/shm').filter((f) => f.startsWith('setu-bench-live-agents-')).filter((f) => !before.includes(f)), []);
  for (const line of table(r).trimEnd().split('\n')) t.diagnostic(line);
  assert.deepEqual(r.rounds.map((f) => [f.round, f.kind]), [[1, 'fit'], [2, 'fit'], [3, 'evaluate']]);
  for (const f of r.rounds) {
    assert.deepEqual(f.errors, {}, `round ${f.round}: answers that were not 2xx`);
    assert.ok(f.requests > 0, `round ${f.round}: no requests counted`);
    assert.ok(f.statements > 0 && f.cpuS > 0 && f.peakRssMiB > 0 && f.wallS > 0);
    assert.ok(Number.isFinite(f.loopMaxMs));
    assert.ok(f.intakePerS! > 0, `round ${f.round}: updates accepted per second, from the audit log`);
  }
  // Each site at least takes its task and uploads its result every round: a tiny model comes inline in the task and
  // the usage inside the result, so no download and no usage request (a round's figures are read when the harness
  // sees its commit, so a request near the boundary may count in the next one: summed here).
  const requests = r.rounds.reduce((a, f) => a + f.requests, 0);
  assert.ok(requests >= 2 * 20 * 3, `${requests} requests in 3 rounds of 20 sites`);
  const all = new Map<string, number>();
  for (const f of r.rounds) for (const [route, n] of f.topRequests) all.set(route, (all.get(route) ?? 0) + n);
  assert.equal(all.get('POST /v1/agent/tasks/:id/result'), 20 * 3, 'one result per site and round');
  assert.equal(all.get('GET /v1/agent/models/:id'), undefined, 'no model downloads: a 14-parameter model travels in the task');
  assert.equal(all.get('POST /v1/agent/tasks/:id/usage'), undefined, 'no usage requests: the usage travels in the result');
  assert.ok(r.rounds.every((f) => f.requestsPerSite === f.requests / 20 && f.statementsPerSite === f.statements / 20));
  for (const f of r.rounds.filter((x) => x.kind === 'fit')) assert.equal(f.exact, true, `round ${f.round}: ${f.maxUlp} ulp from the weighted mean`);
  assert.ok(r.yardsticks.postPerS > 0 && r.yardsticks.memcpyGBps > 0 && r.yardsticks.sha256GBps > 0);
});

it('an MLP of about P parameters; bad options are a usage error (exit 2) naming the flag', async () => {
  const m = modelOf({ model: 'mlp', params: 1_000_000 });
  assert.equal(m.kind === 'mlp' && (m.inputDim + 2) * m.hidden[0]! + 1, 1_000_006);
  const err = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((c: string) => ((said += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--sites', 'many']), 2);
    assert.equal(await main(['--store', 'oracle']), 2);
    assert.equal(await main(['--params', '100']), 2);
    assert.equal(await main(['--agent-state', 'ssd']), 2);
    assert.equal(await main(['--coordinators', '2']), 1);
  } finally {
    process.stderr.write = err;
  }
  assert.match(said, /--sites must be a whole number from 1 to 100000, got "many"/);
  assert.match(said, /--store must be sqlite or postgres, got "oracle"/);
  assert.match(said, /--params sizes the mlp/);
  assert.match(said, /--agent-state must be memory or disk, got "ssd"/);
  assert.match(said, /--coordinators above 1 needs --store postgres/);
});
