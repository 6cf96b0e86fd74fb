/**
 * Model versions and updates as the coordinator and governance read them from the blob store (store.blobs): a safetensors
 * header from a blob's first bytes (what the study detail, the model card and the result checks need, no value
 * decoded), and the whole decoded model where a model is known to be small enough (built-in families, tests).
 */
import type { BlobStore } from './blob-store.js';
import { decodeSafetensors, readSafetensorsHeaderOf, safetensorsHeaderBytes, type SafetensorsHeader } from '../../protocol/safetensors.js';
import type { Weights } from '../../protocol/tensors.js';

/** The header of the safetensors blob `digest` of `size` bytes, reading only its first bytes. */
export function blobHeader(blobs: BlobStore, digest: string, size: number): Promise<SafetensorsHeader> {
  return headerFrom((s, e) => blobs.read(digest, s, e), size);
}

/** The header of `size` bytes of safetensors that `read(start, end)` gives: the first 8 say how many more it takes. */
export async function headerFrom(read: (start: number, end: number) => Promise<Uint8Array>, size: number): Promise<SafetensorsHeader> {
  const first = await read(0, 8);
  const need = Math.min(safetensorsHeaderBytes(first), size);
  return readSafetensorsHeaderOf(need > 8 ? await read(0, need) : first, size);
}

/** Every tensor of the blob, decoded (the whole blob in memory: for models known to be small). */
export async function blobWeights(blobs: BlobStore, digest: string): Promise<Weights> {
  return decodeSafetensors(await blobs.readAll(digest)).weights;
}
