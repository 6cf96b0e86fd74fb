/**
 * `npm run chaos -- --quick` as a test: every scenario on a real federation (coordinator and four agents as
 * processes over loopback), a few kills each, checked against uninterrupted runs made here first. Each check of
 * each scenario is its own subtest. A check that fails on main because of a fault someone is fixing (issue #10) is
 * marked `todo` with that check's reason below: it still runs and reports, CI stays green, and the entry is deleted
 * when the fix lands (a todo that passes says so in the test output).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFS, SCENARIOS, runBaseline, runScenario, type Baseline, type BaselineKind, type ChaosOptions, type ScenarioName } from './scenarios.js';
import type { Check } from './checks.js';

const O: ChaosOptions = { seed: 1, quick: true };

/** Checks known to fail on main today, per scenario, with the cause found (see the chaos report of issue #10 §9). */
const USAGE_LOST = 'usage: an agent SIGKILLed after queuing its result (site/agent.ts handle: savePending, then reportUsage, then ' +
  'flushPending) sends the queued result after its restart but never the usage: the round commits with that task\'s compute ' +
  'missing from the ledger (#10 "compute usage of a task whose agent was killed after queuing its result is lost")';
const BACKOFF = 'the engine now gives a restarted round back its downtime, but only the time it had left (about one deadline when ' +
  'killed just after opening), while each agent\'s reconnect backoff has grown during the outage (site/http.ts: 250 ms · 2^attempt, ' +
  'capped at 15 s, × 0.5–1): after a 13 s outage a site may first retry up to 15 s after the restart, past the round\'s ' +
  '12 s, and the study fails "round N: 3 of 4 sites reported before the deadline; hospital-k did not answer" (seen in a full run)';
const SECAGG_RESTART = 'a restarted coordinator has no SecAgg+ session (in memory only) and restarts the open round with fresh keys; a site ' +
  'that had answered every stage has already committed its batch stream and cleared its result, so it trains again from the ' +
  'advanced stream and the round\'s model differs from the uninterrupted run\'s (#10 "a restarted SecAgg+ round is not the same round")';
const DP_SECAGG = 'an agent SIGKILLed after queuing a SecAgg+ result restarts after the keys stage closed: 409 secagg_late, it drops the ' +
  'result as "gone", but the task stays open and is delivered again; the agent trains and charges ε again, every poll, until its ' +
  'budget refuses, and the round fails "SecAgg+ summed 3 of 4 sites" (#10 "a crash at a site costs privacy budget twice"; site and engine fixes pending)';

const KNOWN: Partial<Record<ScenarioName, Partial<Record<Check['name'], string>>>> = {
  'coordinator-kills-secagg': { digest: SECAGG_RESTART },
  'agent-kills': { usage: USAGE_LOST },
  'agent-kills-dp': { usage: USAGE_LOST },
  'coordinator-down': { completed: BACKOFF, digest: `${BACKOFF}; the rounds after it have no model` },
  'agent-kills-dp-secagg': {
    completed: DP_SECAGG,
    privacy: DP_SECAGG,
    // The study fails at the round where the budget ran out, so the planned kills may not all happen.
    chaos: `${DP_SECAGG}; the study ends early, before every planned kill`,
    usage: USAGE_LOST,
  },
};

test('chaos --quick: every scenario on a real federation', { timeout: 15 * 60_000 }, async (t) => {
  const baselines = new Map<BaselineKind, Baseline>();
  for (const name of SCENARIOS) {
    await t.test(name, async (st) => {
      const kind = DEFS[name].baseline;
      if (kind && !baselines.has(kind)) baselines.set(kind, await runBaseline(O, kind));
      const res = await runScenario(O, name, kind ? baselines.get(kind) : undefined);
      for (const c of res.checks) {
        const todo = KNOWN[name]?.[c.name];
        await st.test(c.name, todo ? { todo } : {}, () => {
          assert.notEqual(c.ok, false, c.detail);
        });
      }
    });
  }
});
