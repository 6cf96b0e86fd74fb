import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freeCapacity, parseNodes, probeSlurmCapacity, usable } from './slurm-capacity.js';
import { slurmAvailable } from './slurm.js';

const text = [
  'NodeName=g1 Arch=x86_64 CPUAlloc=8 CPUTot=32 RealMemory=257000 AllocMem=65536 State=MIXED Partitions=gpu,debug ' +
    'CfgTRES=cpu=32,mem=257000M,billing=32,gres/gpu=4 AllocTRES=cpu=8,mem=64G,gres/gpu=1',
  'NodeName=g2 CPUAlloc=0 CPUTot=32 RealMemory=257000 AllocMem=0 State=IDLE+DRAIN Partitions=gpu ' +
    'CfgTRES=cpu=32,gres/gpu=4 AllocTRES=',
  'NodeName=c1 CPUAlloc=0 CPUTot=16 RealMemory=64000 AllocMem=0 State=IDLE Partitions=debug CfgTRES=cpu=16 AllocTRES=',
].join('\n');

test('free capacity counts usable nodes only, per partition', () => {
  const nodes = parseNodes(text);
  assert.equal(nodes.length, 3);
  assert.deepEqual(nodes[0], { name: 'g1', state: 'MIXED', cpuTotal: 32, cpuAlloc: 8, memMiB: 257000, allocMemMiB: 65536,
    gpus: 4, allocGpus: 1, partitions: ['gpu', 'debug'] });
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
