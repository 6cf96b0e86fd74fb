/**
 * Test helper: a private PostgreSQL cluster in a temporary directory on a free port, so a test can do to its
 * server what an operator's bad day does (SIGKILL the postmaster, stop it for a while, start it again) without
 * touching the shared server. Built from the Debian server binaries (/usr/lib/postgresql/<v>/bin); initdb
 * refuses to run as root, so as root the cluster runs as the `postgres` system user.
 *
 * `privateClusterSkipReason()` names what is missing (binaries, a non-root user) so a test can skip saying why.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0]!, 'bin') : undefined;
}

function postgresUser(): { uid: number; gid: number } | undefined {
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  return r.status === 0 && g.status === 0 ? { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) } : undefined;
}

const asRoot = () => process.getuid?.() === 0;

export function privateClusterSkipReason(): string | false {
  if (!binDir()) return 'no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian package postgresql)';
  if (asRoot() && !postgresUser()) return 'running as root and there is no postgres system user for initdb';
  if (asRoot() && !existsSync('/usr/sbin/runuser') && !existsSync('/sbin/runuser')) return 'running as root without runuser to drop to the postgres user';
  return false;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export interface PrivateCluster {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  /** The postmaster's pid (from postmaster.pid). */
  postmasterPid(): number;
  /** pg_ctl start, waiting until it accepts connections; retried while a killed server's backends still hold its memory. */
  start(): Promise<void>;
  /** pg_ctl stop -m fast. */
  stop(): void;
  /** Stops the server and removes its directory. */
  destroy(): void;
}

export async function startPrivateCluster(): Promise<PrivateCluster> {
  const bin = binDir()!;
  const dir = mkdtempSync(join(tmpdir(), 'setu-pgc-'));
  const data = join(dir, 'data');
  const user = asRoot() ? postgresUser() : undefined;
  if (user) {
    chmodSync(dir, 0o755);
    chownSync(dir, user.uid, user.gid);
  }
  const run = (cmd: string, args: string[]) => {
    const [file, argv] = user ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    return execFileSync(file as string, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  };
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40`;
  const c: PrivateCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    postmasterPid: () => Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]),
    async start() {
      const until = Date.now() + 30_000;
      for (;;) {
        try {
          run('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'server.log'), '-w', '-t', '20', 'start']);
          return;
        } catch (e) {
          if (Date.now() > until) throw new Error(`private PostgreSQL did not start: ${(e as { stderr?: string }).stderr ?? e}\n${readFileSync(join(dir, 'server.log'), 'utf8').slice(-2000)}`);
          await new Promise((r) => setTimeout(r, 300));
        }
      }
    },
    stop() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } catch {
        // already down
      }
    },
    destroy() {
      c.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await c.start();
  return c;
}
