import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { generateSigningKeys } from '../protocol/signing.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { appendEntry, verifyChain, entryHash, exportChain, parseExport, verifyExport, GENESIS_HASH, AuditError, type AuditEntry, type AuditKind } from './audit-chain.js';

const coord = generateSigningKeys();
const attacker = generateSigningKeys();

function chain(n: number): AuditEntry[] {
  const kinds: AuditKind[] = ['site.enrolled', 'study.proposed', 'study.approved', 'task.issued', 'update.accepted', 'aggregate.committed'];
  const out: AuditEntry[] = [];
  for (let i = 0; i < n; i++) {
    out.push(appendEntry(out.at(-1) ?? null, {
      ts: 1_760_000_000_000 + i * 1000, actor: i % 2 ? 'site-in-1' : 'coordinator', kind: kinds[i % kinds.length]!,
      subject: `study-${i}`, data: { round: i, digest: 'ab'.repeat(32), note: null },
    }, coord.privateKey));
  }
  return out;
}

const N = 6;
const good = chain(N);

function failsAt(entries: AuditEntry[], index: number, re: RegExp, opts = {}) {
  const v = verifyChain(entries, coord.publicKey, opts);
  assert.equal(v.ok, false, `tampering at ${index} went unnoticed`);
  if (v.ok) return;
  assert.equal(v.firstBad.index, index, v.reason);
  assert.match(v.reason, re);
}

test('a genuine chain verifies, with its head and count', () => {
  const v = verifyChain(good, coord.publicKeyPem);
  assert.deepEqual(v, { ok: true, head: good[N - 1]!.hash, count: N });
  assert.deepEqual(verifyChain([], coord.publicKey), { ok: true, head: GENESIS_HASH, count: 0 });
  assert.equal(good[0]!.seq, 1);
  assert.equal(good[0]!.prevHash, GENESIS_HASH);
  for (let i = 1; i < N; i++) assert.equal(good[i]!.prevHash, good[i - 1]!.hash);
});

test('hash is sha256 of the canonical JSON of everything but hash and sig', () => {
  const e = good[2]!;
  const { hash, sig, ...rest } = e;
  void sig;
  assert.equal(hash, createHash('sha256').update(canonicalJson(rest)).digest('hex'));
  assert.equal(entryHash(e), hash);
  // Key order of data (as it might come back from SQL) does not change the hash.
  assert.equal(entryHash({ ...e, data: { note: null, digest: 'ab'.repeat(32), round: 2 } }), hash);
});

test('editing any field of any entry is detected and named', () => {
  for (let i = 0; i < N; i++) {
    for (const field of ['ts', 'actor', 'kind', 'subject', 'data', 'seq'] as const) {
      const t = structuredClone(good);
      const e = t[i]! as unknown as Record<string, unknown>;
      e[field] = field === 'ts' || field === 'seq' ? (e[field] as number) + 1 : field === 'data' ? { round: 99 } : 'x';
      failsAt(t, i, /edited/);
    }
  }
});

test('editing and re-hashing without the key, or re-signing with another key, is detected as forged', () => {
  for (let i = 0; i < N; i++) {
    const t = structuredClone(good);
    t[i]!.data = { round: 99 };
    t[i]!.hash = entryHash(t[i]!);
    failsAt(t, i, /bad signature/);
    const r = structuredClone(good);
    r[i] = appendEntry(i === 0 ? null : r[i - 1]!, { ts: r[i]!.ts, actor: 'x', kind: 'model.released', subject: 'y' }, attacker.privateKey);
    failsAt(r, i, /bad signature/);
  }
});

test('deleting any entry is detected at the entry after it (and the last one via the expected head/count)', () => {
  for (let i = 0; i < N - 1; i++) {
    const t = good.filter((_, j) => j !== i);
    failsAt(t, i, new RegExp(`deleted: seq ${i + 1} missing`));
  }
  const t = good.slice(0, N - 1);
  assert.equal(verifyChain(t, coord.publicKey).ok, true, 'a truncated tail is only detectable against a recorded head');
  failsAt(t, N - 1, /truncated: 5 entries, expected 6/, { expected: { count: N } });
  failsAt(t, N - 1, /not the expected head/, { expected: { head: good[N - 1]!.hash } });
  failsAt([], 0, /truncated/, { expected: { count: N } });
});

