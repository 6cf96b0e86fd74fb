/**
 * A round-robin TCP balancer over local ports (node:net), as a plain TCP load balancer in front of several
 * coordinators: each new connection goes to the next backend that accepts it, and stays with it.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export function balancer(ports: number[]): Promise<{ port: number; close: () => Promise<void> }> {
  let next = 0;
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    const start = next++;
    const attempt = (k: number) => {
      if (k >= ports.length || client.destroyed) return client.destroy();
      const up = connect(ports[(start + k) % ports.length]!, '127.0.0.1');
      let connected = false;
      up.once('connect', () => {
        connected = true;
        open.add(up);
        client.pipe(up);
        up.pipe(client);
      });
      up.on('error', () => (connected ? client.destroy() : attempt(k + 1)));
      up.on('close', () => {
        open.delete(up);
        if (connected) client.destroy();
      });
      client.on('close', () => up.destroy());
    };
    attempt(0);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({
        port: typeof a === 'object' && a ? a.port : 0,
        close: () => new Promise<void>((r) => {
          for (const s of open) s.destroy();
          server.close(() => r());
        }),
      });
    }),
  );
}
