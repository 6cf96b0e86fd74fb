/** What `setu study export` and `study status --watch` print, from a study as the coordinator answers it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import type { StudyDetail } from '../protocol/views.js';
import { exportCsv, studyExport } from '../coordinator/study-export.js';
import { StatusView, progressLine, renderStudy } from './operator.js';

const detail = (over: Partial<StudyDetail> = {}): StudyDetail => ({
  id: 's-1', name: 'heart', status: 'running', error: null, round: 1,
  spec: { name: 'heart', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2, fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } },
  participants: [{ id: 'a', name: 'kem, mumbai' }, { id: 'b', name: 'osaka' }],
  openRound: { round: 2, kind: 'fit', deadlineAt: null, received: 1, expected: 2 },
  rounds: [],
  metrics: [
    { round: 0, site: 'osaka', phase: 'evaluate', name: 'accuracy', value: 0.5 },
    { round: 0, site: 'kem, mumbai', phase: 'evaluate', name: 'accuracy', value: 0.6 },
    { round: 0, site: null, phase: 'evaluate', name: 'accuracy', value: 0.55 },
    { round: 1, site: 'osaka', phase: 'fit', name: 'loss', value: 0.7 },
    { round: 1, site: null, phase: 'fit', name: 'loss', value: 0.69 },
    { round: 1, site: 'osaka', phase: 'evaluate', name: 'accuracy', value: 0.65 },
  ],
  refusals: [],
  ...over,
});

test('export: a row per round and site, all sites last in each round, columns that say what they are', () => {
  const e = studyExport(detail());
  assert.deepEqual(e.rows.map((r) => [r.round, r.site]), [[0, 'kem, mumbai'], [0, 'osaka'], [0, null], [1, 'osaka'], [1, null]]);
  assert.deepEqual(Object.keys(e.columns), ['round', 'site', 'train_loss', 'test_accuracy']);
  assert.match(e.columns['test_accuracy']!, /global model after this round on the site's own test split/);
  assert.match(e.columns['site']!, /empty = all sites together/);
  // A site name with a comma is quoted; a metric a row lacks is an empty field.
  assert.equal(exportCsv(e), 'round,site,train_loss,test_accuracy\n0,"kem, mumbai",,0.6\n0,osaka,,0.5\n0,,,0.55\n1,osaka,0.7,0.65\n1,,0.69,\n');
});

class Sink extends Writable {
  text = '';
  rows = 40;
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    this.text += chunk.toString();
    done();
  }
}

test('status --watch redraws in place on a terminal, and prints a line per change elsewhere', () => {
  const tty = new Sink();
  const v = new StatusView(tty, true);
  v.progress('line one\nline two', 'x');
  const first = tty.text;
  v.progress('line one\nline three', 'y');
  const drawn = first.split('\n').length - 1;
  assert.ok(tty.text.slice(first.length).startsWith(`\x1b[${drawn}F\x1b[J`), 'the second drawing erases the first');
  assert.match(tty.text, /line three/);

  const file = new Sink();
  const f = new StatusView(file, false);
  const s = detail();
  f.progress('full', progressLine(s));
  f.progress('full', progressLine(s));
  f.progress('full', progressLine({ ...s, openRound: { ...s.openRound!, received: 2 } }));
  f.show('the final status');
  assert.deepEqual(file.text.trim().split('\n'), [
    's-1 · running · round 1/2 · round 2 (fit) open, 1/2 sites reported',
    's-1 · running · round 1/2 · round 2 (fit) open, 2/2 sites reported',
    'the final status',
  ]);
  assert.doesNotMatch(file.text, /\x1b/, 'no terminal codes in a file');
});

test('status names each site that cannot run its task, with its code and message, in the open round and in the history', () => {
  const s = detail({
    openRound: { round: 2, kind: 'fit', deadlineAt: null, received: 1, expected: 2, failed: 1, refused: 0 },
    taskErrors: [{ round: 2, site: 'osaka', taskId: 's-1.r2.b', code: 'bad_data', message: 'cohort.csv: line 7, column 2: unterminated quoted field', at: 1 }],
  });
  const text = renderStudy(s);
  assert.match(text, /^open: round 2 \(fit\), 1\/2 sites reported, 1 failed$/m);
  assert.match(text, /^  osaka: cannot run its task \(bad_data\): cohort\.csv: line 7, column 2: unterminated quoted field$/m);
  assert.match(text, /^task errors \(the site could not run its task\):\n  round 2 osaka \(bad_data\): cohort\.csv/m);
  assert.equal(progressLine(s), 's-1 · running · round 1/2 · round 2 (fit) open, 1/2 sites reported, 1 failed · 1 task error(s), latest osaka: bad_data');
  // Without errors nothing changes (and a coordinator that predates task errors is read the same).
  assert.doesNotMatch(renderStudy(detail()), /task error|cannot run|failed/);
});
