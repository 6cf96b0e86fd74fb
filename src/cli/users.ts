/**
 * `setu user …`: identities of people.
 *   setu user add --name N --role consortium_admin|study_lead|site_admin|auditor [--institution I] [--ttl-hours H]   (admin)
 *   setu user enrol --token <invite> [--key-file F] [--coordinator URL]   makes the key pair locally, registers the public key
 *   setu user list | revoke <id or name> | whoami
 * The private key never leaves the user's machine; every later command signs with it (see args.ts operatorTarget).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { writeKeyFile } from '../coordinator/auth.js';
import type { UserEnrolResponse, UserInviteResponse } from '../protocol/api.js';
import { UsageError, operatorClient, operatorFlags, parse, readCaFile, tokenFrom, userKeyFile, writeTokenFile } from './args.js';
import { table } from './table.js';
import { ROLES } from '../governance/roles.js';

/** The roles a person can have (`site` is a site agent's). */
const PEOPLE_ROLES = ROLES.filter((r) => r !== 'site');

const out = (s: string) => process.stdout.write(s + '\n');

export async function userCommand(sub: string | undefined, argv: string[]): Promise<number> {
  if (sub === 'add') {
    const { values } = parse(argv, { ...operatorFlags, name: { type: 'string' }, role: { type: 'string' }, institution: { type: 'string' }, 'ttl-hours': { type: 'string' }, out: { type: 'string' } });
    if (!values.name || !values.role) throw new UsageError(`setu user add --name N --role ${PEOPLE_ROLES.join('|')} [--institution I]`);
    if (!(PEOPLE_ROLES as readonly string[]).includes(values.role)) throw new UsageError(`--role must be one of ${PEOPLE_ROLES.join(', ')}, got "${values.role}"`);
    const ttl = values['ttl-hours'] === undefined ? undefined : Number(values['ttl-hours']);
    if (ttl !== undefined && !(ttl > 0)) throw new UsageError('--ttl-hours must be a positive number');
    const r = await operatorClient(values).json<UserInviteResponse>('POST', '/v1/users', {
      name: values.name,
      role: values.role,
      ...(values.institution ? { institution: values.institution } : {}),
      ...(ttl !== undefined ? { ttlHours: ttl } : {}),
    });
    if (values.out) writeTokenFile(values.out, r.token);
    if (values.json) out(JSON.stringify(values.out ? { ...r, token: undefined, tokenFile: values.out } : r));
    else if (values.out) out(`user ${r.name} (${r.userId}, ${r.role}) invited; the one-use invite (expires ${new Date(r.expiresAt).toISOString()}) is in ${values.out} (mode 600): send it to them, and they run: setu user enrol --token-file <that file>`);
    else out(`user ${r.name} (${r.userId}, ${r.role}) invited; one use, expires ${new Date(r.expiresAt).toISOString()}:\n${r.token}\n\nthey run: setu user enrol --token ${r.token}`);
    return 0;
  }
  if (sub === 'enrol') {
    const { values } = parse(argv, { coordinator: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' }, 'key-file': { type: 'string' }, 'ca-file': { type: 'string' }, json: { type: 'boolean' } });
    const token = tokenFrom(values);
    if (!token) throw new UsageError('setu user enrol --token <invite> (or --token-file F) [--key-file F]');
    const file = values['key-file'] ?? process.env.SETU_KEY_FILE ?? userKeyFile();
    if (existsSync(file)) throw new UsageError(`${file} exists; pass --key-file to write the new key elsewhere`);
    const url = values.coordinator ?? process.env.SETU_COORDINATOR ?? 'http://127.0.0.1:7070';
    const keys = generateSigningKeys();
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const caFile = values['ca-file'] ?? process.env.SETU_CA_FILE;
    const http = new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000, finalServerErrors: true, ...(caFile ? { ca: readCaFile(caFile, values['ca-file'] ? '--ca-file' : 'SETU_CA_FILE') } : {}) });
    const r = await http.json<UserEnrolResponse>('POST', '/v1/users/enrol', { token, publicKey: keys.publicKeyRaw });
    writeKeyFile(file, { keyId: r.userId, privateKey: keys.privateKeyPem, publicKey: keys.publicKeyRaw, coordinator: url });
    out(values.json ? JSON.stringify({ ...r, keyFile: file }) : `enrolled as ${r.name} (${r.userId}, ${r.role}); private key in ${file} (mode 600)`);
    return 0;
  }
  if (sub === 'list') {
    const { values } = parse(argv, operatorFlags);
    const users = await operatorClient(values).json<{ id: string; name: string; role: string; institution: string | null; status: string }[]>('GET', '/v1/users');
    out(values.json ? JSON.stringify(users) : table(['user', 'id', 'role', 'institution', 'status'], users.map((u) => [u.name, u.id, u.role, u.institution ?? '', u.status]), ['l', 'l', 'l', 'l', 'l']));
    return 0;
  }
  if (sub === 'revoke') {
    const { values, positionals } = parse(argv, operatorFlags, true);
    if (!positionals[0]) throw new UsageError('setu user revoke <user-id or name>');
    const r = await operatorClient(values).json<{ id: string; name: string }>('POST', `/v1/users/${encodeURIComponent(positionals[0])}/revoke`, {});
    out(values.json ? JSON.stringify(r) : `revoked user ${r.name} (${r.id}); their key is refused from now on`);
    return 0;
  }
  if (sub === 'whoami') {
    const { values } = parse(argv, operatorFlags);
    const r = await operatorClient(values).json<Record<string, unknown>>('GET', '/v1/whoami');
    out(values.json ? JSON.stringify(r) : `${r['name']} (${r['id']}), ${r['role']}`);
    return 0;
  }
  throw new UsageError(`unknown: setu user ${sub ?? ''} (add, enrol, list, revoke, whoami)`);
}
