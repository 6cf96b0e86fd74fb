/**
 * `setu audit …`: the tamper-evident log, for auditors and consortium admins.
 *   setu audit verify                    fetch every entry and recompute hashes, signatures and links HERE
 *                                        (the coordinator's own verdict is not trusted); names the first bad entry
 *   setu audit verify --file log.jsonl   verify an export offline, against its header's head and count
 *   setu audit export --out log.jsonl    write the log (JSON Lines) for an external auditor
 *   setu audit list [--json]             the entries as a table
 * --public-key RAW pins the coordinator's key (else the key the coordinator or the export names is used).
 * Exit status: 0 intact, 1 tampered (or refused), 2 usage.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { AuditError, parseExport, verifyChain, type AuditEntry, type ChainVerdict } from '../governance/audit-chain.js';
import { UsageError, operatorClient, operatorFlags, parse } from './args.js';
import { table } from './table.js';

const out = (s: string) => process.stdout.write(s + '\n');

function report(v: ChainVerdict, what: string, json: boolean | undefined): number {
  if (json) out(JSON.stringify(v));
  else if (v.ok) out(`${what}: intact: ${v.count} entries, head ${v.head}`);
  else out(`${what}: TAMPERED: first bad entry at index ${v.firstBad.index}${v.firstBad.seq !== null ? ` (seq ${v.firstBad.seq})` : ''}: ${v.reason}`);
  return v.ok ? 0 : 1;
}

export async function auditCommand(sub: string | undefined, argv: string[]): Promise<number> {
  const { values } = parse(argv, { ...operatorFlags, file: { type: 'string' }, out: { type: 'string' }, 'public-key': { type: 'string' } });
  if (sub === 'verify') {
    if (values.file) {
      let parsed;
      try {
        parsed = parseExport(readFileSync(values.file, 'utf8'));
      } catch (e) {
        if (e instanceof AuditError) {
          out(`${values.file}: TAMPERED or not an audit export: ${e.message}`);
          return 1;
        }
        throw new UsageError(`cannot read ${values.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      const key = values['public-key'] ?? parsed.publicKey;
      if (values['public-key'] && values['public-key'] !== parsed.publicKey) {
        out(`${values.file}: TAMPERED: the export names public key ${parsed.publicKey}, not the pinned ${values['public-key']}`);
        return 1;
      }
      return report(verifyChain(parsed.entries, key, { expected: { count: parsed.count, head: parsed.head } }), values.file, values.json);
    }
    const r = await operatorClient(values).json<{ publicKey: string; count: number; head: string; entries: AuditEntry[] }>('GET', '/v1/audit');
    if (values['public-key'] && values['public-key'] !== r.publicKey) {
      out(`the coordinator signs with ${r.publicKey}, not the pinned ${values['public-key']}`);
      return 1;
    }
    return report(verifyChain(r.entries, values['public-key'] ?? r.publicKey, { expected: { count: r.count, head: r.head } }), 'audit log', values.json);
  }
  if (sub === 'export') {
    if (!values.out) throw new UsageError('setu audit export --out file.jsonl');
    const res = await operatorClient(values).request('GET', '/v1/audit/export');
    writeFileSync(values.out, res.body);
    const p = parseExport(Buffer.from(res.body).toString('utf8'));
    out(values.json ? JSON.stringify({ file: values.out, count: p.count, head: p.head, publicKey: p.publicKey }) : `wrote ${p.count} entries to ${values.out}; head ${p.head}; coordinator key ${p.publicKey}`);
    return 0;
  }
  if (sub === 'list') {
    const r = await operatorClient(values).json<{ entries: AuditEntry[] }>('GET', '/v1/audit');
    out(values.json ? JSON.stringify(r.entries) : table(['seq', 'time', 'actor', 'kind', 'subject'], r.entries.map((e) => [e.seq, new Date(e.ts).toISOString(), e.actor, e.kind, e.subject]), ['r', 'l', 'l', 'l', 'l']));
    return 0;
  }
  throw new UsageError(`unknown: setu audit ${sub ?? ''} (verify, export, list)`);
}
