/** What a blob's digest and an upload's id may be: they become file names and keys, so nothing else gets through. */

const DIGEST = /^[0-9a-f]{64}$/;
const PARTIAL_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** A sha256 in lowercase hex, or an error naming the field. */
export function checkDigest(digest: string): string {
  if (!DIGEST.test(digest)) throw new Error(`a blob digest is a sha256 in lowercase hex (64 characters 0-9a-f), not ${JSON.stringify(digest.slice(0, 80))}`);
  return digest;
}

export function checkPartialId(id: string): string {
  if (!PARTIAL_ID.test(id)) throw new Error(`an upload id is 1 to 128 characters A-Z a-z 0-9 _ -, not ${JSON.stringify(id.slice(0, 80))}`);
  return id;
}

/** `sha256/ab/<digest>`: a directory per first byte keeps any one directory small. */
export const blobPath = (digest: string) => `sha256/${digest.slice(0, 2)}/${digest}`;
