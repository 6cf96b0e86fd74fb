/** `setu bench <name>`: every benchmark reports a ratio against a baseline measured in the same run. */
import { UsageError } from '../args.js';

export const BENCHES: Record<string, () => Promise<{ main(argv: string[]): Promise<number> }>> = {
  'flamby-heart': () => import('./flamby-heart.js'),
  aggregate: () => import('./aggregate.js'),
  peer: () => import('./peer.js'),
  secagg: () => import('./secagg.js'),
  'dp-heart': () => import('./dp-heart.js'),
  csv: () => import('./csv.js'),
  sdk: () => import('./sdk.js'),
  reads: () => import('./reads.js'),
  'async-heart': () => import('./async-heart.js'),
  'large-model': () => import('./large-model.js'),
  'big-train': () => import('./big-train.js'),
  live: () => import('./live.js'),
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const load = name ? BENCHES[name] : undefined;
  if (!load) throw new UsageError(`setu bench <${Object.keys(BENCHES).join('|')}> [options]`);
  return (await load()).main(rest);
}
