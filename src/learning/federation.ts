/**
 * An in-process federation: the same Strategy and client code as the networked one, with
 * function calls instead of HTTP. Used by the benchmark (`setu bench flamby-heart`) and the
 * simulator. Sites train one after another in the order the strategy lists them (site-id
 * order), as FLamby's reference loop does; each update is added to the streaming aggregator
 * as soon as it exists and then dropped, so memory does not grow with the number of sites.
 */
import type { Weights } from '../protocol/tensors.js';
import type { BatchStream } from './batches.js';
import { fit, type ClientState } from './client.js';
import type { Strategy } from './strategy.js';
import type { Dataset, Model } from './types.js';

/** One in-process site. `clientState` is updated in place between rounds (SCAFFOLD). */
export interface LocalSite {
  id: string;
  data: Dataset;
  stream: BatchStream;
  clientState?: ClientState;
}

export interface RoundReport {
  round: number;
  sites: number;
  metrics: Record<string, number>;
  /** The new global model after this round. */
  weights: Weights;
}

export interface FederationInput {
  model: Model;
  strategy: Strategy;
  initial: Weights;
  rounds: number;
  /** Every site the strategy may pick, or a lookup that materialises a site on demand (simulator). */
  sites: LocalSite[] | { ids: readonly string[]; get(id: string): LocalSite; release?(site: LocalSite): void };
  onRound?: (r: RoundReport) => void;
}

export function runFederation(input: FederationInput): Weights {
  const { model, strategy, rounds } = input;
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`federation: rounds must be a positive integer, got ${rounds}`);
  const lookup = Array.isArray(input.sites)
    ? (() => {
        const byId = new Map(input.sites.map((s) => [s.id, s] as const));
        if (byId.size !== input.sites.length) throw new Error('federation: site ids must be unique');
        return { ids: [...byId.keys()], get: (id: string) => byId.get(id)!, release: undefined as ((s: LocalSite) => void) | undefined };
      })()
    : input.sites;
  let x = input.initial;
  for (let round = 1; round <= rounds; round++) {
    const tasks = strategy.configureFit(round, x, lookup.ids);
    const agg = strategy.begin(round, x);
    for (const task of tasks) {
      const site = lookup.get(task.siteId);
      const out = fit({ model, weights: x, data: site.data, config: task.config, stream: site.stream, ...(site.clientState ? { clientState: site.clientState } : {}) });
      if (out.clientState) site.clientState = out.clientState;
      agg.add({ siteId: site.id, weights: out.weights, numExamples: out.numExamples, loss: out.loss });
      lookup.release?.(site);
    }
    const res = agg.finish();
    x = res.weights;
    input.onRound?.({ round, sites: tasks.length, metrics: res.metrics, weights: x });
  }
  return x;
}
