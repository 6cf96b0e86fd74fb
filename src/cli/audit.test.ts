/**
 * `setu audit verify` against a real coordinator process: someone with write access to its database edits,
 * deletes, inserts or reorders audit rows, and the command (which recomputes the chain on the auditor's side)
 * exits 1 naming the first bad entry; undone, it passes again. `setu audit export` + `verify --file` checks an
 * export offline, and catches an edited export.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import Database from 'libsql';
import { SETU_MAIN, freePort, startCoordinatorProcess, stopAll } from '../testing/processes.js';

describe('setu audit verify / export', () => {
  let dir: string, url: string;
  let coord: ChildProcess;
  let db: InstanceType<typeof Database>;

  const setu = (...args: string[]) => {
    // SETU_HOME: the auditor's own witnesses (audit-witnesses/) stay in this test's directory.
    const r = spawnSync(process.execPath, [SETU_MAIN, ...args, '--coordinator', url, '--data-dir', join(dir, 'coord')], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, SETU_HOME: join(dir, 'home') } });
    return { code: r.status, out: r.stdout + r.stderr };
  };
  const run = (sqlText: string) => db.prepare(sqlText).run();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-audit-cli-'));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    coord = await startCoordinatorProcess(join(dir, 'coord'), port, join(dir, 'coord.log'));
    for (let i = 0; i < 4; i++) assert.equal(setu('site', 'invite', '--name', `site-${i}`).code, 0);
    assert.equal(setu('user', 'add', '--name', 'aud', '--role', 'auditor').code, 0);
    db = new Database(join(dir, 'coord', 'setu.db'));
    db.exec('PRAGMA busy_timeout=5000;');
  });
  after(async () => {
    db?.close();
    await stopAll([coord]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes an untouched log', () => {
    const r = setu('audit', 'verify');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /intact: 6 entries/);
  });

  const tampered = (re: RegExp) => {
    const r = setu('audit', 'verify');
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, re);
    return r.out;
  };

  it('names an entry edited in the database', () => {
    const orig = db.prepare('select subject from audit_log where seq = 3').get() as { subject: string };
    run(`update audit_log set subject = 'site-evil' where seq = 3`);
    tampered(/TAMPERED: first bad entry at index 2 \(seq 3\): entry seq 3 was edited/);
    db.prepare('update audit_log set subject = ? where seq = 3').run(orig.subject);
    assert.equal(setu('audit', 'verify').code, 0);
  });

  it('names the gap left by a deleted entry', () => {
    const row = db.prepare('select * from audit_log where seq = 4').get() as Record<string, unknown>;
    run('delete from audit_log where seq = 4');
    tampered(/\(seq 5\): entries deleted: seq 4 missing/);
    db.prepare('insert into audit_log (seq, ts, actor, kind, subject, data, prev_hash, hash, sig) values (?,?,?,?,?,?,?,?,?)').run(row.seq, row.ts, row.actor, row.kind, row.subject, row.data, row.prev_hash, row.hash, row.sig);
    assert.equal(setu('audit', 'verify').code, 0);
  });

  it('names an inserted entry', () => {
    // A copy of entry 2 re-numbered into the chain's tail: its hash no longer matches its content.
    run(`insert into audit_log (seq, ts, actor, kind, subject, data, prev_hash, hash, sig) select 7, ts, actor, kind, subject, data, prev_hash, hash, sig from audit_log where seq = 2`);
    tampered(/\(seq 7\)/);
    run('delete from audit_log where seq = 7');
    assert.equal(setu('audit', 'verify').code, 0);
  });

  it('names reordered entries', () => {
    run('update audit_log set seq = 1000 where seq = 2');
    run('update audit_log set seq = 2 where seq = 3');
    run('update audit_log set seq = 3 where seq = 1000');
    tampered(/\(seq 2\)/);
    run('update audit_log set seq = 1000 where seq = 2');
    run('update audit_log set seq = 2 where seq = 3');
    run('update audit_log set seq = 3 where seq = 1000');
    assert.equal(setu('audit', 'verify').code, 0);
  });

  it('exports the log for an external auditor and verifies it offline, catching an edited export', () => {
    const file = join(dir, 'audit.jsonl');
    const e = setu('audit', 'export', '--out', file);
    assert.equal(e.code, 0, e.out);
    const offline = spawnSync(process.execPath, [SETU_MAIN, 'audit', 'verify', '--file', file], { encoding: 'utf8' });
    assert.equal(offline.status, 0, offline.stdout + offline.stderr);
    assert.match(offline.stdout, /intact: 6 entries/);
    const lines = readFileSync(file, 'utf8').split('\n');
    assert.match(lines[3]!, /"actor":"user-admin"/);
    lines[3] = lines[3]!.replace('"actor":"user-admin"', '"actor":"user-evil"');
    writeFileSync(file, lines.join('\n'));
    const bad = spawnSync(process.execPath, [SETU_MAIN, 'audit', 'verify', '--file', file], { encoding: 'utf8' });
    assert.equal(bad.status, 1, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /seq 3\): entry seq 3 was edited/);
  });
});
