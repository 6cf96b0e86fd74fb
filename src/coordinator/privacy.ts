/**
 * The coordinator's side of a study's privacy settings: checks them at creation, says what each fit task
 * carries, aggregates client-level DP-FedAvg, and records the spend the sites report (ledger + audit).
 * The mechanisms themselves are src/privacy's; this file only plumbs them into the federation.
 */
import type { PrivacySpend, StudySpec, TaskMessage } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import { noiseMultiplierFor } from '../privacy/rdp.js';
import { dpFedAvgAggregate } from '../privacy/dpfedavg.js';
import { CryptoNormal, addGaussianNoise } from '../privacy/noise.js';
import { appendAudit, type AuditKey } from '../governance/audit-store.js';
import type { SpendEntry, Store } from '../store/store.js';
import { updateDelta } from '../privacy/dpfedavg.js';
import type { HostedStrategy } from './strategy-host.js';

/**
 * Strategies whose aggregate is a function of the example-weighted mean of the updates alone, so they can take
 * the one sum SecAgg+ reveals (FedAvg, and the server-optimiser family that steps along the mean's direction).
 * Robust aggregators (median, Krum, …) need each update and cannot run under SecAgg+.
 */
export const SECAGG_STRATEGIES = ['fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad'];

/** Problems with a study's privacy block that its schema cannot express; empty when it is usable. */
export function privacyProblems(spec: StudySpec): string[] {
  const p = spec.privacy;
  if (!p) return [];
  const out: string[] = [];
  const dp = p.dp;
  if (dp) {
    if (dp.level === 'sample') {
      if (dp.mode !== undefined) out.push('/privacy/dp/mode: only client-level DP has a noise mode (sample-level noise is added inside each site\'s training)');
      if (spec.fit.localSteps === undefined) out.push('/fit/localSteps: sample-level DP-SGD needs localSteps (its accountant counts steps)');
      if (spec.fit.optimizer.kind !== 'sgd') out.push('/fit/optimizer/kind: sample-level DP-SGD trains with sgd');
      if (spec.fit.proximalMu) out.push('/fit/proximalMu: sample-level DP-SGD does not support a proximal term');
    } else {
      if (spec.strategy.name.toLowerCase() !== 'fedavg') out.push(`/strategy/name: client-level DP-FedAvg aggregates with its own fixed-denominator mean; use FedAvg (got ${spec.strategy.name})`);
      if (dp.mode === 'distributed' && !p.secagg) out.push('/privacy/dp/mode: distributed noise is only safe under secure aggregation; add privacy.secagg');
      try {
        noiseMultiplierFor(dp.epsilon, dp.delta, 1, spec.rounds);
      } catch (e) {
        out.push(`/privacy/dp: ${(e as Error).message}`);
      }
    }
  }
  if (p.secagg) {
    const s = p.secagg;
    if (!SECAGG_STRATEGIES.includes(spec.strategy.name.toLowerCase())) out.push(`/strategy/name: ${spec.strategy.name} needs every update in the clear; SecAgg+ works with ${SECAGG_STRATEGIES.join(', ')}`);
    if (s.threshold !== undefined && s.degree !== undefined && !(2 * s.threshold > s.degree && s.threshold <= s.degree)) {
      out.push(`/privacy/secagg/threshold: must exceed half the degree and not exceed it (degree ${s.degree}, threshold ${s.threshold})`);
    }
    if ((s.threshold === undefined) !== (s.degree === undefined)) out.push('/privacy/secagg: give degree and threshold together, or neither (the recommended values for the round size)');
    if (spec.sites && spec.sites.length < 3) out.push('/sites: SecAgg+ needs at least 3 sites (with 2, the sum reveals the other site\'s update to each)');
  }
  return out;
}

/** σ of client-level DP-FedAvg: given, or the smallest that keeps `rounds` releases (every site asked, q = 1) within (ε, δ). */
export function clientNoiseMultiplier(spec: StudySpec): number {
  const dp = spec.privacy!.dp!;
  return dp.noiseMultiplier ?? noiseMultiplierFor(dp.epsilon, dp.delta, 1, spec.rounds);
}

/** What a fit task of a private study tells the site. Client-level DP gets the σ the coordinator will assume. */
export function taskPrivacy(spec: StudySpec, clientsPerRound: number): TaskMessage['privacy'] | undefined {
  const p = spec.privacy;
  if (!p || (!p.dp && !p.secagg)) return undefined;
  const dp = p.dp && (p.dp.level === 'client' ? { ...p.dp, mode: p.dp.mode ?? 'central', noiseMultiplier: clientNoiseMultiplier(spec) } : p.dp);
  return { ...(dp ? { dp } : {}), rounds: spec.rounds, clientsPerRound, secagg: !!p.secagg };
}

