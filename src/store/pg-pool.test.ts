import { it } from 'node:test';
import assert from 'node:assert/strict';
import { pgPoolMax } from './pg-pool.js';

it('the pool size is 20 unless SETU_PG_POOL_MAX says otherwise, and a bad value names the variable and the range', () => {
  assert.equal(pgPoolMax({}), 20);
  assert.equal(pgPoolMax({ SETU_PG_POOL_MAX: ' 32 ' }), 32);
  for (const bad of ['0', '-1', '2.5', 'many', '501']) assert.throws(() => pgPoolMax({ SETU_PG_POOL_MAX: bad }), /SETU_PG_POOL_MAX must be a whole number from 1 to 500/);
});
