/**
 * Resolves a study's dataset key to this site's own files, as its config names them, and loads the
 * train/test split. Nothing here ever leaves the site.
 */
import { resolve } from 'node:path';
import type { Dataset } from '../learning/types.js';
import { loadHeartCenter } from './data/heart.js';
import type { SiteConfig } from './config.js';

export interface SiteData {
  train: Dataset;
  test: Dataset;
  description: string;
}

export function loadSiteDataset(cfg: SiteConfig, key: string): SiteData {
  const src = cfg.datasets[key];
  if (!src) throw new Error(`this site has no dataset "${key}" in its config (it has: ${Object.keys(cfg.datasets).join(', ')})`);
  switch (src.format) {
    case 'fed-heart-disease': {
      const d = loadHeartCenter(src.dir ? resolve(cfg.configDir, src.dir) : undefined, src.center);
      return { train: d.train, test: d.test, description: `Fed-Heart-Disease ${d.name}` };
    }
    case 'csv':
      throw new Error(`dataset "${key}": csv sources need the tabular loader`);
  }
}
