/**
 * SQL of the trust layer (users, user invites, request nonces, declared cohorts, site keys): functions over a
 * Kysely handle or transaction, called only by the SQL store (sql-store.ts).
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, UsersTable } from './schema.js';

export type Db = Kysely<Database> | Transaction<Database>;
export type UserRow = UsersTable;

const num = (v: unknown) => (typeof v === 'number' ? v : Number(v));
const normUser = (r: UserRow): UserRow => ({ ...r, created_at: num(r.created_at) });

// ---- users ----
export async function createUser(db: Db, row: UserRow): Promise<void> {
  await db.insertInto('users').values(row).execute();
}

export async function getUser(db: Db, id: string): Promise<UserRow | undefined> {
  const r = await db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
  return r && normUser(r);
}

export async function getUserByName(db: Db, name: string): Promise<UserRow | undefined> {
  const r = await db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
  return r && normUser(r);
}

export async function listUsers(db: Db): Promise<UserRow[]> {
  return (await db.selectFrom('users').selectAll().orderBy('created_at').orderBy('name').execute()).map(normUser);
}

/** Compare-and-set: only an invited user becomes active, with the key it registers. */
export async function activateUser(db: Db, id: string, publicKey: string): Promise<boolean> {
  const r = await db.updateTable('users').set({ status: 'active', public_key: publicKey }).where('id', '=', id).where('status', '=', 'invited').executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Revokes a user (any status but revoked). False when there is no such user or it was already revoked. */
export async function revokeUser(db: Db, id: string): Promise<boolean> {
  const r = await db.updateTable('users').set({ status: 'revoked' }).where('id', '=', id).where('status', '!=', 'revoked').executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Revokes a site; false when there is no such site or it was already revoked. */
export async function revokeSite(db: Db, id: string): Promise<boolean> {
  const r = await db.updateTable('sites').set({ status: 'revoked' }).where('id', '=', id).where('status', '!=', 'revoked').executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Replaces an active user's key. */
export async function setUserPublicKey(db: Db, id: string, publicKey: string): Promise<boolean> {
  const r = await db.updateTable('users').set({ public_key: publicKey }).where('id', '=', id).where('status', '=', 'active').executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function setSitePublicKey(db: Db, id: string, publicKey: string): Promise<void> {
  await db.updateTable('sites').set({ public_key: publicKey }).where('id', '=', id).execute();
}

// ---- user invites ----
export async function createUserInvite(db: Db, row: { token_hash: string; user_id: string; created_at: number; expires_at: number }): Promise<void> {
  await db.insertInto('user_invites').values({ ...row, used_at: null }).execute();
}

/** Marks the invite used, atomically (a second use finds nothing); returns the invited user's id. */
export async function consumeUserInvite(db: Db, tokenHash: string, now: number): Promise<string | undefined> {
  const res = await db
    .updateTable('user_invites')
    .set({ used_at: now })
    .where('token_hash', '=', tokenHash)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst();
  if (Number(res.numUpdatedRows) !== 1) return undefined;
  return (await db.selectFrom('user_invites').select('user_id').where('token_hash', '=', tokenHash).executeTakeFirstOrThrow()).user_id;
}

// ---- request nonces ----
/**
 * Records a nonce; true when it is new, false when (keyId, nonce) was already there (a replay). One
 * INSERT … ON CONFLICT DO NOTHING against the primary key, so two concurrent replays cannot both win.
 */
export async function rememberNonce(db: Db, keyId: string, nonce: string, ts: number): Promise<boolean> {
  const r = await db
    .insertInto('request_nonces')
    .values({ key_id: keyId, nonce, ts })
    .onConflict((oc) => oc.columns(['key_id', 'nonce']).doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

export interface NonceToRemember {
  keyId: string;
  nonce: string;
  ts: number;
  publicKey: string;
}

/** Nonces per statement: SQLite allows 500 terms in a compound SELECT; each nonce is one. */
export const NONCES_PER_STATEMENT = 200;

/**
 * Records nonces of callers whose key the coordinator remembers (coordinator/auth.ts): each only while its key id is
 * an active site (`site-…`) or user whose registered key is still `publicKey`, so a key revoked, suspended or
 * replaced by any coordinator on the same database is refused at once; true for each nonce that was new. One
 * statement per owner table (sites, users): INSERT … SELECT from the rows of a UNION ALL joined to the owners that
 * are active with that key, ON CONFLICT DO NOTHING (two concurrent replays cannot both win), RETURNING what was new. A nonce twice in the same batch is new once: the later ones are replays. At most
 * NONCES_PER_STATEMENT items. One statement instead of one per request: a fifth of a tiny fit round's
 * statements at 1,000 sites (`setu bench live`, SETU_SQL_TRACE).
 */
export async function rememberNoncesIfActive(db: Db, items: readonly NonceToRemember[]): Promise<boolean[]> {
  const out = items.map(() => false);
  const first = new Map<string, number>();
  items.forEach((it, i) => {
    const k = `${it.keyId}\u0000${it.nonce}`;
    if (!first.has(k)) first.set(k, i);
  });
  for (const owner of ['sites', 'users'] as const) {
    const mine = [...first.values()].filter((i) => items[i]!.keyId.startsWith('site-') === (owner === 'sites'));
    if (!mine.length) continue;
    // Typed casts: PostgreSQL would take the bare parameters of a SELECT list for text (and ts is a bigint).
    const rows = sql.join(mine.map((i) => {
      const it = items[i]!;
      return sql`select cast(${it.keyId} as text) as key_id, cast(${it.nonce} as text) as nonce, cast(${it.ts} as bigint) as ts, cast(${it.publicKey} as text) as pk`;
    }), sql` union all `);
    // `where true`: SQLite reads the ON of an upsert after a join's ON otherwise. In key order: two batches that
    // hold the same nonce (a replay sent to two coordinators) would otherwise wait on each other's index entries in
    // opposite orders, a deadlock PostgreSQL ends by failing one whole batch (seen in the store suite).
    const r = await sql<{ key_id: string; nonce: string }>`insert into request_nonces (key_id, nonce, ts)
      select v.key_id, v.nonce, v.ts from (${rows}) as v join ${sql.table(owner)} as o on o.id = v.key_id and o.status = 'active' and o.public_key = v.pk
      where true order by v.key_id, v.nonce on conflict (key_id, nonce) do nothing returning key_id, nonce`.execute(db);
    for (const row of r.rows) {
      const i = first.get(`${row.key_id}\u0000${row.nonce}`);
      if (i !== undefined) out[i] = true;
    }
  }
  return out;
}

/** Forgets nonces with timestamps before `before`: requests that old are refused on their timestamp anyway. */
export async function pruneNonces(db: Db, before: number): Promise<number> {
  const r = await db.deleteFrom('request_nonces').where('ts', '<', before).executeTakeFirst();
  return Number(r.numDeletedRows);
}

// ---- declared cohorts ----
/** Replaces the cohort sizes a site declared for the named datasets (others stay). */
export async function declareCohorts(db: Db, siteId: string, sizes: Record<string, number>, now: number): Promise<void> {
  for (const [dataset, size] of Object.entries(sizes)) {
    await db
      .insertInto('site_cohorts')
      .values({ site_id: siteId, dataset, size, declared_at: now })
      .onConflict((oc) => oc.columns(['site_id', 'dataset']).doUpdateSet({ size, declared_at: now }))
      .execute();
  }
}

export async function cohortSize(db: Db, siteId: string, dataset: string): Promise<number | undefined> {
  const r = await db.selectFrom('site_cohorts').select('size').where('site_id', '=', siteId).where('dataset', '=', dataset).executeTakeFirst();
  return r ? num(r.size) : undefined;
}

export async function listCohorts(db: Db, siteId: string): Promise<Record<string, number>> {
  const rows = await db.selectFrom('site_cohorts').select(['dataset', 'size']).where('site_id', '=', siteId).orderBy('dataset').execute();
  return Object.fromEntries(rows.map((r) => [r.dataset, num(r.size)]));
}
