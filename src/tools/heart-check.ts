/**
 * For the tests of every source (a converted heart form must hold the same numbers): an extracted heart table, through the CSV path's loader and the heart
 * study's schema, must equal the bundled fed-heart-disease loader bit for bit (rows, features, labels).
 */
import assert from 'node:assert/strict';
import { HEART_CENTERS, loadHeartCenter, type HeartCenter } from '../site/data/heart.js';
import { loadTabular, normaliseTabular } from '../site/data/tabular.js';
import { HEART_DATA_SCHEMA } from './heart-csv.js';
import { asCsvTable, type Extraction } from '../datasources/extract.js';

export function assertHeartIdentical(ex: Extraction, c: HeartCenter): void {
  const want = loadHeartCenter(undefined, c);
  const got = normaliseTabular(loadTabular(asCsvTable(ex.table, 'x'), HEART_DATA_SCHEMA), HEART_DATA_SCHEMA);
  for (const part of ['train', 'test'] as const) {
    assert.equal(got[part].n, want[part].n, `${HEART_CENTERS[c]} ${part} rows`);
    assert.deepEqual(Array.from(got[part].x), Array.from(want[part].x), `${HEART_CENTERS[c]} ${part} features`);
    assert.deepEqual(Array.from(got[part].y), Array.from(want[part].y), `${HEART_CENTERS[c]} ${part} labels`);
  }
}
