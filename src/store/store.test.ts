/**
 * The Store interface's one shared suite (store-suite.ts) on every backend: in-memory, SQLite (a file in a temp
 * dir) and PostgreSQL (a throw-away database on the local server; required under CI).
 */
import { STORE_BACKENDS } from '../testing/backends.js';
import { storeSuite } from './store-suite.js';

for (const b of STORE_BACKENDS) storeSuite(b);
