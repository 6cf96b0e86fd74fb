/**
 * What this site's trainer can do, as the agent declares it to the coordinator (PUT /v1/agent/trainer) when it
 * starts, so that a study the site cannot serve is refused when it starts, with the reason, not at task time.
 * The declaration states what this agent really does around each trainer, not what it hopes to.
 */
import type { TrainerDeclaration, TrainerFeature } from '../../protocol/api.js';
import type { SiteConfig } from '../config.js';

export function trainerDeclaration(cfg: SiteConfig): TrainerDeclaration {
  const t = cfg.trainer;
  if (t?.kind === 'external') {
    // The agent keeps local tensors and leaves skipped ones out for any trainer; FedProx is the trainer's own
    // doing. DP and SecAgg+ around an external trainer come with the agent-side privacy for every trainer (issue 11
    // §3); until then this agent refuses them, so it does not declare them.
    const features: TrainerFeature[] = ['evaluate', 'tensor-rules', ...(t.features?.includes('fedprox') ? (['fedprox'] as const) : [])];
    return { kind: 'external', description: `external (${t.command.join(' ')})`.slice(0, 200), models: t.models ?? ['custom'], features };
  }
  if (cfg.compute?.mode === 'placed') {
    // A placed job runs the built-in trainer; this agent masks its result for SecAgg+ but runs no DP around it.
    return { kind: 'placed', description: 'built-in, placed on shared compute', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'secagg', 'tensor-rules'] };
  }
  return { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'] };
}
