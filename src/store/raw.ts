/**
 * For tests that play someone who edits the database behind the coordinator's back (an attacker with the file
 * or a database login, a broken disk): a second, plain Kysely connection to the store at `url`, bypassing the
 * Store interface. Never used by the product; the Store has no way to hand out its own connection.
 */
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';

export async function openRawDatabase(url: string): Promise<Kysely<any>> {
  if (/^postgres(ql)?:\/\//.test(url)) {
    const pg = (await import('pg')).default;
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    // A connection the server drops while idle (the test database dropped WITH (FORCE) at the end of a suite) emits
    // 'error' on the pool; unheard, that would be an uncaught exception in whichever test happens to be running.
    pool.on('error', () => {});
    return new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  }
  const Database = (await import('libsql')).default;
  const raw = new Database(url.replace(/^sqlite:/, ''));
  raw.exec('PRAGMA busy_timeout=5000;');
  return new Kysely<any>({ dialect: new SqliteDialect({ database: raw as never }) });
}
