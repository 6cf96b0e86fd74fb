/**
 * createStrategy(name, params): the one place that maps a study's strategy name to code.
 * Names are matched case-insensitively; an unknown name or parameter is a clear error.
 */
import type { Strategy } from '../strategy.js';
import { Cyclic } from './cyclic.js';
import { FedAdagrad } from './fedadagrad.js';
import { FedAdam } from './fedadam.js';
import { FedAvg } from './fedavg.js';
import { FedAvgM } from './fedavgm.js';
import { FedProx } from './fedprox.js';
import { FedYogi } from './fedyogi.js';
import { Krum } from './krum.js';
import { Median } from './median.js';
import { MultiKrum } from './multi-krum.js';
import { Scaffold } from './scaffold.js';
import { TrimmedMean } from './trimmed-mean.js';

const FACTORIES: Record<string, (p: Record<string, unknown>) => Strategy> = {
  FedAvg: (p) => FedAvg.fromParams(p),
  FedProx: (p) => FedProx.fromParams(p),
  FedAdam: (p) => FedAdam.fromParams(p),
  FedYogi: (p) => FedYogi.fromParams(p),
  FedAdagrad: (p) => FedAdagrad.fromParams(p),
  SCAFFOLD: (p) => Scaffold.fromParams(p),
  FedAvgM: (p) => FedAvgM.fromParams(p),
  Cyclic: (p) => Cyclic.fromParams(p),
  Median: (p) => Median.fromParams(p),
  TrimmedMean: (p) => TrimmedMean.fromParams(p),
  Krum: (p) => Krum.fromParams(p),
  MultiKrum: (p) => MultiKrum.fromParams(p),
};

/** Canonical strategy names. */
export const STRATEGY_NAMES = Object.keys(FACTORIES);

/**
 * What a strategy asks of each site's training loop beyond training from the global weights: FedProx's proximal
 * term, SCAFFOLD's control variates. Every other strategy works on any tensor set with any trainer, because it
 * needs only the weights the sites return.
 */
const NEEDS: Record<string, readonly ('fedprox' | 'scaffold')[]> = { FedProx: ['fedprox'], SCAFFOLD: ['scaffold'] };

export function strategyNeeds(name: string): ('fedprox' | 'scaffold')[] {
  return [...(NEEDS[canonicalName(name)] ?? [])];
}

function canonicalName(name: string): string {
  const canonical = STRATEGY_NAMES.find((n) => n.toLowerCase() === String(name).toLowerCase());
  if (!canonical) throw new Error(`unknown strategy "${name}" (known: ${STRATEGY_NAMES.join(', ')})`);
  return canonical;
}

export function createStrategy(name: string, params: Record<string, unknown> = {}): Strategy {
  return FACTORIES[canonicalName(name)]!(params ?? {});
}
