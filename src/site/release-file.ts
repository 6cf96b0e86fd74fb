/**
 * The plain fit release, file to file (issue 11: a 1 GB model trains at a site whose agent holds a few MB of it).
 * When a study asks nothing of the release but the trained tensors (no client-level DP, no SecAgg+, no transport
 * dtype, no local or skipped tensors), the agent never needs the model in memory: the downloaded global model is the
 * trainer's input file, and the trainer's output is checked (layout from its header, values finite) and written as the
 * release a slice at a time, with the result's metadata in its header and the digest hashed on the way. The bytes are
 * those encodeSafetensors would write for the same tensors and metadata (the in-memory path), so the coordinator, the
 * release log and a resubmission see no difference. Any other study keeps the in-memory path (agent.ts releaseBody).
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { encodeSafetensorsHeader, headerLayout, readSafetensorsHeaderOf, safetensorsHeaderBytes, SafetensorsError, type SafetensorsHeader } from '../protocol/safetensors.js';
import { layoutDifference, type WeightsLayout } from '../protocol/tensors.js';
import { indexOfNonFinite } from '../protocol/finite.js';
import type { TaskMessage } from '../protocol/api.js';

/** Bytes read, checked, hashed and written at a time: what the release costs the agent's memory. */
export const RELEASE_SLICE_BYTES = 4 * 1024 * 1024;

/** Why a task takes the in-memory path (undefined: it takes the file path). */
export function inMemoryReason(task: TaskMessage): string | undefined {
  if (task.kind !== 'fit') return 'not a fit task';
  if (task.privacy) return 'the study applies DP or SecAgg+ to the release';
  if (task.updateDtype) return `the update travels as ${task.updateDtype}`;
  if (task.tensorRules && (task.tensorRules.local.length > 0 || task.tensorRules.skip.length > 0)) return 'the study keeps or skips tensors';
  return undefined;
}

/** The header of a safetensors file, read from its first bytes only. Throws SafetensorsError when malformed. */
export function fileHeader(file: string, maxBytes?: number): SafetensorsHeader {
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  try {
    const first = Buffer.alloc(8);
    readFully(fd, first, 0);
    const need = Math.min(safetensorsHeaderBytes(first), size);
    const prefix = need > 8 ? Buffer.alloc(need) : first;
    if (need > 8) readFully(fd, prefix, 0);
    return readSafetensorsHeaderOf(prefix, size, maxBytes !== undefined ? { maxBytes } : {});
  } finally {
    closeSync(fd);
  }
}

/** True when every tensor is F32: the file path's digest and finiteness check read the file's bytes as float32. */
export function allF32(layout: WeightsLayout): boolean {
  return Object.values(layout).every((t) => t.dtype === 'F32');
}

/**
 * Writes the release of the trainer's `output` to `dest` (a new file, fsynced): the header encodeSafetensors would
 * write for `layout`'s tensors sorted by name with `metadata`, then each tensor's bytes, checked finite a slice at a
 * time. Returns the release's tensor digest (release.ts weightsDigest) and size. A wrong layout or a non-finite value
 * throws an Error whose message says which (the caller reports it as the trainer's output error); dest is then
 * incomplete and the caller removes it.
 */
export function writeReleaseFile(output: string, layout: WeightsLayout, metadata: Record<string, string>, dest: string): { digest: string; size: number } {
  let h: SafetensorsHeader;
  try {
    h = fileHeader(output, undefined);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new Error(`output.safetensors is not valid safetensors: ${e.message}`);
    throw e;
  }
  const diff = layoutDifference(headerLayout(h), layout);
  if (diff) throw new Error(`output.safetensors does not match the model: ${diff}`);
  const names = Object.keys(layout).sort();
  const byName = new Map(h.tensors.map((t) => [t.name, t]));
  const head = encodeSafetensorsHeader(names.map((name) => ({ name, dtype: layout[name]!.dtype, shape: layout[name]!.shape })), metadata);
  const digest = createHash('sha256');
  // One aligned slice buffer for every tensor: its Float32Array view reads values without a copy.
  const slice = new Uint8Array(new ArrayBuffer(RELEASE_SLICE_BYTES));
  const values = new Float32Array(slice.buffer);
  const inFd = openSync(output, 'r');
  const outFd = openSync(dest, 'wx', 0o600);
  try {
    writeFully(outFd, head.bytes);
    for (const name of names) {
      const e = byName.get(name)!;
      digest.update(name).update('\u0000').update(JSON.stringify(layout[name]!.shape));
      for (let at = e.begin; at < e.end;) {
        const n = Math.min(RELEASE_SLICE_BYTES, e.end - at);
        const chunk = slice.subarray(0, n);
        readFully(inFd, chunk, h.dataStart + at);
        const bad = indexOfNonFinite(values.subarray(0, n / 4));
        if (bad >= 0) throw new Error(`output.safetensors: tensor "${name}" has a non-finite value (${values[bad]}) at index ${(at - e.begin) / 4 + bad}`);
        digest.update(chunk);
        writeFully(outFd, chunk);
        at += n;
      }
    }
    fsyncSync(outFd);
  } finally {
    closeSync(outFd);
    closeSync(inFd);
  }
  return { digest: digest.digest('hex'), size: head.bytes.length + head.dataBytes };
}

function readFully(fd: number, into: Uint8Array, position: number): void {
  for (let got = 0; got < into.length;) {
    const n = readSync(fd, into, got, into.length - got, position + got);
    if (n === 0) throw new Error(`the file ended at ${position + got} bytes, short of the ${position + into.length} its header promised`);
    got += n;
  }
}

function writeFully(fd: number, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at, bytes.length - at);
}
