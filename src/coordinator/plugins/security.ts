/**
 * Security headers on every answer (@fastify/helmet), and no caching of API answers.
 *
 * The Content-Security-Policy is the narrowest one the Vite-built dashboard works under (checked in Chromium
 * by src/web/dashboard.browser.test.ts, which fails on any CSP violation): its script and stylesheet are
 * files from this origin, it talks to this origin only (fetch and EventSource), its only image is the
 * `data:` favicon, and Chart.js draws on canvases. No inline script or style attribute is allowed, nothing
 * may frame it, and forms and `<base>` cannot point elsewhere. `upgrade-insecure-requests` is left out: a
 * coordinator on plain HTTP (loopback, a hospital LAN) would otherwise break its own dashboard.
 *
 * API answers (`/v1/…`, `/metrics`, the probes, `/openapi.json`) carry `Cache-Control: no-store`: they hold
 * study state and must not sit in a browser's or a proxy's cache. The dashboard's files keep their own
 * caching (src/coordinator/routes/web.ts).
 */
import helmet from '@fastify/helmet';
import type { FastifyInstance } from 'fastify';

export const CONTENT_SECURITY_POLICY = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    connectSrc: ["'self'"],
    fontSrc: ["'self'"],
    manifestSrc: ["'self'"],
    baseUri: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    objectSrc: ["'none'"],
  },
};

const API = /^\/(v1\/|metrics$|healthz$|readyz$|openapi\.json$)/;

export async function securityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, {
    contentSecurityPolicy: CONTENT_SECURITY_POLICY,
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    // Cross-origin isolation headers the dashboard does not need and a reverse proxy may have to set itself.
    crossOriginEmbedderPolicy: false,
  });
  app.addHook('onSend', async (req, reply, payload) => {
    if (API.test(req.url.split('?')[0]!)) reply.header('cache-control', 'no-store');
    return payload;
  });
}
