/** Builds the model a ModelSpec names. The single place that maps spec kinds to implementations. */
import type { Model, ModelSpec } from '../types.js';
import { LogisticRegression } from './logistic.js';
import { Mlp } from './mlp.js';
import { Cox } from './cox.js';

export function createModel(spec: ModelSpec): Model {
  switch (spec.kind) {
    case 'logistic':
      return new LogisticRegression(spec.inputDim);
    case 'mlp':
      return new Mlp(spec);
    case 'cox':
      return new Cox(spec);
    case 'custom':
      throw new Error(`model "${spec.name}" is a custom model, defined by its initial weights: only a site's own trainer (the external-trainer contract) trains it`);
    default:
      throw new Error(`unknown model kind "${(spec as { kind: string }).kind}"`);
  }
}
