import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskMessage } from '../protocol/api.js';
import { RESULT_META_KEY } from '../protocol/api.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { layoutOf, mapWeights, narrowForTransport, tensor, type Weights } from '../protocol/tensors.js';
import { RELEASE_SLICE_BYTES, allF32, fileHeader, inMemoryReason, writeReleaseFile } from './release-file.js';
import { keepReleaseFile, releaseLog, releaseStagingFile, releasedFor, tensorDigest } from './release.js';
import { SiteState } from './state.js';

const withDir = (fn: (dir: string) => void) => () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-release-file-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

// A tensor over one slice, so the finiteness check and the copy cross slice boundaries.
const big = RELEASE_SLICE_BYTES / 4 + 12345;
function trained(): Weights {
  const a = new Float32Array(big);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i) * 0.01;
  return mapWeights(['z.weight', 'a.bias'], (k) => (k === 'a.bias' ? tensor([3], new Float32Array([1, -2, 3.5])) : tensor([big], a)));
}
const meta = { [RESULT_META_KEY]: JSON.stringify({ taskId: 's1.r1.site-a', numExamples: 7, trainMetrics: { loss: 0.25 }, durationMs: 12 }) };

test('the file release is byte for byte what the in-memory path encodes, and its digest is the tensors\' digest', withDir((dir) => {
  const w = trained();
  // The trainer's output as a trainer may write it: its own metadata, its own (longer) header.
  const output = join(dir, 'output.safetensors');
  writeFileSync(output, encodeSafetensors(w, { format: 'pt', note: 'x'.repeat(100) }));
  const dest = join(dir, 'release.body');
  const r = writeReleaseFile(output, layoutOf(w), meta, dest);
  const inMemory = encodeSafetensors(narrowForTransport(w, undefined), meta);
  assert.ok(Buffer.from(readFileSync(dest)).equals(Buffer.from(inMemory)), 'identical bytes');
  assert.equal(r.size, inMemory.length);
  assert.equal(r.digest, tensorDigest(inMemory));
  assert.equal(statSync(dest).mode & 0o777, 0o600);
}));

test('a wrong layout or a non-finite value in the output is refused with the tensor named', withDir((dir) => {
  const w = trained();
  const output = join(dir, 'output.safetensors');
  const nan = new Float32Array(w['z.weight']!.data);
  nan[RESULT_SLICE_INDEX] = Number.NaN;
  writeFileSync(output, encodeSafetensors({ ...w, 'z.weight': tensor([big], nan) }));
  assert.throws(() => writeReleaseFile(output, layoutOf(w), meta, join(dir, 'a')), new RegExp(`output\\.safetensors: tensor "z\\.weight" has a non-finite value \\(NaN\\) at index ${RESULT_SLICE_INDEX}$`));
  writeFileSync(output, encodeSafetensors({ 'z.weight': w['z.weight']! }));
  assert.throws(() => writeReleaseFile(output, layoutOf(w), meta, join(dir, 'b')), /output\.safetensors does not match the model: missing tensor "a\.bias"/);
  assert.equal(existsSync(join(dir, 'b')), false, 'a wrong layout is refused before anything is written');
  writeFileSync(output, encodeSafetensors({ ...w, 'a.bias': tensor([3], new Float32Array(3), 'F16') }));
  assert.throws(() => writeReleaseFile(output, layoutOf(w), meta, join(dir, 'c')), /does not match the model: .*a\.bias/);
  writeFileSync(output, 'not safetensors');
  assert.throws(() => writeReleaseFile(output, layoutOf(w), meta, join(dir, 'd')), /output\.safetensors is not valid safetensors/);
}));
// In the second slice: the index reported is the tensor's, not the slice's.
const RESULT_SLICE_INDEX = RELEASE_SLICE_BYTES / 4 + 7;

const task = (over: Partial<TaskMessage> = {}): TaskMessage => ({
  taskId: 's1.r1.site-a', studyId: 's1', round: 1, kind: 'fit', modelVersionId: 's1.v0', dataset: 'd', model: { kind: 'custom', name: 'net' },
  fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, strategy: 'FedAvg', seed: 1, deadlineAt: 0, ...over,
});

test('only a plain fit takes the file path; every other study says why it keeps the in-memory one', () => {
  assert.equal(inMemoryReason(task()), undefined);
  assert.equal(inMemoryReason(task({ tensorRules: { local: [], skip: [] } })), undefined);
  assert.match(inMemoryReason(task({ kind: 'evaluate' }))!, /not a fit task/);
  assert.match(inMemoryReason(task({ privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 }, rounds: 1, clientsPerRound: 1, secagg: false } }))!, /DP or SecAgg\+/);
  assert.match(inMemoryReason(task({ updateDtype: 'BF16' }))!, /travels as BF16/);
  assert.match(inMemoryReason(task({ tensorRules: { local: ['bn.mean'], skip: [] } }))!, /keeps or skips tensors/);
  assert.equal(inMemoryReason(task({ modelInline: '' })), undefined, 'a small model that came inline is written to a file');
  assert.equal(allF32({ a: { dtype: 'F32', shape: [1] } }), true);
  assert.equal(allF32({ a: { dtype: 'F32', shape: [1] }, b: { dtype: 'BF16', shape: [1] } }), false);
});

test('a file release is kept by rename and queued by hard link: one inode, listed by size and path, never read whole', withDir((dir) => {
  const state = new SiteState(join(dir, 'state'));
  const w = trained();
  const output = join(dir, 'output.safetensors');
  writeFileSync(output, encodeSafetensors(w));
  const t = task();
  const staging = releaseStagingFile(state, t);
  const { digest, size } = writeReleaseFile(output, layoutOf(w), meta, staging);
  const p = { taskId: t.taskId, studyId: t.studyId, contentType: 'application/octet-stream' as const, commit: [] };
  const kept = keepReleaseFile(state, t, p, staging, digest);
  state.savePendingFile(p, kept);
  assert.equal(existsSync(staging), false);
  const [q] = state.pending();
  assert.equal(q!.size, size);
  assert.equal(statSync(q!.bodyFile).ino, statSync(kept).ino, 'the queued body is the kept release, not a copy');
  assert.deepEqual(releaseLog(state, 's1').map((l) => l.digest), [digest]);
  assert.equal(fileHeader(q!.bodyFile).metadata[RESULT_META_KEY], meta[RESULT_META_KEY]);
  // Cleared after upload, the release stays for a coordinator that asks for the round again.
  state.clearPending(t.taskId);
  assert.equal(tensorDigest(releasedFor(state, t)!.body), digest);
}));
