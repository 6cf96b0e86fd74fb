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
    // Around any external trainer the agent keeps local tensors and leaves skipped ones out, clips and noises the
    // update for client-level DP and masks it for SecAgg+ (agent.ts releaseBody): the trainer need not declare them.
    // FedProx and sample-level DP-SGD happen inside the training, so only a trainer that says it applies them has them.
    const own = (['fedprox', 'dp-sgd'] as const).filter((f) => t.features?.includes(f));
    const features: TrainerFeature[] = ['evaluate', 'tensor-rules', 'dp-client', 'secagg', ...own];
    return { kind: 'external', description: `external (${t.command.join(' ')})`.slice(0, 200), models: t.models ?? ['custom'], features };
  }
  if (cfg.compute?.mode === 'placed') {
    // A placed job runs the built-in trainer and returns its result here: this agent clips, noises and masks it as
    // for any trainer, but DP-SGD would have to run inside the job, which it does not.
    return { kind: 'placed', description: 'built-in, placed on shared compute', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'dp-client', 'secagg', 'tensor-rules'] };
  }
  return { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'] };
}
