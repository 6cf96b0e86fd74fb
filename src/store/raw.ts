/**
 * For tests that play someone who edits the database behind the coordinator's back (an attacker with the file
 * or a database login, a broken disk): a second, plain Kysely connection to the store at `url`, bypassing the
 * Store interface. Never used by the product; the Store has no way to hand out its own connection.
 */
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';

export async function openRawDatabase(url: string): Promise<Kysely<any>> {
  if (/^postgres(ql)?:\/\//.test(url)) {
    const pg = (await import('pg')).default;
    return new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  }
  const Database = (await import('libsql')).default;
  const raw = new Database(url.replace(/^sqlite:/, ''));
  raw.exec('PRAGMA busy_timeout=5000;');
  return new Kysely<any>({ dialect: new SqliteDialect({ database: raw as never }) });
}
