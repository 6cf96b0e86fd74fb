// What a Slurm cluster has free right now, from `scontrol show node -o`, to fill a resource's availability.now so
// that placement chooses by real free capacity. Nodes that cannot take work (down, drained, failing) count as zero.
import { join } from 'node:path';
import type { FreeCapacity } from '../types.js';
import { ExecutorError, runCommand } from './executor.js';
import { gpuCount, parseTres } from './slurm-parse.js';

export interface SlurmNode { name: string; state: string; cpuTotal: number; cpuAlloc: number; memMiB: number;
  allocMemMiB: number; gpus: number; allocGpus: number; partitions: string[]; gres: NodeGres[] }

/** One generic resource of a node, as its `Gres=` lists it: `gpu:a100:4` is name gpu, type a100, count 4. */
export interface NodeGres { name: string; type?: string; count: number }

/**
 * A node's `Gres=` field ("gpu:a100:4(S:0-1),gpu:t4:2,testslot:2", "(null)") as name, type, count: what a compute
 * centre copies into a resource's `capacity.gpus[].gresType`. Socket bindings in parentheses are dropped.
 */
export function parseGres(text: string): NodeGres[] {
  if (!text || text === '(null)') return [];
  return text.replace(/\([^)]*\)/g, '').split(',').filter(Boolean).map((g) => {
    const f = g.split(':');
    const last = f[f.length - 1]!;
    const count = /^\d+$/.test(last) ? Number(last) : 1;
    const named = /^\d+$/.test(last) ? f.slice(0, -1) : f;
    return { name: named[0]!, ...(named[1] ? { type: named[1] } : {}), count };
  });
}

function field(line: string, key: string): string | undefined {
  return new RegExp(`(?:^|\\s)${key}=(\\S*)`).exec(line)?.[1];
}

/** Parses `scontrol show node -o` (one node per line). */
export function parseNodes(text: string): SlurmNode[] {
  return text.split('\n').filter((l) => l.startsWith('NodeName=')).map((l) => ({
    name: field(l, 'NodeName')!,
    state: field(l, 'State') ?? 'UNKNOWN',
    cpuTotal: Number(field(l, 'CPUTot') ?? 0),
    cpuAlloc: Number(field(l, 'CPUAlloc') ?? 0),
    memMiB: Number(field(l, 'RealMemory') ?? 0),
    allocMemMiB: Number(field(l, 'AllocMem') ?? 0),
    gpus: gpuCount(parseTres(field(l, 'CfgTRES') ?? '')),
    allocGpus: gpuCount(parseTres(field(l, 'AllocTRES') ?? '')),
    partitions: (field(l, 'Partitions') ?? '').split(',').filter(Boolean),
    gres: parseGres(field(l, 'Gres') ?? ''),
  }));
}

/** States in which a node takes new work: IDLE or MIXED (ALLOCATED has nothing free anyway), with no DRAIN etc. */
export function usable(state: string): boolean {
  const parts = state.split('+');
  return ['IDLE', 'MIXED', 'ALLOCATED'].includes(parts[0]!) &&
    !parts.some((p) => ['DRAIN', 'DRAINING', 'DRAINED', 'DOWN', 'FAIL', 'FAILING', 'MAINTENANCE', 'RESERVED',
      'NOT_RESPONDING', 'POWERED_DOWN', 'POWERING_DOWN', 'REBOOT_REQUESTED'].includes(p.replace(/[*~#!%$@^-]+$/, '')))
    && !/[*~]$/.test(parts[0]!);
}

/** Sums free capacity over usable nodes (optionally of one partition). RAM in GiB, rounded down to 0.1. */
export function freeCapacity(nodes: SlurmNode[], partition?: string): FreeCapacity {
  const ok = nodes.filter((n) => usable(n.state) && (!partition || n.partitions.includes(partition)));
  const mib = ok.reduce((s, n) => s + Math.max(0, n.memMiB - n.allocMemMiB), 0);
  return {
    cpus: ok.reduce((s, n) => s + Math.max(0, n.cpuTotal - n.cpuAlloc), 0),
    gpus: ok.reduce((s, n) => s + Math.max(0, n.gpus - n.allocGpus), 0),
    ramGiB: Math.floor((mib / 1024) * 10) / 10,
  };
}

export async function slurmNodes(binDir?: string): Promise<SlurmNode[]> {
  const r = await runCommand(binDir ? join(binDir, 'scontrol') : 'scontrol', ['show', 'node', '-o']);
  if (r.code !== 0) throw new ExecutorError(`scontrol show node failed: ${r.stderr.trim()}`);
  return parseNodes(r.stdout);
}

export async function probeSlurmCapacity(partition?: string, binDir?: string): Promise<FreeCapacity> {
  return freeCapacity(await slurmNodes(binDir), partition);
}
