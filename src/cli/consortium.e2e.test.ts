/**
 * The README's "Several machines" walkthrough can never drift from the code: its shell blocks are the commands of
 * examples/consortium/walkthrough.sh, its YAML blocks are the example's site.yaml and study.yaml, and the script runs
 * end to end with real processes (an HTTPS coordinator, three site agents, five people's keys): institutions, people,
 * invites, enrolment, propose, approve, policy check, start, watch, sign-off, release, download, export, audit.
 *
 * The script listens on 127.0.0.1:7070, as the README says. So that it never meets another test's port, it runs in
 * a network namespace of its own where one can be made (root with unshare and ip: CI's machines); elsewhere it runs
 * when the port is free, and is skipped otherwise (under CI=true it fails instead).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeSafetensors } from '../protocol/safetensors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const EXAMPLE = join(ROOT, 'examples', 'consortium');
const SCRIPT = join(EXAMPLE, 'walkthrough.sh');

/** Commands as compared: no comment-only or blank lines, no trailing comments, no trailing spaces. */
const commands = (text: string) => text.split('\n').map((l) => l.replace(/\s+#\s.*$/, '').trimEnd()).filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));

function readmeSection(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Several machines');
  assert.ok(start >= 0, 'README has a "Several machines" section');
  const end = readme.indexOf('\n## ', start + 3);
  return readme.slice(start, end < 0 ? undefined : end);
}

const blocks = (md: string, lang: string) => [...md.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);

test('the README walkthrough is the consortium script, command for command', () => {
  const section = readmeSection();
  const script = readFileSync(SCRIPT, 'utf8');
  const begin = script.indexOf('# ---- walkthrough: begin ----');
  const end = script.indexOf('# ---- walkthrough: end ----');
  assert.ok(begin > 0 && end > begin, 'the script marks its walkthrough');
  const scripted = commands(script.slice(begin, end).split('\n').filter((l) => !l.trimEnd().endsWith('# (script only)')).join('\n'));
  assert.deepEqual(commands(blocks(section, 'sh').join('\n')), scripted);
  // Every step the issue names is there.
  for (const step of ['institution add', 'user add', 'site invite', 'user enrol', 'site enrol', 'site start', 'study create', 'study propose', 'study approve', 'study policy-check', 'study start', 'study status', 'model signoff', 'model release', 'model download', 'study export']) {
    assert.ok(scripted.some((l) => l.startsWith(`setu ${step}`)), `the walkthrough runs setu ${step}`);
  }
  const yaml = blocks(section, 'yaml');
  assert.ok(yaml.includes(readFileSync(join(EXAMPLE, 'sites', 'aiims-heart', 'site.yaml'), 'utf8')), 'the README shows sites/aiims-heart/site.yaml as it is');
  assert.ok(yaml.includes(readFileSync(join(EXAMPLE, 'study.yaml'), 'utf8')), 'the README shows study.yaml as it is');
});

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

/** How to run the script: in a network namespace of its own, on the host's loopback, or not at all (why). */
async function runner(): Promise<{ argv: string[] } | { skip: string }> {
  const netns = spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up'], { stdio: 'ignore' });
  if (netns.status === 0) return { argv: ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec bash "$0" "$1"'] };
  if (await portFree(7070)) return { argv: ['bash'] };
  return { skip: 'port 7070 is taken and no network namespace can be made here (needs root, unshare and ip)' };
}

test('the consortium walkthrough runs end to end on loopback', { timeout: 300_000 }, async (t) => {
  const how = await runner();
  if ('skip' in how) {
    if (process.env.CI) throw new Error(`under CI the walkthrough must run: ${how.skip}`);
    return t.skip(how.skip);
  }
  const work = mkdtempSync(join(tmpdir(), 'setu-consortium-'));
  try {
    const [cmd, ...args] = how.argv;
    const child = spawn(cmd!, [...args, SCRIPT, work], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const code = await new Promise<number | null>((res) => child.on('close', res));
    assert.equal(code, 0, `the walkthrough failed:\n${out.slice(-6000)}`);

    // What the lead took home: the released model, the metrics of every round and site, the model card.
    const weights = decodeSafetensors(new Uint8Array(readFileSync(join(work, 'heart-in-jp.safetensors')))).weights;
    assert.deepEqual(Object.keys(weights).sort(), ['bias', 'weight']);
    assert.deepEqual(weights['weight']!.shape, [1, 13]);
    const csv = readFileSync(join(work, 'heart-in-jp.csv'), 'utf8').trim().split('\n');
    assert.match(csv[0]!, /^round,site,train_loss,test_loss,test_accuracy,test_auc/);
    for (const site of ['aiims-heart', 'pgimer-heart', 'osaka-heart']) assert.ok(csv.some((l) => l.startsWith(`15,${site},`)), `round 15 of ${site} is exported`);
    assert.ok(csv.some((l) => /^15,,/.test(l)), 'round 15 across all sites is exported');
    const card = readdirSync(work).find((f) => f.endsWith('.model-card.md'));
    assert.ok(card, 'the model card was written');
    assert.match(readFileSync(join(work, card!), 'utf8'), /^# Model card: heart-in-jp/);
    // The run said what happened at each gate.
    assert.match(out, /meets the jurisdiction policy of every site that may take part \(aiims-heart, pgimer-heart, osaka-heart\)/);
    assert.match(out, /nothing remains: setu study start/);
    assert.match(out, /running with 3 site\(s\)/);
    assert.match(out, /every sign-off is in/);
    assert.match(out, /released model heart-in-jp-\w+\.v15/);
    assert.match(out, /audit log: intact: \d+ entries/);
    // The keys people and sites made stayed private to their owner's machine.
    for (const f of ['people/priya.key', 'sites/aiims-heart/state/site.key', 'coordinator/admin.key']) {
      assert.ok(existsSync(join(work, f)), f);
      assert.equal(spawnSync('stat', ['-c', '%a', join(work, f)]).stdout.toString().trim(), '600', `${f} is mode 600`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
