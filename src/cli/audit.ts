/**
 * `setu audit …`: the tamper-evident log, for auditors and consortium admins.
 *   setu audit verify                    fetch every entry (page by page) and recompute hashes, signatures and links
 *                                        HERE (the coordinator's own verdict is not trusted); names the first bad entry
 *   setu audit verify --file log.jsonl   verify an export offline: its signed header, then the chain against it
 *   … --witness FILE (repeatable)        also check the log against each witness: a site's audit-witness.json, a
 *                                        saved checkpoint or an earlier export. A deleted tail, a deleted log or a
 *                                        rewound head disagrees with a witness, which is named
 *   … --save-witness FILE                after an intact verify, keep the verified checkpoint in FILE (a witness of
 *                                        your own for the next verify; it never goes back)
 *   An online verify also keeps a witness of its own in $SETU_HOME/audit-witnesses/<key>.json (default ~/.setu), and
 *   checks the log against it the next time: the auditor's machine witnesses every verify (--ephemeral: not this one).
 *   setu audit export --out log.jsonl    write the log (JSON Lines, signed header) for an external auditor
 *   setu audit list [--json]             the entries as a table (every page)
 * --public-key RAW pins the coordinator's key (else the key the coordinator or the export names is used).
 * Exit status: 0 intact, 1 tampered (or refused), 2 usage.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { AuditError, parseExport, verifyChain, verifyExport, type AuditEntry, type ChainVerdict } from '../governance/audit-chain.js';
import { checkpointAgainstLog, checkpointProblem, parseWitness, witnessSee, type AuditCheckpoint, type WitnessFile } from '../protocol/audit-checkpoint.js';
import { writeAtomic } from '../site/state.js';
import { UsageError, operatorClient, operatorFlags, parse } from './args.js';
import { table } from './table.js';

const out = (s: string) => process.stdout.write(s + '\n');

interface AuditPage { publicKey: string; count: number; head: string; checkpoint: AuditCheckpoint; entries: AuditEntry[]; next: number | null }

/** Every entry, page by page; the first page's signed checkpoint says how many there must be at least. */
async function fetchAll(client: ReturnType<typeof operatorClient>): Promise<{ first: AuditPage; entries: AuditEntry[] }> {
  const first = await client.json<AuditPage>('GET', '/v1/audit');
  const entries = [...first.entries];
  let next = first.next;
  while (next !== null && next !== undefined) {
    const p = await client.json<AuditPage>('GET', `/v1/audit?after=${next}`);
    entries.push(...p.entries);
    next = p.entries.length ? p.next : null;
  }
  return { first, entries };
}

function report(v: ChainVerdict, what: string, json: boolean | undefined): number {
  if (json) out(JSON.stringify(v));
  else if (v.ok) out(`${what}: intact: ${v.count} entries, head ${v.head}`);
  else out(`${what}: TAMPERED: first bad entry at index ${v.firstBad.index}${v.firstBad.seq !== null ? ` (seq ${v.firstBad.seq})` : ''}: ${v.reason}`);
  return v.ok ? 0 : 1;
}

export interface WitnessVerdict { witness: string; holder: string; ok: boolean; count: number | null; reason?: string }

