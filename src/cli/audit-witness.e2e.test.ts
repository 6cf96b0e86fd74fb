/**
 * Rollback of the audit log, as someone with write access to the coordinator's database would do it, is caught by
 * the witnesses: three real site agents train a short study and each keeps the newest signed checkpoint it was
 * handed (state/audit-witness.json); the auditor keeps one too (--save-witness). Then, each undone after:
 *  - the tail is deleted and the head row rewound: the chain alone verifies as intact (the old fault), every
 *    witness that saw the deleted entries disagrees, and is named;
 *  - the whole log is deleted and the head row reset: likewise;
 *  - an export is cut and its header rewritten to the new count and head: verify --file fails on the signature.
 * The auditor's machine keeps a witness of each verify on its own (SETU_HOME/audit-witnesses), so a plain verify
 * after the rollback fails as well.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import Database from 'libsql';
import { SETU_MAIN, adminClient, freePort, startCoordinatorProcess, enrolHeartSites, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';

test('audit witnesses catch a deleted tail, a deleted log and a rewritten export header, naming the witness', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-audit-witness-'));
  const children: ChildProcess[] = [];
  let coord: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = join(dir, 'coord');
    coord = await startCoordinatorProcess(dataDir, port, join(dir, 'coord.log'));
    const admin = adminClient(dataDir, url);
    await enrolHeartSites(admin, url, dir, 3, children);
    const lead = await studyLeadClient(admin, url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'witnessed', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
      fit: { localSteps: 5, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, seed: 3,
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const final = await waitFor('the study to finish', async () => {
      const s = await admin.json<{ status: string; error: string | null }>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 120_000, 200);
    assert.equal(final.status, 'completed', final.error ?? '');
    await stopAll(children);

    const setu = (...args: string[]) => {
      const r = spawnSync(process.execPath, [SETU_MAIN, 'audit', ...args, '--coordinator', url, '--data-dir', dataDir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SETU_HOME: join(dir, 'home') } });
      return { code: r.status, out: r.stdout + r.stderr };
    };
    const witnesses = [0, 1, 2].map((c) => join(dir, `site-${c}`, 'state', 'audit-witness.json'));
    for (const w of witnesses) assert.ok(existsSync(w), `${w}: the agent kept a witness`);
    const seen = witnesses.map((w) => (JSON.parse(readFileSync(w, 'utf8')) as { holder: string; checkpoint: { count: number } }));
    assert.deepEqual(seen.map((s) => s.holder).sort(), ['hospital-0', 'hospital-1', 'hospital-2']);
    const auditorWitness = join(dir, 'auditor-witness.json');
    const intact = setu('verify', ...witnesses.flatMap((w) => ['--witness', w]), '--save-witness', auditorWitness);
    assert.equal(intact.code, 0, intact.out);
    assert.equal(intact.out.match(/agrees/g)?.length, 3, intact.out);
    const all = [...witnesses, auditorWitness];
    const withAll = all.flatMap((w) => ['--witness', w]);

    const db = new Database(join(dataDir, 'setu.db'));
    db.exec('PRAGMA busy_timeout=5000;');
    const rows = db.prepare('select * from audit_log order by seq').all() as Record<string, unknown>[];
    const head = db.prepare('select seq, hash from audit_head where id = 1').get() as { seq: number; hash: string };
    const restore = () => {
      db.exec('delete from audit_log');
      const ins = db.prepare('insert into audit_log (seq, ts, actor, kind, subject, data, prev_hash, hash, sig) values (?,?,?,?,?,?,?,?,?)');
      for (const r of rows) ins.run(r.seq, r.ts, r.actor, r.kind, r.subject, r.data, r.prev_hash, r.hash, r.sig);
      db.prepare('update audit_head set seq = ?, hash = ? where id = 1').run(head.seq, head.hash);
      const again = setu('verify', ...withAll);
      assert.equal(again.code, 0, again.out);
    };
    try {
      // 1. The tail is deleted back to before the study's first task, and the head row rewound to match.
      const keep = Math.min(...seen.map((s) => s.checkpoint.count)) - 3;
      assert.ok(keep > 0);
      db.prepare('delete from audit_log where seq > ?').run(keep);
      db.prepare('update audit_head set seq = ?, hash = ? where id = 1').run(keep, rows[keep - 1]!.hash);
      const chainOnly = setu('verify', '--ephemeral');
      assert.equal(chainOnly.code, 0, `without witnesses a rewound log still looks intact: ${chainOnly.out}`);
      // The auditor's machine kept a witness of its own earlier verify, so a plain verify catches it too.
      const plain = setu('verify');
      assert.equal(plain.code, 1, plain.out);
      assert.match(plain.out, /\(this machine's earlier verify\): DISAGREES: .*tail was deleted/);
      const cut = setu('verify', ...withAll);
      assert.equal(cut.code, 1, cut.out);
      for (const w of all) assert.match(cut.out, new RegExp(`witness ${w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(.*\\): DISAGREES: .*tail was deleted`));
      for (const h of ['hospital-0', 'hospital-1', 'hospital-2']) assert.match(cut.out, new RegExp(`\\(${h}\\): DISAGREES`));
      restore();

      // 2. The whole log is deleted and the head row reset to the genesis.
      db.exec('delete from audit_log');
      db.prepare("update audit_head set seq = 0, hash = ? where id = 1").run('0'.repeat(64));
      assert.equal(setu('verify', '--ephemeral').code, 0, 'an empty log verifies on its own');
      const gone = setu('verify', '--witness', witnesses[1]!);
      assert.equal(gone.code, 1, gone.out);
      assert.match(gone.out, /\(hospital-1\): DISAGREES: the log is empty, but the coordinator signed \d+ entries .*whole log was deleted/);
      restore();

      // 3. The tail is deleted, the head rewound, and new entries appended past the witness's count: caught by hash.
      const back = keep;
      db.prepare('delete from audit_log where seq > ?').run(back);
      db.prepare('update audit_head set seq = ?, hash = ? where id = 1').run(back, rows[back - 1]!.hash);
      for (let i = 0; i < 6; i++) await admin.json('POST', '/v1/invites', { siteName: `decoy-${i}` });
      const regrown = setu('verify', '--witness', auditorWitness);
      assert.equal(regrown.code, 1, regrown.out);
      assert.match(regrown.out, /\(auditor\): DISAGREES: (entry seq \d+ hashes to .*rewound and rewritten|the log holds \d+ entries.*tail was deleted)/);
      const after = db.prepare('select * from audit_log where seq > ? order by seq').all(back) as Record<string, unknown>[];
      assert.equal(after.length, 6);
      db.prepare('delete from audit_log where seq > ?').run(back);
      restore();
    } finally {
      db.close();
    }

    // 4. An export cut by two entries with its header rewritten to the new count and head.
    const file = join(dir, 'audit.jsonl');
    assert.equal(setu('export', '--out', file).code, 0);
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const header = JSON.parse(lines[0]!) as Record<string, unknown>;
    const kept = lines.slice(1, -2);
    const lastHash = (JSON.parse(kept.at(-1)!) as { hash: string }).hash;
    writeFileSync(file, [JSON.stringify({ ...header, count: kept.length, head: lastHash }), ...kept].join('\n') + '\n');
    const rewritten = spawnSync(process.execPath, [SETU_MAIN, 'audit', 'verify', '--file', file], { encoding: 'utf8' });
    assert.equal(rewritten.status, 1, rewritten.stdout + rewritten.stderr);
    assert.match(rewritten.stdout, /TAMPERED.*export header: checkpoint signature does not verify/);
    // Left unsigned-but-consistent is no better: the original header with the cut entries fails on count and head.
    writeFileSync(file, [lines[0]!, ...kept].join('\n') + '\n');
    const cutOnly = spawnSync(process.execPath, [SETU_MAIN, 'audit', 'verify', '--file', file, '--witness', witnesses[0]!], { encoding: 'utf8' });
    assert.equal(cutOnly.status, 1, cutOnly.stdout);
    assert.match(cutOnly.stdout, /truncated/);
  } finally {
    await stopAll([...children, ...(coord ? [coord] : [])]);
    rmSync(dir, { recursive: true, force: true });
  }
});
