/**
 * Model versions and updates as the coordinator and governance read them from the blob store (store.blobs): a
 * safetensors header from a blob's first bytes, which is what the study detail, the model card and the result
 * checks need (no value decoded, whatever the model's size).
 */
import type { BlobStore } from './blob-store.js';
import { headerFrom, type SafetensorsHeader } from '../../protocol/safetensors.js';

/** The header of the safetensors blob `digest` of `size` bytes, reading only its first bytes. */
export function blobHeader(blobs: BlobStore, digest: string, size: number): Promise<SafetensorsHeader> {
  return headerFrom((s, e) => blobs.read(digest, s, e), size);
}