test('deleting an entry and renumbering the rest is detected (the renumbered entry no longer matches its hash)', () => {
  const t = structuredClone(good.filter((_, j) => j !== 2));
  for (let j = 2; j < t.length; j++) t[j]!.seq -= 1;
  failsAt(t, 2, /edited/);
});

test('inserting a copy of an entry, or a forged entry, is detected', () => {
  for (let i = 0; i < N; i++) {
    const dup = [...good.slice(0, i + 1), good[i]!, ...good.slice(i + 1)];
    failsAt(dup, i + 1, /inserted: seq \d+ at index \d+ repeats/);
    const forged = appendEntry(good[i]!, { ts: 1, actor: 'x', kind: 'model.released', subject: 'm' }, attacker.privateKey);
    failsAt([...good.slice(0, i + 1), forged, ...good.slice(i + 1)], i + 1, /bad signature/);
  }
});

test('an entry from another genuine chain spliced in is detected by its broken link', () => {
  // Same key, same seq, different history: only the prevHash link gives it away.
  const o1 = appendEntry(null, { ts: 1, actor: 'coordinator', kind: 'site.enrolled', subject: 'other' }, coord.privateKey);
  const o2 = appendEntry(o1, { ts: 2, actor: 'coordinator', kind: 'site.enrolled', subject: 'other' }, coord.privateKey);
  const alt = appendEntry(o2, { ts: 5, actor: 'coordinator', kind: 'study.started', subject: 'z' }, coord.privateKey);
  const t = [...good.slice(0, 2), alt, ...good.slice(3)];
  failsAt(t, 2, /does not link/);
});

test('reordering any two entries is detected at the first moved one', () => {
  for (let i = 0; i < N; i++) {
    for (let j = i + 1; j < N; j++) {
      const t = [...good];
      [t[i], t[j]] = [t[j]!, t[i]!];
      failsAt(t, i, /reordered/);
    }
  }
});

test('verifying a slice continues from a trusted checkpoint', () => {
  const from = { seq: good[2]!.seq, hash: good[2]!.hash };
  assert.deepEqual(verifyChain(good.slice(3), coord.publicKey, { from }), { ok: true, head: good[N - 1]!.hash, count: N - 3 });
  failsAt(good.slice(4), 0, /deleted/, { from });
  failsAt(good.slice(3), 0, /does not link/, { from: { seq: 3, hash: 'f'.repeat(64) } });
});

test('a wrong public key fails at the first entry; malformed entries are named, not thrown', () => {
  const v = verifyChain(good, attacker.publicKey);
  assert.equal(v.ok, false);
  assert.ok(!v.ok && v.firstBad.index === 0 && /bad signature/.test(v.reason));
  const sig = structuredClone(good);
  sig[2]!.sig = sig[2]!.sig + 'A';
  failsAt(sig, 2, /malformed: sig/);
  // Same bytes, other spelling (a spare bit of the last base64url character flipped): still refused.
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const twin = structuredClone(good);
  twin[4]!.sig = twin[4]!.sig.slice(0, -1) + abc[abc.indexOf(twin[4]!.sig.at(-1)!) ^ 1];
  assert.deepEqual(Buffer.from(twin[4]!.sig, 'base64url'), Buffer.from(good[4]!.sig, 'base64url'));
  failsAt(twin, 4, /malformed: sig/);
  const broken = structuredClone(good) as unknown as Record<string, unknown>[];
  broken[1]!.hash = 'nothex';
  failsAt(broken as unknown as AuditEntry[], 1, /malformed: hash/);
  const nan = structuredClone(good) as unknown as Record<string, unknown>[];
  nan[3]!.data = { x: NaN };
  failsAt(nan as unknown as AuditEntry[], 3, /malformed/);
  failsAt([null as unknown as AuditEntry], 0, /not an object/);
});

test('appendEntry refuses unknown kinds, empty actors and non-JSON data', () => {
  assert.throws(() => appendEntry(null, { actor: 'a', kind: 'study.eaten' as AuditKind, subject: 's' }, coord.privateKey), AuditError);
  assert.throws(() => appendEntry(null, { actor: '', kind: 'site.enrolled', subject: 's' }, coord.privateKey), /actor/);
  assert.throws(() => appendEntry(null, { actor: 'a', kind: 'site.enrolled', subject: 's', data: { x: Infinity } }, coord.privateKey), AuditError);
  const e = appendEntry(null, { actor: 'a', kind: 'site.enrolled', subject: 's' }, coord.privateKeyPem);
  assert.equal(e.data, null);
});

