/**
 * How replies are written: with JSON.stringify, whatever their route's response schema says. Fastify would
 * otherwise serialise a reply through its schema (fast-json-stringify), which silently drops every field the schema
 * does not name and coerces the ones it types differently (a number into a string, a fraction into an integer):
 * a route that grows a field would lose it on the wire without a word. The schemas stay what they are for, the
 * documentation in `/openapi.json` (src/protocol/replies.ts, views.ts), and they are held to the truth: each
 * reply is checked against its route's schema for its status, and one that does not match is logged as an error
 * or, when `strict` (under `node --test`, see server.ts), answered 500 naming what differs, so a test that reaches
 * the route fails.
 */
import type { FastifyInstance } from 'fastify';
import { Kind, type TSchema } from '@sinclair/typebox';
import { checkValue } from '../../protocol/api.js';

export interface ReplyOptions {
  /** Answer a reply that does not match its schema with 500 instead of logging it. */
  strict: boolean;
}

export function replySerialization(app: FastifyInstance, o: ReplyOptions): void {
  app.setSerializerCompiler(({ schema, method, url, httpStatus }) => {
    // Only TypeBox schemas can be checked here; the API's are all TypeBox (a plain JSON schema is a mistake).
    if (!(Kind in (schema as object))) throw new Error(`${method} ${url}: the ${httpStatus} response schema is not a TypeBox schema (src/protocol/replies.ts)`);
    return (data: unknown) => {
      const problems = checkValue(schema as TSchema, data);
      if (problems.length) {
        const message = `the ${httpStatus} reply of ${method} ${url} does not match its schema: ${problems.join('; ')}`;
        if (o.strict) throw new Error(message);
        app.log.error({ route: url, status: httpStatus, problems }, message);
      }
      return JSON.stringify(data);
    };
  });
}
