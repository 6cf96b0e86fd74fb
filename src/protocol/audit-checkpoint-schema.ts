/**
 * The wire shape of a signed audit checkpoint (audit-checkpoint.ts signs and checks it). Apart, with no Node
 * imports, because every task carries one (api.ts) and the dashboard type-checks the API's types in a browser
 * configuration.
 */
import { Type, type Static } from '@sinclair/typebox';

export const AuditCheckpointSchema = Type.Object(
  {
    /** Entries in the log (the seq of the newest); 0 for an empty log. */
    count: Type.Integer({ minimum: 0 }),
    /** Hash of entry `count` (64 zeros for an empty log). */
    head: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    /** When the coordinator signed it, ms since the epoch. */
    ts: Type.Integer({ minimum: 0 }),
    /** The coordinator's raw Ed25519 public key, base64url. */
    publicKey: Type.String({ minLength: 1, maxLength: 200 }),
    sig: Type.String({ pattern: '^[A-Za-z0-9_-]{86}$' }),
  },
  { additionalProperties: false },
);
export type AuditCheckpoint = Static<typeof AuditCheckpointSchema>;
