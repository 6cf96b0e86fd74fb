import { test } from 'node:test';
import assert from 'node:assert/strict';
import { place, checkPlacement, freeAt } from './placement.js';
import { resources } from './fixtures.js';
import type { ComputeResource } from './types.js';

const base = { siteId: 'aiims-delhi', dataJurisdiction: 'IN', cpus: 8, gpus: 1, ramGiB: 32 };

test('an Indian site is placed on Indian compute with the most free GPUs', () => {
  const r = place(base, resources);
  assert.equal(r.ok, true);
  if (!r.ok) return;
  // in-iisc-k8s has 4 free GPUs against in-cdac-param's 2; JP resources are never candidates.
  assert.equal(r.resource.id, 'in-iisc-k8s');
  assert.match(r.reason, /data stays in IN/);
  assert.deepEqual(r.rejected.map((x) => x.resourceId).sort(), ['jp-abci', 'jp-kyoto-local']);
});

test('a CPU-only request ranks by free CPUs', () => {
  const r = place({ ...base, gpus: 0 }, resources);
  assert.ok(r.ok);
  assert.equal(r.resource.id, 'in-cdac-param');
});

test('a Japanese site stays in Japan even when India has more free capacity', () => {
  const r = place({ ...base, siteId: 'kyoto-h', dataJurisdiction: 'JP', gpus: 0 }, resources);
  assert.ok(r.ok);
  assert.equal(r.resource.jurisdiction, 'JP');
  assert.equal(r.resource.id, 'jp-abci');
});

test('naming a foreign resource is refused with both jurisdictions in the reason', () => {
  const c = checkPlacement(base, resources.find((r) => r.id === 'jp-abci')!);
  assert.equal(c.ok, false);
  if (c.ok) return;
  assert.match(c.reason, /data is in IN and resource jp-abci is in JP/);
  assert.match(c.reason, /across a border/);
});

test('an allowedJurisdictions list from the policy layer is the rule', () => {
  const onlyJP = { ...base, allowedJurisdictions: ['JP'] };
  const c = checkPlacement(onlyJP, resources[0]!);
  assert.ok(!c.ok);
  assert.match(c.reason, /data is in IN and resource in-cdac-param is in IN/);
  assert.match(c.reason, /allows compute only in JP/);
  // An empty list allows nowhere: nothing may be placed, and the reason says where it looked.
  const none = place({ ...base, allowedJurisdictions: [] }, resources);
  assert.ok(!none.ok);
  assert.match(none.reason, /no compute resource is registered in/);
});

test('a policy that allows a foreign jurisdiction still prefers home compute', () => {
  const both = { ...base, gpus: 0, allowedJurisdictions: ['IN', 'JP'] };
  const r = place(both, resources);
  assert.ok(r.ok);
  assert.equal(r.resource.jurisdiction, 'IN'); // jp-abci has more free CPUs, but data stays home when it can
  const r2 = place({ ...both, cpus: 100 }, resources); // too big for IN: the policy-allowed JP resource takes it
  assert.ok(r2.ok);
  assert.equal(r2.resource.id, 'jp-abci');
  assert.match(r2.reason, /policy-allowed JP/);
});

test('no fitting capacity gives a clear reason per resource', () => {
  const r = place({ ...base, gpus: 5 }, resources);
  assert.ok(!r.ok);
  assert.match(r.reason, /none of the 2 resource\(s\) in IN has capacity for 8 CPUs, 5 GPUs/);
  const param = r.rejected.find((x) => x.resourceId === 'in-cdac-param')!;
  assert.match(param.reason, /5 GPUs requested, 2 free/);
});

test('GPU memory requirement filters GPU models', () => {
  const r = place({ ...base, minGpuMemoryGiB: 32 }, resources);
  assert.ok(r.ok);
  assert.equal(r.resource.id, 'in-cdac-param'); // IISc's V100s have 16 GiB
});

test('ties break on resource id, whatever the input order', () => {
  const twin = (id: string): ComputeResource => ({ ...resources[3]!, id, jurisdiction: 'IN' });
  const a = place({ ...base, gpus: 0, ramGiB: 1 }, [twin('in-b'), twin('in-a')]);
  const b = place({ ...base, gpus: 0, ramGiB: 1 }, [twin('in-a'), twin('in-b')]);
  assert.ok(a.ok && b.ok);
  assert.equal(a.resource.id, 'in-a');
  assert.equal(b.resource.id, 'in-a');
});

test('availability windows: capacity only inside a window', () => {
  const w: ComputeResource = {
    ...resources[3]!, id: 'in-night', jurisdiction: 'IN',
    availability: { windows: [{ from: '2026-01-01T20:00:00Z', to: '2026-01-02T06:00:00Z', free: { cpus: 16, gpus: 0, ramGiB: 64 } }] },
  };
  assert.equal(freeAt(w, new Date('2026-01-01T12:00:00Z')), undefined);
  assert.equal(freeAt(w, new Date('2026-01-01T22:00:00Z'))?.cpus, 16);
  const day = place({ ...base, gpus: 0, at: new Date('2026-01-01T12:00:00Z') }, [w]);
  assert.ok(!day.ok);
  assert.match(day.rejected[0]!.reason, /no availability window at 2026-01-01T12:00:00.000Z/);
  assert.ok(place({ ...base, gpus: 0, at: new Date('2026-01-02T01:00:00Z') }, [w]).ok);
});

test('a GPU task is never placed where no GPUs exist, and the refusal says so and what to change', () => {
  const cpuOnly = resources.filter((r) => r.id === 'jp-kyoto-local');
  const r = place({ ...base, siteId: 'kyoto-h', dataJurisdiction: 'JP', cpus: 1, ramGiB: 1 }, cpuOnly);
  assert.ok(!r.ok);
  assert.match(r.reason, /asks for 1 GPU and none of the 1 resource\(s\) in JP offers GPUs/);
  assert.match(r.reason, /capacity\.gpus/);
  assert.match(r.rejected[0]!.reason, /resource jp-kyoto-local offers no GPUs; 1 requested/);
  // The same resource takes the task once it asks for no GPU.
  assert.ok(place({ ...base, siteId: 'kyoto-h', dataJurisdiction: 'JP', cpus: 1, ramGiB: 1, gpus: 0 }, cpuOnly).ok);
});

test('a GPU type matches a GPU by its Slurm GRES type or its model name, case-insensitively', () => {
  const typed: ComputeResource[] = [
    { ...resources[0]!, capacity: { ...resources[0]!.capacity, gpus: [{ model: 'NVIDIA A100-SXM4-40GB', memoryGiB: 40, count: 8, gresType: 'a100' }] } },
    resources[1]!, // V100s, no GRES type
  ];
  for (const gpuType of ['a100', 'A100', 'nvidia a100-sxm4-40gb']) {
    const r = place({ ...base, gpuType }, typed);
    assert.ok(r.ok, gpuType);
    assert.equal(r.resource.id, 'in-cdac-param'); // IISc has more free GPUs, but not of this type
  }
  const v = place({ ...base, gpuType: 'V100' }, typed);
  assert.ok(v.ok && v.resource.id === 'in-iisc-k8s');
  const h = place({ ...base, gpuType: 'h100' }, typed);
  assert.ok(!h.ok);
  assert.match(h.reason, /asks for 1 GPU of type h100 and none of the 2 resource\(s\) in IN offers that type/);
  assert.match(h.rejected.find((x) => x.resourceId === 'in-cdac-param')!.reason,
    /has 0 GPUs of type h100; 1 requested \(it offers 8 × NVIDIA A100-SXM4-40GB \(gres type a100, 40 GiB\)\)/);
});
