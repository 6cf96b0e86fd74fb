/**
 * A study's model as tensors: the checks on the initial weights a study lead uploads, the per-tensor rules
 * (aggregate, local, skip) resolved against the model's names, the layout every update must have, and the merge of
 * an aggregate back into the full model in the study's dtypes.
 *
 * The model's names, shapes and dtypes are fixed by its first version (round 0): the built-in families'
 * initialisation, or the initial weights of a custom model. Every later version has the same layout, so the layout
 * of any version is the study's.
 */
import { maxUpdateBytesOf, type StudySpec } from '../protocol/api.js';
import { SafetensorsError, decodeTensors, headerLayout, readSafetensorsHeader } from '../protocol/safetensors.js';
import {
  cloneWeights, dtypeOf, firstNonFinite, isFloatDType, layoutDifference, layoutOf, pickWeights, resolveTensorRules, roundToDtype, setTensor,
  type ResolvedRules, type Weights, type WeightsLayout,
} from '../protocol/tensors.js';
import { createStrategy, strategyNeeds } from '../learning/strategies/registry.js';
import type { DType } from '../protocol/tensors.js';
import { STREAMED_STRATEGIES, strategyParams } from './strategy-host.js';

/** A problem with a study's model, as the study lead should read it. */
export class ModelProblem extends Error {}

/** Names at most this long; longer ones are surely not a model's (and would bloat every task). */
const MAX_NAME = 500;

/** Checks at creation that need no weights: what a custom model can never do. */
export function modelSpecProblems(spec: StudySpec): string[] {
  const out: string[] = [];
  if (spec.model.kind === 'custom') {
    // SCAFFOLD's control variates live in Setu's own training loop; no external trainer implements them.
    if (strategyNeeds(spec.strategy.name).includes('scaffold')) out.push(`/strategy/name: SCAFFOLD needs control variates inside the site's training loop, which only Setu's built-in trainer has; a custom model is trained by the site's own code (use FedAvg, FedProx, FedAdam, FedYogi, FedAdagrad, FedAvgM, Cyclic, Median, TrimmedMean, Krum or MultiKrum)`);
  }
  const dtype = spec.transport?.updateDtype;
  if (dtype && dtype !== 'F32') {
    // SecAgg+ masks integers in a field: the agent quantises the float32 delta itself, there is no float to narrow.
    if (spec.privacy?.secagg) out.push(`/transport/updateDtype: SecAgg+ sends each update masked as integers in a field, never as ${dtype} floats; leave transport out (or F32) under SecAgg+`);
    // Rounding after the agent's clipping can take a delta past the clip norm the privacy accounting assumes.
    if (spec.privacy?.dp) out.push(`/transport/updateDtype: under differential privacy the update is clipped to its norm bound in float32; rounding it to ${dtype} afterwards can take it past that bound: leave transport out (or F32)`);
  }
  return out;
}

/** The dtypes an update may use for a tensor the model holds in F32, besides F32 itself (the study's transport). */
export function transportDtypes(spec: StudySpec): DType[] {
  const d = spec.transport?.updateDtype;
  return d && d !== 'F32' ? [d] : [];
}

/** `got` with each tensor the model holds in F32 and the update sends in a transport dtype relabelled F32 (for the layout check). */
export function inModelDtypes(got: WeightsLayout, model: WeightsLayout, transport: readonly DType[]): WeightsLayout {
  if (!transport.length) return got;
  const out = Object.create(null) as WeightsLayout;
  for (const k of Object.keys(got)) {
    const g = got[k]!, m = Object.hasOwn(model, k) ? model[k]! : undefined;
    Object.defineProperty(out, k, { value: m && m.dtype === 'F32' && transport.includes(g.dtype) ? { shape: g.shape, dtype: 'F32' } : g, enumerable: true });
  }
  return out;
}

/**
 * Largest model (bytes of safetensors) a study may have when its round is aggregated in memory: every update decoded
 * at once, which the coordinator affords for models up to the size of the former update cap. A strategy of
 * STREAMED_STRATEGIES streams from the blobs (stream-aggregate.ts, stream-server-opt.ts, stream-krum.ts, Cyclic's
 * copy of its one update) at any size, so does client-level DP-FedAvg with central noise (stream-dp.ts) and an
 * asynchronous study's FedBuff fold (stream-async-fold.ts), plain or under client-level DP; so does SecAgg+ over a
 * plain mean (FedAvg, FedProx): each masked input is a blob, unmasked block by block (stream-secagg.ts). SecAgg+ over
 * another strategy (a server optimiser, client-level DP) takes the unmasked sum in memory, for models up to this bound.
 */
export const IN_MEMORY_AGGREGATION_MAX_BYTES = 64 * 1024 * 1024;

/** Why a model of `bytes` cannot be aggregated for this study, or undefined when it can. */
export function aggregationSizeProblem(spec: StudySpec, bytes: number): string | undefined {
  if (bytes <= IN_MEMORY_AGGREGATION_MAX_BYTES) return undefined;
  const streamed = `${STREAMED_STRATEGIES.slice(0, -1).join(', ')} or ${STREAMED_STRATEGIES.at(-1)} (streamed from disk at any size)`;
  const strategy = createStrategy(spec.strategy.name, strategyParams(spec));
  const clientDp = spec.privacy?.dp?.level === 'client';
  if (spec.privacy?.secagg) {
    // Streamed from the masked blobs under a plain mean (secagg.ts secAggPlus: no client-level DP layer in between).
    if (strategy.elementwise?.kind === 'mean' && !clientDp) return undefined;
    return `the model is ${bytes} bytes; SecAgg+ over ${clientDp ? 'client-level differential privacy' : strategy.name} unmasks the whole sum in memory, which the coordinator does for models up to ${IN_MEMORY_AGGREGATION_MAX_BYTES} bytes: use FedAvg or FedProx (unmasked block by block at any size), or send a smaller model`;
  }
  // An asynchronous study's fold streams at any size (stream-async-fold.ts), plain or under client-level DP.
  if (spec.async) return undefined;
  // Client-level DP-FedAvg with central noise streams too (stream-dp.ts; privacyProblems admits FedAvg alone under it).
  if (STREAMED_STRATEGIES.includes(strategy.name)) return undefined;
  return `the model is ${bytes} bytes; ${strategy.name} aggregates whole updates in memory, which the coordinator does for models up to ${IN_MEMORY_AGGREGATION_MAX_BYTES} bytes: use ${streamed}, add SecAgg+, or send a smaller model`;
}

