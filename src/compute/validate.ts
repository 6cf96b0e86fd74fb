// Validation of what comes from outside (registration files, API bodies): bad input gets an error that names every
// problem and its path, and nothing is returned half-checked.
import { FormatRegistry, type TSchema, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ComputeResource, TrainingJob } from './types.js';

if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set('date-time', (s) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(s)
    && !Number.isNaN(Date.parse(s)));
}

export class ComputeValidationError extends Error {
  constructor(what: string, readonly problems: string[]) {
    super(`invalid ${what}:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ComputeValidationError';
  }
}

function check<S extends TSchema>(schema: S, what: string, input: unknown): Static<S> {
  if (Value.Check(schema, input)) return input as Static<S>;
  const problems = [...Value.Errors(schema, input)].map((e) => `${e.path || '/'}: ${e.message}`);
  throw new ComputeValidationError(what, [...new Set(problems)]);
}

export function parseResource(input: unknown): ComputeResource {
  const r = check(ComputeResource, 'compute resource', input);
  const problems: string[] = [];
  const totalGpus = r.capacity.gpus.reduce((n, g) => n + g.count, 0);
  const frees = [
    ...(r.availability?.now ? [{ at: '/availability/now', free: r.availability.now }] : []),
    ...(r.availability?.windows ?? []).map((w, i) => ({ at: `/availability/windows/${i}`, free: w.free })),
  ];
  for (const { at, free } of frees) {
    if (free.cpus > r.capacity.cpus) problems.push(`${at}/cpus: ${free.cpus} free exceeds capacity ${r.capacity.cpus}`);
    if (free.gpus > totalGpus) problems.push(`${at}/gpus: ${free.gpus} free exceeds capacity ${totalGpus}`);
    if (free.ramGiB > r.capacity.ramGiB) problems.push(`${at}/ramGiB: ${free.ramGiB} free exceeds capacity ${r.capacity.ramGiB}`);
  }
  (r.availability?.windows ?? []).forEach((w, i) => {
    if (Date.parse(w.from) >= Date.parse(w.to)) problems.push(`/availability/windows/${i}: 'from' must be before 'to'`);
  });
  if (r.scheduler === 'kubernetes' && !r.schedulerConfig?.image) {
    problems.push('/schedulerConfig/image: a Kubernetes resource needs a container image');
  }
  if (r.schedulerConfig?.gpuGres !== undefined && r.scheduler !== 'slurm') {
    problems.push(`/schedulerConfig/gpuGres: a Slurm setting (the GRES name GPUs are allocated under); this resource's scheduler is ${r.scheduler}`);
  }
  const types = r.capacity.gpus.map((g) => g.gresType).filter((t): t is string => t !== undefined);
  const twice = types.filter((t, i) => types.indexOf(t) !== i);
  if (twice.length) problems.push(`/capacity/gpus: gresType ${[...new Set(twice)].join(', ')} is listed more than once; list each GPU type once with its count`);
  if (problems.length) throw new ComputeValidationError('compute resource', problems);
  return r;
}

export function parseTrainingJob(input: unknown): TrainingJob {
  return check(TrainingJob, 'training job', input);
}
