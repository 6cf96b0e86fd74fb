/**
 * Whether each site's trainer can serve a study, decided when the study starts from what the sites declared
 * (PUT /v1/agent/trainer), so an impossible combination is refused with its reason then, never at task time:
 * a custom model at a site with only the built-in trainer, FedProx or SCAFFOLD with a trainer that does not apply
 * them, sample-level DP-SGD with a trainer that does not run the agent's plan (an external trainer that does not
 * declare `dp-sgd`, a placed job), client-level DP or SecAgg+ or per-tensor rules at an agent that cannot apply them
 * around its trainer. Client-level DP and SecAgg+ are the agent's doing, not the trainer's: a current agent declares
 * them for every trainer (site/trainers/declaration.ts), so only an older agent lacks them.
 */
import type { StudySpec, TrainerDeclaration, TrainerFeature } from '../protocol/api.js';
import { strategyNeeds } from '../learning/strategies/registry.js';

/** A site that never declared (an agent older than the declaration) runs the built-in trainer, which does all of it. */
export const UNDECLARED: TrainerDeclaration = {
  kind: 'builtin',
  description: 'built-in (not declared by the agent)',
  models: ['logistic', 'mlp', 'cox'],
  features: ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'],
};

/** What a study asks of every site's trainer, each with why (for the refusal). */
export function requiredFeatures(spec: StudySpec): { feature: TrainerFeature; why: string }[] {
  const out: { feature: TrainerFeature; why: string }[] = [];
  for (const n of strategyNeeds(spec.strategy.name)) out.push({ feature: n, why: `strategy ${spec.strategy.name}` });
  if (spec.fit.proximalMu && !out.some((r) => r.feature === 'fedprox')) out.push({ feature: 'fedprox', why: `fit.proximalMu = ${spec.fit.proximalMu}` });
  const dp = spec.privacy?.dp;
  if (dp?.level === 'sample') out.push({ feature: 'dp-sgd', why: 'sample-level DP (privacy.dp.level: sample)' });
  if (dp?.level === 'client') out.push({ feature: 'dp-client', why: 'client-level DP (privacy.dp.level: client)' });
  if (spec.privacy?.secagg) out.push({ feature: 'secagg', why: 'SecAgg+ (privacy.secagg)' });
  if (spec.tensorRules?.some((r) => r.rule !== 'aggregate')) out.push({ feature: 'tensor-rules', why: 'local or skipped tensors (tensorRules)' });
  return out;
}

/** Every reason a participating site cannot serve the study; [] when all can. */
export function trainerProblems(spec: StudySpec, sites: { name: string; trainer: TrainerDeclaration | undefined }[]): string[] {
  // An analytics study trains nothing: every agent answers its queries (site/analytics-task.ts), whatever its trainer.
  if (spec.analytics) return [];
  const need = requiredFeatures(spec);
  const out: string[] = [];
  for (const s of sites) {
    const t = s.trainer ?? UNDECLARED;
    const who = `site ${s.name} (${t.description})`;
    if (!t.models.includes(spec.model.kind)) {
      out.push(spec.model.kind === 'custom'
        ? `${who} cannot train a custom model: it needs an external trainer (site.yaml trainer.kind: external)`
        : `${who} does not train the ${spec.model.kind} model (it trains: ${t.models.join(', ') || 'nothing'})`);
    }
    for (const n of need) {
      if (!t.features.includes(n.feature)) out.push(`${who} does not support ${n.feature}, which ${n.why} needs${remedy(n.feature, t)}`);
    }
  }
  return out;
}

/** What would make the combination work, for the refusal: said per feature and per kind of trainer. */
function remedy(feature: TrainerFeature, t: TrainerDeclaration): string {
  switch (feature) {
    case 'dp-sgd':
      if (t.kind === 'external') return ': DP-SGD runs inside the training, so the trainer must apply the plan the agent hands it and declare it (site.yaml trainer.features: [dp-sgd]; the Python SDK\'s setu_trainer.torch.dp_sgd), or the study can use client-level DP (privacy.dp.level: client), which the agent applies around any trainer';
      if (t.kind === 'placed') return ': a placed job does not run DP-SGD; client-level DP (privacy.dp.level: client) is applied by the agent to the job\'s result';
      return '';
    case 'dp-client':
    case 'secagg':
    case 'tensor-rules':
      return t.kind === 'builtin' ? '' : ': the site\'s agent does not apply it around its trainer (an agent older than agent-side privacy for every trainer: upgrade it)';
    case 'fedprox':
      return t.kind === 'external' ? ': the trainer adds the proximal term itself; declare it in site.yaml trainer.features: [fedprox] once it does' : '';
    default:
      return '';
  }
}
