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

/**
 * Checks known to fail on main, per scenario, with the cause found; each entry is a `todo` until its fix lands.
 * Empty: the faults the first run found (usage lost after a kill, a second ε charge under SecAgg+, a restarted
 * SecAgg+ round training again, sites reconnecting after a restarted round's deadline) are fixed and pass here.
 */
const KNOWN: Partial<Record<ScenarioName, Partial<Record<Check['name'], string>>>> = {};

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