/**
 * Validates initial weights for a study: a well-formed file, at least one tensor, names and dtypes Setu carries,
 * finite values, the built-in layout when the study names a built-in family, tensor rules that each match a tensor,
 * and no integer tensor aggregated under DP or SecAgg+ (its change per round would dominate the clipped norm).
 * Returns the decoded weights; throws ModelProblem with the reason.
 */
export function checkInitialWeights(spec: StudySpec, bytes: Uint8Array, builtin?: Weights): Weights {
  let weights: Weights;
  try {
    const h = readSafetensorsHeader(bytes);
    if (h.tensors.length === 0) throw new ModelProblem('the initial weights hold no tensor');
    for (const t of h.tensors) {
      if (t.name.length > MAX_NAME) throw new ModelProblem(`tensor name "${t.name.slice(0, 40)}…" is longer than ${MAX_NAME} characters`);
      if (t.dtype === 'F64') throw new ModelProblem(`tensor "${t.name}" is F64; Setu aggregates in float32: save the model in float32 (model.float()), F16 or BF16`);
    }
    if (builtin) {
      const diff = layoutDifference(headerLayout(h), layoutOf(builtin));
      if (diff) throw new ModelProblem(`the initial weights do not fit the study's ${spec.model.kind} model: ${diff}`);
    }
    weights = decodeTensors(bytes, h);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new ModelProblem(`the initial weights are not valid safetensors: ${e.message}`);
    throw e;
  }
  const bad = firstNonFinite(weights);
  if (bad) throw new ModelProblem(`the initial weights: ${bad}`);
  const big = aggregationSizeProblem(spec, bytes.length);
  if (big) throw new ModelProblem(big);
  const rules = rulesOf(spec, Object.keys(weights));
  if (spec.privacy?.secagg) {
    // Each site's masked input is one 32-bit word per aggregated value (and one for its weight), uploaded in chunks
    // and bounded like an update by the study's maxUpdateBytes (routes/uploads.ts).
    const words = rules.aggregate.reduce((n, k) => n + weights[k]!.data.length, 0) + 1;
    const limit = maxUpdateBytesOf(spec);
    if (4 * words > limit) throw new ModelProblem(`/privacy/secagg: the model aggregates ${words - 1} values; a SecAgg+ masked input is 4 bytes per value (${4 * words} bytes) and is bounded like an update by maxUpdateBytes, ${limit} bytes: raise /maxUpdateBytes, or mark large tensors local or skip`);
  }
  if (spec.privacy?.dp || spec.privacy?.secagg) {
    const ints = rules.aggregate.filter((k) => !isFloatDType(dtypeOf(weights[k]!)));
    if (ints.length) throw new ModelProblem(`/tensorRules: integer tensor${ints.length > 1 ? 's' : ''} ${ints.map((k) => `"${k}"`).join(', ')} would be aggregated under ${spec.privacy.dp ? 'differential privacy' : 'SecAgg+'}, where a counter's change dominates the clipped update: mark ${ints.length > 1 ? 'them' : 'it'} local or skip`);
  }
  return weights;
}

/** The study's rules resolved against the model's tensor names (ModelProblem naming the rule when one matches nothing). */
export function rulesOf(spec: StudySpec, names: readonly string[]): ResolvedRules {
  try {
    return resolveTensorRules(names, spec.tensorRules);
  } catch (e) {
    throw new ModelProblem((e as Error).message);
  }
}

/** The layout every fit update of the study must have: the model's `aggregate` tensors. */
export function updateLayout(model: WeightsLayout, rules: ResolvedRules): WeightsLayout {
  const out = Object.create(null) as WeightsLayout;
  for (const k of rules.aggregate) Object.defineProperty(out, k, { value: model[k]!, enumerable: true });
  return out;
}

/** The part of the model the strategy sees: its `aggregate` tensors. */
export function aggregatePart(model: Weights, rules: ResolvedRules): Weights {
  return pickWeights(model, rules.aggregate);
}

/**
 * The next model version: the previous one with its aggregated tensors replaced, each rounded to the model's dtype
 * (F16/BF16 to nearest even, integer buffers to the nearest integer). Local and skipped tensors keep their values.
 * Throws when a rounded value is not finite (an F16 overflow, say): such a model is never committed.
 */
export function mergeAggregate(previous: Weights, aggregated: Weights, rules: ResolvedRules): Weights {
  const next = cloneWeights(previous);
  for (const k of rules.aggregate) {
    const prev = previous[k]!, a = aggregated[k];
    if (!a || a.data.length !== prev.data.length) throw new Error(`aggregate lacks tensor "${k}" or changed its size`);
    setTensor(next, k, roundToDtype({ shape: [...prev.shape], data: new Float32Array(a.data), ...(prev.dtype && prev.dtype !== 'F32' ? { dtype: prev.dtype } : {}) }));
  }
  const bad = firstNonFinite(next);
  if (bad) throw new Error(`aggregated model: ${bad} after rounding to its dtype`);
  return next;
}
