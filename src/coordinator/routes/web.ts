/**
 * The dashboard and the API description. `registerOpenApi` must run before any route is declared:
 * @fastify/swagger learns routes through an onRoute hook, so routes declared before it stay undocumented.
 * `webRoutes` serves the built dashboard (Vite's output in dist/web/app) at `/` and the OpenAPI document
 * at `/openapi.json`. The dashboard is a client of the public API like the CLI: it gets no private routes.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import fastifyStatic from '@fastify/static';
import { OPTIONAL_BODY } from '../../protocol/replies.js';

/** dist/coordinator/routes/web.js → dist/web/app (where `vite build --config src/web/vite.config.ts` writes). */
export const DASHBOARD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'app');

const openApiOptions = {
  openapi: {
    openapi: '3.0.3',
    info: {
      title: 'Setu coordinator API',
      version: '1',
      description:
        'The public API of a Setu coordinator. Site agents, the `setu` CLI and the dashboard use only these routes. ' +
        'Callers sign each request with their Ed25519 key (headers x-setu-key-id, x-setu-timestamp, x-setu-nonce, x-setu-signature; ' +
        'see src/protocol/signing.ts). Errors are JSON {error, message} with a 4xx status.',
    },
  },
};

type Doc = { paths?: Record<string, Record<string, { requestBody?: { required?: boolean; content?: Record<string, { schema?: Record<string, unknown> }> } }>> };

/**
 * What Fastify's schemas cannot say by themselves (src/protocol/replies.ts): a raw body, which validates as the
 * Buffer the parser hands over, is a `string`/`binary` on the wire; a body marked optional is not required.
 */
export function documentBodies(doc: Doc): Doc {
  for (const ops of Object.values(doc.paths ?? {})) {
    for (const op of Object.values(ops)) {
      const content = op.requestBody?.content;
      if (!content) continue;
      for (const [type, media] of Object.entries(content)) {
        const { contentMediaType, type: _t, ...rest } = media.schema ?? {};
        if (contentMediaType === 'application/octet-stream') content[type] = { schema: { ...rest, type: 'string', format: 'binary' } };
      }
      if (Object.values(content).some((m) => m.schema?.['$comment'] === OPTIONAL_BODY)) op.requestBody!.required = false;
    }
  }
  return doc;
}

export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, { ...openApiOptions, transformObject: (d) => documentBodies((d as unknown as { openapiObject: Doc }).openapiObject) as never });
}
// Registered with app.register(registerOpenApi): skip-override (what fastify-plugin sets) puts swagger's
// decorator and onRoute hook on the caller's instance instead of a new encapsulated child.
(registerOpenApi as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export interface WebOptions {
  /** Where the built dashboard lives (default: dist/web/app beside this module). */
  dashboardDir?: string;
}

export async function webRoutes(app: FastifyInstance, opts: WebOptions = {}): Promise<void> {
  app.get('/openapi.json', { schema: { hide: true } as never }, async () => app.swagger());
  const root = opts.dashboardDir ?? DASHBOARD_DIR;
  if (existsSync(join(root, 'index.html'))) {
    // index.html must not be cached (it names the hashed bundles of the current build); the bundles may be.
    await app.register(fastifyStatic, {
      root,
      prefix: '/',
      index: ['index.html'],
      wildcard: false,
      schemaHide: true,
      // Our own cache-control below; @fastify/static's default (max-age=0) would override it.
      cacheControl: false,
      setHeaders(reply, path) {
        reply.header('cache-control', path.endsWith('.html') ? 'no-cache' : 'public, max-age=31536000, immutable');
      },
    });
  } else {
    // A coordinator built with `tsc` alone (no Vite step) still answers `/` with what to do about it.
    app.get('/', { schema: { hide: true } as never }, async (_req, reply) =>
      reply.status(503).type('text/plain; charset=utf-8').send(`The dashboard is not built (no ${join(root, 'index.html')}). Run \`npm run build\`.\n`),
    );
  }
}
