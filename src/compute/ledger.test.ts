import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize, contributionReport, renderSummary, renderContribution, renderTable, renderUsageRecords, usageRecordRows } from './ledger.js';
import type { UsageRecord } from './types.js';

const rec = (o: Partial<UsageRecord>): UsageRecord => ({
  taskId: 't', studyId: 's1', siteId: 'aiims', siteInstitution: 'aiims', siteCountry: 'IN',
  resourceId: 'in-cdac-param', institution: 'cdac', country: 'IN', cpuSeconds: 0, gpuSeconds: 0, wallSeconds: 0, ...o,
});

const records: UsageRecord[] = [
  rec({ taskId: 't1', cpuSeconds: 3600, gpuSeconds: 7200, wallSeconds: 3600 }),
  rec({ taskId: 't2', siteId: 'kyoto-h', siteInstitution: 'kyoto-u', siteCountry: 'JP', resourceId: 'jp-abci',
    institution: 'aist', country: 'JP', cpuSeconds: 1800, wallSeconds: 900 }),
  // An Indian site whose policy allowed Japanese compute: India consumes, Japan contributes.
  rec({ taskId: 't3', studyId: 's2', resourceId: 'jp-abci', institution: 'aist', country: 'JP',
    cpuSeconds: 600, gpuSeconds: 600, wallSeconds: 300 }),
];

test('sums per study, institution and country, contributed against consumed', () => {
  const s = summarize(records);
  assert.deepEqual(s.total, { cpuSeconds: 6000, gpuSeconds: 7800, wallSeconds: 4800, tasks: 3 });
  assert.deepEqual(s.byStudy.map((x) => [x.key, x.usage.cpuSeconds, x.usage.tasks]), [['s1', 5400, 2], ['s2', 600, 1]]);
  const country = Object.fromEntries(s.byCountry.map((p) => [p.key, p]));
  assert.equal(country.IN!.contributed.cpuSeconds, 3600);
  assert.equal(country.IN!.consumed.cpuSeconds, 4200);
  assert.equal(country.IN!.netCpuSeconds, -600);
  assert.equal(country.JP!.contributed.gpuSeconds, 600);
  assert.equal(country.JP!.consumed.gpuSeconds, 0);
  assert.equal(country.JP!.netGpuSeconds, 600);
  assert.deepEqual(s.byInstitution.map((p) => p.key), ['aiims', 'aist', 'cdac', 'kyoto-u']);
  const aist = s.byInstitution.find((p) => p.key === 'aist')!;
  assert.equal(aist.contributed.tasks, 2);
  assert.equal(aist.consumed.tasks, 0);
});

test('what is contributed in total equals what is consumed', () => {
  const s = summarize(records);
  const sum = (f: (p: (typeof s.byCountry)[number]) => number) => s.byCountry.reduce((n, p) => n + f(p), 0);
  assert.equal(sum((p) => p.contributed.cpuSeconds), sum((p) => p.consumed.cpuSeconds));
  assert.equal(sum((p) => p.netGpuSeconds), 0);
});

test('contribution report has IN and JP rows even without usage, others apart', () => {
  const empty = contributionReport([]);
  assert.deepEqual(empty.countries.map((p) => [p.key, p.contributed.cpuSeconds]), [['IN', 0], ['JP', 0]]);
  const withSG = contributionReport([...records, rec({ taskId: 't4', country: 'SG', institution: 'nscc', cpuSeconds: 5 })]);
  assert.deepEqual(withSG.countries.map((p) => p.key), ['IN', 'JP']);
  assert.deepEqual(withSG.otherCountries.map((p) => [p.key, p.contributed.cpuSeconds]), [['SG', 5]]);
});

test('bad records are refused, naming the task', () => {
  assert.throws(() => summarize([rec({ taskId: 'bad', cpuSeconds: -1 })]), /task bad\): cpuSeconds is -1/);
  assert.throws(() => contributionReport([rec({ taskId: 'nan', gpuSeconds: NaN })]), /task nan\): gpuSeconds is NaN/);
});

test('tables are fixed-width, numbers right-aligned, in hours', () => {
  const t = renderTable(['a', 'bb'], [['xyz', '1'], ['q', '100']]);
  assert.equal(t, 'a     bb\n---  ---\nxyz    1\nq    100');
  const text = renderContribution(contributionReport(records));
  const inLine = text.split('\n').find((l) => l.startsWith('IN '))!;
  // IN gave 1.00 CPU-h and 2.00 GPU-h, used 1.17 CPU-h and 2.17 GPU-h.
  assert.deepEqual(inLine.split(/\s+/), ['IN', '1.00', '2.00', '1.17', '2.17', '-0.17', '-0.17']);
  assert.match(renderSummary(summarize(records)), /Total: 3 tasks, 1\.67 CPU-h, 2\.17 GPU-h/);
});

test('JSON form round-trips', () => {
  const r = contributionReport(records);
  assert.deepEqual(JSON.parse(JSON.stringify(r)), r);
});

test('per-task usage in seconds: a GPU job of a few seconds shows (hours would round it to 0.00)', () => {
  const recs = [
    { taskId: 'cxr.r1.aiims', studyId: 'cxr', siteId: 'aiims', siteInstitution: 'aiims', siteCountry: 'IN', resourceId: 'in-cdac-slurm', institution: 'cdac', country: 'IN',
      cpuSeconds: 1.234, gpuSeconds: 3, wallSeconds: 3, scheduler: 'slurm', cpuBasis: 'measured', jobId: '21' },
    { taskId: 'cxr.r1.kyoto', studyId: 'cxr', siteId: 'kyoto', siteInstitution: 'kyoto-u', siteCountry: 'JP', resourceId: 'site:kyoto', institution: 'kyoto-u', country: 'JP',
      cpuSeconds: 0.5, gpuSeconds: 7.25, wallSeconds: 8, scheduler: 'in-process', cpuBasis: 'measured', jobId: null },
  ];
  const t = usageRecordRows(recs);
  assert.deepEqual(t.header, ['study', 'task', 'site', 'resource', 'scheduler', 'job', 'CPU-s', 'CPU basis', 'GPU-s', 'wall-s']);
  assert.deepEqual(t.rows[0], ['cxr', 'cxr.r1.aiims', 'aiims', 'in-cdac-slurm', 'slurm', '21', '1.2', 'measured', '3.0', '3.0']);
  assert.deepEqual(t.rows[1]!.slice(4, 10), ['in-process', '', '0.5', 'measured', '7.3', '8.0']);
  const text = renderUsageRecords(recs).split('\n');
  assert.equal(text[0], 'Tasks');
  assert.match(text[3]!, /^cxr\s+cxr\.r1\.aiims\s+aiims\s+in-cdac-slurm\s+slurm\s+21\s+1\.2\s+measured\s+3\.0\s+3\.0$/);
});
