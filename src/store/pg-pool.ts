/**
 * How many PostgreSQL connections one coordinator keeps: SETU_PG_POOL_MAX when set (1–500), else 20. Eight were
 * too few: under a burst of signed requests (each three short statements: the key lookup, the nonce, the read)
 * the statements queued behind one another for seconds while PostgreSQL sat idle (`setu bench reads`, 1,000
 * concurrent reads). Every coordinator sharing a server takes up to this many of its max_connections (100 by default).
 */
export function pgPoolMax(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SETU_PG_POOL_MAX?.trim();
  if (!v) return 20;
  if (!/^[1-9][0-9]{0,2}$/.test(v) || Number(v) > 500) throw new Error(`SETU_PG_POOL_MAX must be a whole number from 1 to 500, got "${v}"`);
  return Number(v);
}
