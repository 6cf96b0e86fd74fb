/**
 * A coordinator's identity as the round engine's leases name it, kept in its data directory
 * (`<dataDir>/instance.id`, mode 600, made on first start). A coordinator restarted on the same data
 * directory is the same instance: it holds its predecessor's leases at once instead of waiting them out,
 * while coordinators with their own data directories (sharing one PostgreSQL) still respect each other's.
 * Two processes must never run on one data directory at the same time (they would both hold the leases);
 * SQLite's single file makes that a mistake already.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const INSTANCE_ID_FILE = 'instance.id';

const VALID = /^coord-[0-9a-f]{16}$/;

export function ensureInstanceId(dataDir: string): string {
  const file = join(dataDir, INSTANCE_ID_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const id = readFileSync(file, 'utf8').trim();
      if (!VALID.test(id)) throw new Error(`${file} does not hold a coordinator instance id (coord- and 16 hex digits); remove it to make a new one`);
      return id;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    try {
      // 'wx': two processes starting at once on one directory agree on the first file written.
      writeFileSync(file, `coord-${randomBytes(8).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  throw new Error(`cannot read or create ${file}`);
}