/**
 * Client-level DP-FedAvg at the coordinator: the new global model from the sites' deltas (central mode clips
 * each again and adds N(0, σ²C²) to the sum) or, under SecAgg+, from the one sum of their clipped deltas.
 * The denominator is the number of sites asked (m), fixed, so one site's sensitivity is C/m.
 */
export function aggregateClientLevel(spec: StudySpec, global: Weights, deltas: Weights[], clientsPerRound: number): Weights {
  const dp = spec.privacy!.dp!;
  return dpFedAvgAggregate(global, deltas, { clipNorm: dp.clipNorm, noiseMultiplier: clientNoiseMultiplier(spec), mode: dp.mode ?? 'central', clientsPerRound }, new CryptoNormal());
}

/**
 * Client-level DP-FedAvg from the SecAgg+ sum of the sites' clipped deltas: central mode adds N(0, σ²C²) here
 * (the sum must not be clipped again: it is many sites' worth), distributed mode already carries the sites'
 * noise. Then global + sum / m.
 */
export function aggregateClientLevelSum(spec: StudySpec, global: Weights, sum: Weights, clientsPerRound: number): Weights {
  const dp = spec.privacy!.dp!;
  const sigma = clientNoiseMultiplier(spec);
  if ((dp.mode ?? 'central') === 'central') addGaussianNoise(sum, sigma * dp.clipNorm, new CryptoNormal());
  return dpFedAvgAggregate(global, [sum], { clipNorm: dp.clipNorm, noiseMultiplier: sigma, mode: 'distributed', clientsPerRound }, new CryptoNormal());
}

/**
 * Client-level DP-FedAvg as a layer around the study's strategy (Flower's server-side fixed-clipping wrapper):
 * the new global model is the DP aggregate of the sites' deltas, or of their sum when the layer outside holds
 * only that (SecAgg+); `clientDp` lets fit-aggregate.ts stream the central-noise aggregate instead (stream-dp.ts,
 * the same arithmetic). The inner strategy still chooses the sites and configures their tasks; privacyProblems
 * admits only FedAvg here, whose aggregate this replaces.
 */
export function clientLevelDp(inner: HostedStrategy, spec: StudySpec): HostedStrategy {
  return {
    strategy: inner.strategy,
    configureFit: (round, sites) => inner.configureFit(round, sites),
    getState: () => inner.getState(),
    clientDp: { clipNorm: spec.privacy!.dp!.clipNorm, noiseMultiplier: clientNoiseMultiplier(spec), mode: spec.privacy!.dp!.mode ?? 'central' },
    ...(inner.roundMetrics ? { roundMetrics: (round: number) => inner.roundMetrics!(round) } : {}),
    aggregateFit: (_round, global, input) => aggregateClientLevel(spec, global, input.results.map((r) => updateDelta(r.weights, global)), input.asked),
    aggregateSum: (_round, global, sum, input) => aggregateClientLevelSum(spec, global, sum, input.asked),
  };
}

/** The reported spend must be there for a DP study's fit result, and must describe the study's mechanism. */
export function spendProblem(spec: StudySpec, spend: PrivacySpend | undefined): string | undefined {
  const dp = spec.privacy?.dp;
  if (!dp) return undefined;
  if (!spend) return 'a result of a differentially private study must report its privacy spend (meta.privacy)';
  const want = dp.level === 'sample' ? 'dp-sgd' : 'dp-fedavg';
  if (spend.mechanism !== want) return `the study asks for ${want}; the result reports ${spend.mechanism}`;
  if (spend.epsilon > spend.budgetEpsilon * (1 + 1e-9)) return `the reported spend ε=${spend.epsilon} exceeds the site's own budget ε=${spend.budgetEpsilon}`;
  return undefined;
}

/** Ledger row and 'privacy.spent' audit entry, inside the transaction that accepts the update. */
export async function recordSpendInTx(tx: Store, audit: AuditKey | undefined, e: SpendEntry): Promise<void> {
  const fresh = await tx.recordSpend(e);
  if (audit && fresh) {
    await appendAudit(tx, audit, {
      ts: e.at, actor: e.siteId, kind: 'privacy.spent', subject: e.taskId,
      data: { study: e.studyId, round: e.round, mechanism: e.spend.mechanism, steps: e.spend.steps, sampleRate: e.spend.sampleRate, noiseMultiplier: e.spend.noiseMultiplier, epsilon: e.spend.epsilon, delta: e.spend.delta, budget: { epsilon: e.spend.budgetEpsilon, delta: e.spend.budgetDelta } },
    });
  }
}
