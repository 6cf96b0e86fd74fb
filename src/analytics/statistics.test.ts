/**
 * The statistics queries over the four Fed-Heart-Disease hospitals equal the same statistics of the
 * pooled rows computed by pandas/numpy (/usr/bin/python3) in this test: counts, cross-tabulations,
 * means/variances/SDs, histograms, missingness, and quantiles read off the federated histogram.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultHeartDir } from '../site/data/heart.js';
import { parseKeyed, pythonSkipReason, runPython } from '../testing/oracles.js';
import { runQuery } from './query.js';
import type { CountResult, HistogramResult, MissingnessResult, QuantilesResult, SummaryResult } from './statistics.js';
import { HEART_COLUMNS, HEART_STATS_SCHEMA, heartTables, relClose, siteInputs } from './testing.js';

const skip = pythonSkipReason(['numpy', 'pandas']);
const dir = defaultHeartDir();

const PY = `
import numpy as np, pandas as pd
cols = ${JSON.stringify(HEART_COLUMNS)}
d = pd.concat([pd.read_csv(f"${dir}/processed.{c}.data", header=None, names=cols, na_values="?") for c in ["cleveland", "hungarian", "switzerland", "va"]])
def p(k, v): print(k, " ".join(repr(float(x)) for x in np.atleast_1d(v)))
def eq(col, lv): return d[col].isna() if lv is None else d[col] == lv
lv = {"sex": [0, 1, None], "cp": [1, 2, 3, 4, None], "restecg": [0, 1, 2, None], "fbs": [0, 1, None]}
p("n", len(d))
p("bySex", [eq("sex", a).sum() for a in lv["sex"]])
p("sexCp", [(eq("sex", a) & eq("cp", b)).sum() for a in lv["sex"] for b in lv["cp"]])
p("cpEcgFbs", [(eq("cp", a) & eq("restecg", b) & eq("fbs", c)).sum() for a in lv["cp"] for b in lv["restecg"] for c in lv["fbs"]])
for i, a in enumerate(lv["sex"][:2]):
    x = d.loc[eq("sex", a), "age"].dropna()
    p(f"age.sex{i}", [len(x), x.mean(), x.var(ddof=1), x.std(ddof=1)])
x = d["chol"].dropna()
p("chol", [len(x), x.mean(), x.var(ddof=1), x.std(ddof=1), x.min(), x.max()])
x = d["chol"].to_numpy()
ok = ~np.isnan(x)
edges = np.arange(0, 620 + 1, 20.0)
inside = np.histogram(x[ok & (x >= 0) & (x < 620)], bins=edges)[0]
p("cholHist", [np.sum(ok & (x < 0))] + list(inside) + [np.sum(ok & (x >= 620)), np.sum(~ok)])
p("missing", [d[c].isna().sum() for c in cols[:-1]] + [d["num"].isna().sum()])
a = d["age"].dropna().to_numpy()
probs = [0.1, 0.25, 0.5, 0.75, 0.9]
p("ageQuantile", np.quantile(a, probs))
# The grouped-data quantile of the pooled 1-year histogram on [20, 80): rank p*N, linear within its bin.
h = np.histogram(a, bins=np.arange(20, 81, 1.0))[0]; cum = np.cumsum(h); N = len(a)
def grouped(q):
    r = q * N; b = int(np.argmax(cum >= r)); before = cum[b - 1] if b > 0 else 0
    return 20 + b + (r - before) / h[b]
p("ageGrouped", [grouped(q) for q in probs])
`;

test('statistics over the four heart hospitals equal pandas on the pooled rows', { skip }, async (t) => {
  const py = parseKeyed(runPython(PY));
  const sites = siteInputs(heartTables(dir), HEART_STATS_SCHEMA, { minCellCount: 1 });
  const want = (k: string) => py.get(k) ?? assert.fail(`python printed no ${k}`);

  await t.test('counts: overall, by category, cross-tabulations', () => {
    const total = runQuery({ kind: 'count' }, sites).result as CountResult;
    assert.deepEqual(total.cells.map((c) => c.count), want('n'));
    const bySex = runQuery({ kind: 'count', by: ['sex'] }, sites).result as CountResult;
    assert.deepEqual(bySex.levels, [['0', '1', null]]);
    assert.deepEqual(bySex.cells.map((c) => c.count), want('bySex'));
    const sexCp = runQuery({ kind: 'count', by: ['sex', 'cp'] }, sites).result as CountResult;
    assert.deepEqual(sexCp.cells.map((c) => c.count), want('sexCp'));
    const three = runQuery({ kind: 'count', by: ['cp', 'restecg', 'fbs'] }, sites).result as CountResult;
    assert.deepEqual(three.cells.map((c) => c.count), want('cpEcgFbs'));
    assert.ok(three.cells.every((c) => c.suppressedAt.length === 0 && c.noiseSd === 0));
    // Each site's own table adds up to the pooled one.
    const sum = want('cpEcgFbs').map((_, i) => Object.values(three.sites).reduce((a, s) => a + s[i]!, 0));
    assert.deepEqual(sum, want('cpEcgFbs'));
  });

  await t.test('mean, variance, sd (by group and overall); min/max bound the true extremes', () => {
    const age = runQuery({ kind: 'summary', column: 'age', by: 'sex' }, sites).result as SummaryResult;
    for (const i of [0, 1]) {
      const [n, mean, variance, sd] = want(`age.sex${i}`);
      const g = age.groups[i]!;
      assert.equal(g.n, n);
      assert.ok(relClose(g.mean, mean!, 1e-12), `mean ${g.mean} vs ${mean}`);
      assert.ok(relClose(g.variance, variance!, 1e-12), `variance ${g.variance} vs ${variance}`);
      assert.ok(relClose(g.sd, sd!, 1e-12));
    }
    const chol = runQuery({ kind: 'summary', column: 'chol', statistics: ['mean', 'variance', 'sd', 'min', 'max'] }, sites).result as SummaryResult;
    const [n, mean, variance, sd, min, max] = want('chol');
    const g = chol.groups[0]!;
    assert.equal(g.n, n);
    assert.ok(relClose(g.mean, mean!, 1e-12) && relClose(g.variance, variance!, 1e-12) && relClose(g.sd, sd!, 1e-12));
    // Moved outward by 10–30 % of the site's sd: below the true min, above the true max, and not by more.
    const siteSd = Math.max(...Object.values(chol.sites).map((s) => s[0]!.sd));
    assert.ok(g.min! < min! && g.min! >= min! - 0.3 * siteSd, `min ${g.min} vs true ${min}`);
    assert.ok(g.max! > max! && g.max! <= max! + 0.3 * siteSd, `max ${g.max} vs true ${max}`);
  });

  await t.test('histogram and missingness', () => {
    const h = runQuery({ kind: 'histogram', column: 'chol', range: [0, 620], bins: 31 }, sites).result as HistogramResult;
    assert.deepEqual(h.cells.map((c) => c.count), want('cholHist'));
    const m = runQuery({ kind: 'missingness' }, sites).result as MissingnessResult;
    assert.deepEqual(m.columns.map((c) => c.column), [...HEART_COLUMNS.slice(0, -1), 'num']);
    assert.deepEqual(m.columns.map((c) => c.missing.count), want('missing'));
    assert.ok(m.columns.every((c) => c.missing.count + c.present.count === want('n')[0]));
  });

  await t.test('quantiles: the grouped estimate of the pooled histogram, bracketing numpy\'s sample quantile', () => {
    const probs = [0.1, 0.25, 0.5, 0.75, 0.9];
    const q = runQuery({ kind: 'quantiles', column: 'age', probs, range: [20, 80], bins: 60 }, sites).result as QuantilesResult;
    const sample = want('ageQuantile'), grouped = want('ageGrouped');
    q.quantiles.forEach((e, i) => {
      assert.ok(relClose(e.estimate, grouped[i]!, 1e-12), `p=${probs[i]}: ${e.estimate} vs grouped ${grouped[i]}`);
      assert.ok(e.lower <= sample[i]! && sample[i]! <= e.upper, `p=${probs[i]}: numpy ${sample[i]} outside [${e.lower}, ${e.upper}]`);
      assert.ok(e.upper - e.lower <= 2, 'nothing suppressed: the bounds span at most two bins');
    });
  });
});
