/**
 * Text that comes from outside must be text both databases store as sent. PostgreSQL refuses a NUL in
 * `text` and `jsonb` (a 500 before this rule), and a lone UTF-16 surrogate (JSON `"\ud800"`, or one the
 * URL decoder leaves) has no UTF-8 form, so a driver would store something else than was signed. One rule
 * for every route instead of a patch per route: path parameters and query strings are checked when a
 * request arrives (before authentication, so nothing is looked up for them), JSON bodies when they are
 * parsed (every string and every key, at any depth). The answer is 400 naming where the bad text is.
 */
import type { FastifyInstance } from 'fastify';
import { HttpError } from '../auth.js';

// A NUL, a high surrogate not followed by a low one, or a low surrogate not preceded by a high one.
const BAD_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** The path (`body.spec.name`, `query.study`, …) of the first string or key that is not storable text. */
export function findBadText(value: unknown, root: string): string | undefined {
  // Iterative: a deeply nested body must not overflow the stack (that would be a 500 of its own).
  const stack: [unknown, string][] = [[value, root]];
  while (stack.length > 0) {
    const [v, at] = stack.pop()!;
    if (typeof v === 'string') {
      if (BAD_TEXT.test(v)) return at;
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${at}[${i}]`]);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) {
        if (BAD_TEXT.test(k)) return `${at} (a key)`;
        stack.push([child, `${at}.${k}`]);
      }
    }
  }
  return undefined;
}

export function refuseBadText(value: unknown, root: string): void {
  const at = findBadText(value, root);
  if (at !== undefined) throw new HttpError(400, 'invalid_text', `${at} holds a NUL character or a lone UTF-16 surrogate; text must be valid Unicode without NUL`);
}

export function inputRules(app: FastifyInstance): void {
  app.addHook('onRequest', async (req) => {
    refuseBadText(req.params, 'params');
    refuseBadText(req.query, 'query');
  });
}