/** Each witness against the log: its checkpoint must verify under the log's key and the log must extend it. */
export function checkWitnesses(files: string[], entries: readonly AuditEntry[], publicKey: string): WitnessVerdict[] {
  const bySeq = new Map(entries.map((e) => [e.seq, e.hash]));
  const log = { count: entries.length, hashAt: (seq: number) => bySeq.get(seq) };
  return files.map((f): WitnessVerdict => {
    let w: WitnessFile;
    try {
      w = parseWitness(readFileSync(f, 'utf8'), f);
    } catch (e) {
      return { witness: f, holder: f, ok: false, count: null, reason: `unreadable witness: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
    }
    const bad = (reason: string): WitnessVerdict => ({ witness: f, holder: w.holder, ok: false, count: Number.isSafeInteger(w.checkpoint?.count) ? w.checkpoint.count : null, reason });
    const p = checkpointProblem(w.checkpoint, publicKey);
    if (p) return bad(`its checkpoint does not hold for this log's key: ${p}`);
    const against = checkpointAgainstLog(w.checkpoint, log);
    if (against) return bad(against);
    // A witness that once was handed two contradicting signed checkpoints holds proof by itself.
    for (const c of w.conflicts) if (checkpointProblem(c.checkpoint, publicKey) === null) return bad(`it holds contradicting checkpoints, both signed by the coordinator: ${c.reason}`);
    return { witness: f, holder: w.holder, ok: true, count: w.checkpoint.count };
  });
}

function reportWitnesses(vs: WitnessVerdict[], json: boolean | undefined): number {
  for (const v of vs) {
    if (json) out(JSON.stringify({ witness: v }));
    else out(v.ok ? `witness ${v.witness} (${v.holder}): agrees (${v.count} entries)` : `witness ${v.witness} (${v.holder}): DISAGREES: ${v.reason}`);
  }
  return vs.every((v) => v.ok) ? 0 : 1;
}

/** Where this machine keeps its own witness of the coordinator signing with `publicKey`. */
export function ownWitnessFile(publicKey: string): string {
  const home = process.env.SETU_HOME ?? join(homedir(), '.setu');
  return join(home, 'audit-witnesses', `${createHash('sha256').update(publicKey).digest('hex').slice(0, 16)}.json`);
}

/** Keeps the verified checkpoint in `file` by the witness's own rule (never back; a contradiction is refused). */
function saveWitness(file: string, cp: AuditCheckpoint, holder = 'auditor'): number {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let kept: WitnessFile | undefined;
  if (existsSync(file)) {
    try {
      kept = parseWitness(readFileSync(file, 'utf8'), file);
    } catch (e) {
      throw new UsageError(`--save-witness ${file}: not a witness file (${(e as Error).message}); choose another file`);
    }
  }
  const r = witnessSee(kept, cp, kept?.holder ?? holder, Date.now());
  if (r.outcome === 'conflict' || r.outcome === 'invalid') {
    if (r.file && r.file !== kept) writeAtomic(file, JSON.stringify(r.file, null, 2) + '\n');
    out(`witness ${file}: DISAGREES: ${r.reason}`);
    return 1;
  }
  if (r.file && r.file !== kept) writeAtomic(file, JSON.stringify(r.file, null, 2) + '\n', 0o644);
  return 0;
}

export async function auditCommand(sub: string | undefined, argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...operatorFlags, file: { type: 'string' }, out: { type: 'string' }, 'public-key': { type: 'string' },
    witness: { type: 'string', multiple: true }, 'save-witness': { type: 'string' }, ephemeral: { type: 'boolean' },
  });
  const witnesses = [...(values.witness ?? [])];
  let own: string | undefined;
  if (sub === 'verify') {
    let verdict: ChainVerdict;
    let entries: AuditEntry[];
    let key: string;
    let checkpoint: AuditCheckpoint;
    let what: string;
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
      if (values['public-key'] && values['public-key'] !== parsed.publicKey) {
        out(`${values.file}: TAMPERED: the export names public key ${parsed.publicKey}, not the pinned ${values['public-key']}`);
        return 1;
      }
      key = parsed.publicKey;
      entries = parsed.entries;
      checkpoint = parsed.checkpoint;
      what = values.file;
      verdict = verifyExport(parsed, key);
    } else {
      const { first, entries: all } = await fetchAll(operatorClient(values));
      if (values['public-key'] && values['public-key'] !== first.publicKey) {
        out(`the coordinator signs with ${first.publicKey}, not the pinned ${values['public-key']}`);
        return 1;
      }
      key = values['public-key'] ?? first.publicKey;
      own = values.ephemeral ? undefined : ownWitnessFile(key);
      if (own && existsSync(own) && !witnesses.includes(own)) witnesses.push(own);
      entries = all;
      checkpoint = first.checkpoint;
      what = 'audit log';
      // The chain itself, then the coordinator's own signed head: entries appended while paging are fine, fewer are not.
      verdict = verifyChain(all, key);
      const cpBad = verdict.ok ? checkpointProblem(checkpoint, key) ?? checkpointAgainstLog(checkpoint, { count: all.length, hashAt: (s) => all[s - 1]?.hash }) : null;
      if (cpBad) verdict = { ok: false, firstBad: { index: all.length, seq: checkpoint.count }, reason: `the coordinator's stored head: ${cpBad}` };
    }
    let code = report(verdict, what, values.json);
    if (witnesses.length) code = Math.max(code, reportWitnesses(checkWitnesses(witnesses, entries, key), values.json));
    if (code === 0 && values['save-witness']) code = saveWitness(values['save-witness'], checkpoint);
    if (code === 0 && own && own !== values['save-witness']) code = saveWitness(own, checkpoint, "this machine's earlier verify");
    return code;
  }
  if (sub === 'export') {
    if (!values.out) throw new UsageError('setu audit export --out file.jsonl');
    const res = await operatorClient(values).request('GET', '/v1/audit/export');
    writeAtomic(values.out, res.body, 0o644);
    const p = parseExport(Buffer.from(res.body).toString('utf8'));
    out(values.json ? JSON.stringify({ file: values.out, count: p.count, head: p.head, publicKey: p.publicKey }) : `wrote ${p.count} entries to ${values.out}; head ${p.head}; coordinator key ${p.publicKey}`);
    return 0;
  }
  if (sub === 'list') {
    const { entries } = await fetchAll(operatorClient(values));
    out(values.json ? JSON.stringify(entries) : table(['seq', 'time', 'actor', 'kind', 'subject'], entries.map((e) => [e.seq, new Date(e.ts).toISOString(), e.actor, e.kind, e.subject]), ['r', 'l', 'l', 'l', 'l']));
    return 0;
  }
  throw new UsageError(`unknown: setu audit ${sub ?? ''} (verify, export, list)`);
}
