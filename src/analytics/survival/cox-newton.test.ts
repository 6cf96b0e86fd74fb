/** The coordinator's Cox state survives a restart between rounds: a fit resumed from saved state ends where an uninterrupted one does. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCsv } from '../../site/data/csv.js';
import { createRng } from '../../learning/rng.js';
import { answerQuery } from '../query.js';
import { SiteTable } from '../columns.js';
import { CryptoNormal } from '../../privacy/noise.js';
import { combineCox, CoxNewton, type CoxAnswer } from './cox.js';
import type { CoxQuery } from '../spec.js';

function site(seed: number, n: number) {
  const rng = createRng(seed);
  const rows = Array.from({ length: n }, () => {
    const x1 = rng.normal(), x2 = rng.next() < 0.5 ? 'a' : 'b';
    const t = -Math.log(1 - rng.next()) / Math.exp(0.7 * x1 + (x2 === 'b' ? -0.4 : 0));
    const c = -Math.log(1 - rng.next()) * 2;
    return `${Math.min(t, c).toFixed(3)},${t <= c ? 1 : 0},${x1.toFixed(4)},${x2}`;
  });
  const schema = { features: [{ name: 'x1', type: 'numeric' as const }, { name: 'x2', type: 'categorical' as const, levels: ['a', 'b'] }], task: { kind: 'survival' as const, time: 't', event: 'e' }, split: { kind: 'stratified' as const, trainFraction: 0.5, seed: 1 } };
  return { table: new SiteTable(parseCsv(`t,e,x1,x2\n${rows.join('\n')}\n`, `s${seed}.csv`), schema), policy: { minCellCount: 5 }, noise: new CryptoNormal() };
}

test('a Cox fit resumed from CoxNewton.state() after every round equals the uninterrupted fit', () => {
  const sites = { a: site(1, 120), b: site(2, 80), c: site(3, 60) };
  const q: CoxQuery = { kind: 'cox', covariates: ['x1', 'x2'], ties: 'efron' };
  const round = (beta: number[] | undefined) => Object.fromEntries(Object.entries(sites).map(([id, s]) => [id, answerQuery({ query: q, ...(beta ? { beta } : {}) }, s).answer as CoxAnswer]));
  const drive = (restart: boolean) => {
    let n = new CoxNewton(2);
    let beta: number[] | undefined;
    while (!n.done) {
      const b = n.beta();
      n.observe(combineCox(round(beta), 'efron', b));
      beta = n.beta();
      if (restart) n = CoxNewton.restore(JSON.parse(JSON.stringify(n.state())));
    }
    return n.result(['x1', 'x2=b'], { n: 260, events: 0, ties: 'efron', strata: 'site', excludedSites: [], truncatedSites: [] });
  };
  const plain = drive(false), resumed = drive(true);
  assert.ok(plain.converged && plain.iterations >= 3);
  assert.deepEqual(resumed, plain);
  assert.ok(Math.abs(plain.coef[0]! - 0.7) < 0.3 && Math.abs(plain.coef[1]! + 0.4) < 0.4, `coef ${plain.coef}`);
});
