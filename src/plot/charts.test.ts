import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pythonSkipReason, runPython } from '../testing/oracles.js';
import { dotWhiskerSvg, forestSvg, histogramSvg, kaplanMeierSvg } from './charts.js';
import { linearScale, logScale, niceStep } from './svg.js';

const km = kaplanMeierSvg({
  title: 'Overall survival <lung & "inst">',
  series: [
    { label: 'sex=1', time: [5, 11, 30], surv: [0.9, 0.6, 0.6], lower: [0.8, 0.4, 0.4], upper: [1, 0.8, 0.8], censored: [30] },
    { label: 'sex=2', time: [8, 20], surv: [0.5, 0], lower: [0.2, NaN], upper: [0.9, NaN] },
  ],
  xLabel: 'days',
});
const forest = forestSvg({ title: 'Cox model', rows: [{ label: 'age', estimate: 1.017, lower: 0.999, upper: 1.036, note: 'p = 0.065' }, { label: 'sex=2', estimate: 0.58, lower: 0.41, upper: 0.8 }] });
const hist = histogramSvg({ title: 'chol', edges: [0, 100, 200, 300], counts: [4, null, 17], xLabel: 'mg/dl' });
const dots = dotWhiskerSvg({ title: 'bench', rows: [{ label: 'Pooled', mean: 0.8, lower: 0.78, upper: 0.82 }, { label: 'FedAvg', mean: 0.75, lower: 0.7, upper: 0.8 }] });

test('every plot is well-formed XML with what it shows (parsed by Python\'s ElementTree)', { skip: pythonSkipReason(['xml.etree.ElementTree']) }, () => {
  const out = runPython(`import json, sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
res = {}
for name in ["km", "forest", "hist", "dots"]:
    root = ET.parse(name + ".svg").getroot()
    res[name] = {"tag": root.tag, "paths": len(root.findall(ns + "path")), "rects": len(root.findall(ns + "rect")), "circles": len(root.findall(ns + "circle")),
                 "texts": [t.text for t in root.findall(ns + "text")]}
print(json.dumps(res))`, { 'km.svg': km, 'forest.svg': forest, 'hist.svg': hist, 'dots.svg': dots });
  const r = JSON.parse(out) as Record<string, { tag: string; paths: number; rects: number; circles: number; texts: string[] }>;
  for (const v of Object.values(r)) assert.equal(v.tag, '{http://www.w3.org/2000/svg}svg');
  assert.equal(r['km']!.texts[0], 'Overall survival <lung & "inst">');
  assert.equal(r['km']!.paths, 4, 'two curves and two bands');
  assert.ok(r['km']!.texts.includes('sex=1') && r['km']!.texts.includes('days'));
  assert.deepEqual(r['forest']!.texts.filter((t) => t === 'age' || t === 'sex=2'), ['age', 'sex=2']);
  assert.ok(r['forest']!.texts.includes('1.02 (1.00–1.04)  p = 0.065'));
  assert.equal(r['hist']!.rects, 1 + 3, 'background and three bars (one hatched)');
  assert.equal(r['dots']!.circles, 2);
});

test('a Kaplan–Meier curve starts at 1 at time 0 and steps down at each event time', () => {
  const path = /<path d="(M [^"]+)" fill="none" stroke="#0072B2"/.exec(km)![1]!;
  const x = linearScale(0, 30, 56, 620), y = linearScale(0, 1, 336, 34, { count: 5 });
  assert.ok(path.startsWith(`M ${Math.round(x(0) * 100) / 100} ${Math.round(y(1) * 100) / 100} H ${Math.round(x(5) * 100) / 100} V ${Math.round(y(0.9) * 100) / 100}`), path);
  // The band of sex=2 stops where its limits are undefined (S = 0).
  assert.equal((km.match(/confidence band/g) ?? []).length, 2);
  assert.match(hist, /\[100, 200\): suppressed/);
});

test('scales give readable ticks', () => {
  assert.equal(niceStep(0, 1000, 5), 200);
  assert.deepEqual(linearScale(0, 0.93, 0, 100).ticks.map((t) => Number(t.toFixed(10))), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(logScale(0.3, 3, 0, 100).ticks, [0.5, 1, 2]);
  assert.throws(() => logScale(0, 1, 0, 1), /0 < lo < hi/);
  assert.throws(() => histogramSvg({ title: '', edges: [0, 1], counts: [1, 2] }), /2 counts for 1 bins/);
});