test('property: any single-entry mutation, deletion, duplication or swap is detected', () => {
  const op = fc.oneof(
    fc.record({ op: fc.constant('delete' as const), i: fc.nat(N - 2) }), // last entry needs the expected count
    fc.record({ op: fc.constant('dup' as const), i: fc.nat(N - 1) }),
    fc.record({ op: fc.constant('swap' as const), i: fc.nat(N - 1), j: fc.nat(N - 1) }),
    fc.record({ op: fc.constant('edit' as const), i: fc.nat(N - 1), field: fc.constantFrom('ts', 'actor', 'kind', 'subject', 'prevHash', 'sig'), v: fc.string() }),
  );
  fc.assert(
    fc.property(op, (o) => {
      let t: AuditEntry[] = structuredClone(good);
      if (o.op === 'delete') t.splice(o.i, 1);
      else if (o.op === 'dup') t.splice(o.i, 0, structuredClone(t[o.i]!));
      else if (o.op === 'swap') { fc.pre(o.i !== o.j); [t[o.i], t[o.j]] = [t[o.j]!, t[o.i]!]; }
      else {
        const e = t[o.i] as unknown as Record<string, unknown>;
        fc.pre(e[o.field] !== o.v);
        e[o.field] = o.field === 'ts' ? o.v.length : o.v;
        fc.pre(e[o.field] !== (good[o.i] as unknown as Record<string, unknown>)[o.field]);
      }
      t = t.filter(Boolean);
      assert.equal(verifyChain(t, coord.publicKey).ok, false);
    }),
    { numRuns: 300 },
  );
});

test('export and parse: an auditor re-verifies with only the export, and a truncated export is caught', () => {
  const text = exportChain(good, coord, 42);
  const p = parseExport(text);
  assert.deepEqual(verifyExport(p), { ok: true, head: p.head, count: N });
  assert.equal(p.count, N);
  assert.equal(p.head, good[N - 1]!.hash);
  assert.deepEqual(p.entries, good);
  assert.deepEqual(verifyChain(p.entries, p.publicKey, { expected: { count: p.count, head: p.head } }), { ok: true, head: p.head, count: N });
  const cut = text.split('\n').slice(0, -2).join('\n') + '\n'; // drop the last entry line
  const q = parseExport(cut);
  const v = verifyChain(q.entries, q.publicKey, { expected: { count: q.count, head: q.head } });
  assert.ok(!v.ok && /truncated/.test(v.reason));
  assert.throws(() => parseExport(''), /empty/);
  assert.throws(() => parseExport('{"format":"other"}\n'), /format must be setu-audit-v2/);
  assert.throws(() => parseExport(text.replace('"seq":3', '"seq":3,"seq":4')), /line 4: .*duplicate key "seq"/);
});

test('an export header is signed: cutting entries and rewriting count and head to match fails, as does another key', () => {
  const text = exportChain(good, coord, 42);
  const lines = text.trimEnd().split('\n');
  const header = JSON.parse(lines[0]!);
  // The attacker drops the last two entries and rewrites the header to the new count and head.
  const cut = [JSON.stringify({ ...header, count: N - 2, head: good[N - 3]!.hash }), ...lines.slice(1, -2)].join('\n') + '\n';
  const v = verifyExport(parseExport(cut));
  assert.ok(!v.ok && /export header: checkpoint signature does not verify.*rewritten/.test(v.reason), JSON.stringify(v));
  // The chain alone would have passed: the header's signature is what catches it.
  const q = parseExport(cut);
  assert.equal(verifyChain(q.entries, q.publicKey, { expected: { count: q.count, head: q.head } }).ok, true);
  // Re-signing with another key and naming that key fails against the pinned key.
  const forged = exportChain(good.slice(0, N - 2), attacker, 43);
  const f = verifyExport(parseExport(forged), coord.publicKeyRaw);
  assert.ok(!f.ok && /signed by key/.test(f.reason));
  // An old unsigned header is refused outright.
  assert.throws(() => parseExport(text.replace('setu-audit-v2', 'setu-audit-v1')), /unsigned header/);
  // Removing the signature is caught.
  assert.throws(() => parseExport(JSON.stringify({ ...header, sig: undefined }) + '\n'), /needs publicKey, count, head, exportedAt and sig/);
});
