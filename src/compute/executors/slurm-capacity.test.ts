import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freeCapacity, parseGres, parseNodes, probeSlurmCapacity, slurmNodes, usable } from './slurm-capacity.js';
import { slurmAvailable } from './slurm.js';

const text = [
  'NodeName=g1 Arch=x86_64 CPUAlloc=8 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=257000 AllocMem=65536 State=MIXED Partitions=gpu,debug ' +
    'CfgTRES=cpu=32,mem=257000M,billing=32,gres/gpu=4 AllocTRES=cpu=8,mem=64G,gres/gpu=1',
  'NodeName=g2 CPUAlloc=0 CPUTot=32 RealMemory=257000 AllocMem=0 State=IDLE+DRAIN Partitions=gpu ' +
    'CfgTRES=cpu=32,gres/gpu=4 AllocTRES=',
  'NodeName=c1 CPUAlloc=0 CPUTot=16 RealMemory=64000 AllocMem=0 State=IDLE Partitions=debug CfgTRES=cpu=16 AllocTRES=',
].join('\n');

test('free capacity counts usable nodes only, per partition', () => {
  const nodes = parseNodes(text);
  assert.equal(nodes.length, 3);
  assert.deepEqual(nodes[0], { name: 'g1', state: 'MIXED', cpuTotal: 32, cpuAlloc: 8, memMiB: 257000, allocMemMiB: 65536,
    gpus: 4, allocGpus: 1, partitions: ['gpu', 'debug'], gres: [{ name: 'gpu', type: 'a100', count: 4 }] });
  // g2 is draining: none of its capacity is offered.
  assert.deepEqual(freeCapacity(nodes, 'gpu'), { cpus: 24, gpus: 3, ramGiB: 186.9 });
  assert.deepEqual(freeCapacity(nodes), { cpus: 40, gpus: 3, ramGiB: 249.4 });
  assert.equal(usable('IDLE'), true);
  assert.equal(usable('IDLE*'), false); // not responding
  assert.equal(usable('DOWN'), false);
  assert.equal(usable('MIXED+DRAIN'), false);
});

test('the real cluster reports free capacity within its size', async (t) => {
  const a = await slurmAvailable();
  if (!a.ok) {
    if (process.env.CI && process.env.CI !== 'false') assert.fail(`CI: Slurm is required and not available: ${a.detail}`);
    return t.skip(`Slurm not available (${a.detail})`);
  }
  const free = await probeSlurmCapacity();
  assert.ok(free.cpus >= 0 && free.cpus <= 1024 && Number.isInteger(free.cpus), JSON.stringify(free));
  assert.ok(free.ramGiB > 0, JSON.stringify(free));
  assert.equal(free.gpus, 0); // the CI node has no GPUs configured
});

test('a node\'s Gres= gives the GRES names, types and counts a resource declares', async (t) => {
  assert.deepEqual(parseGres('gpu:a100:4(S:0-1),gpu:t4:2,testslot:2'), [{ name: 'gpu', type: 'a100', count: 4 }, { name: 'gpu', type: 't4', count: 2 }, { name: 'testslot', count: 2 }]);
  assert.deepEqual(parseGres('gpu:2'), [{ name: 'gpu', count: 2 }]);
  assert.deepEqual(parseGres('(null)'), []);
  const a = await slurmAvailable();
  if (!a.ok) return t.skip(`Slurm not available (${a.detail})`);
  // The cluster of .ci/setup-slurm.sh: no GPU; its device-less test GRES.
  const nodes = await slurmNodes();
  assert.deepEqual(nodes[0]!.gres.filter((g) => g.name === 'gpu'), []);
  if (nodes[0]!.gres.length) assert.deepEqual(nodes[0]!.gres, [{ name: 'testslot', count: 2 }]);
});
